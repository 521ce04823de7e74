"""``winnow serve`` with a tiny vision-language model: chat requests carry images as
``image_url`` content parts (answered, streamed, Best-of-N with a reward that reads the
image), and winnow's own openai backend samples a prompts file with images from it, getting
what the transformers backend gets from the model directly."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import openai
import pytest
from helpers import flags, read_rows, write_jsonl
from serving import serve_in_thread
from tiny_vlm import build_vlm, tiny_image

from winnow.cli import main
from winnow.config import ImagesConfig, ScoreConfig, ServeConfig
from winnow.generate.contract import Sampling
from winnow.prompts import load_prompts
from winnow.serve.main import build_app

pytestmark = pytest.mark.usefixtures("one_thread")

REWARD = """
import numpy as np


def dark(prompts, completions, images, **kw):
    \"\"\"How dark the row's image is, plus a tenth per character: the longest sample wins.\"\"\"
    return [1 - np.asarray(row[0].convert("L")).mean() / 255 + len(c) / 10 for row, c in zip(images, completions)]
"""


def url_of(seed: int) -> str:
    return "data:image/png;base64," + base64.b64encode(tiny_image(seed)).decode()


def chat(seed: int) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url_of(seed)}}, {"type": "text", "text": "describe this"}]
    return [{"role": "user", "content": parts}]


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return build_vlm(tmp_path_factory.mktemp("vlm"), "gemma3")


MAX_IMAGE_BYTES = 5000
"""``served``'s ``--max-image-bytes``: above the tiny images (about 1.5 KB), below a 60x60 one."""


@pytest.fixture(scope="module")
def served(vlm):
    """(root URL, app) of the tiny VLM, plain sampling, images of at most ``MAX_IMAGE_BYTES``."""
    config = ServeConfig(model=str(vlm), served_model_name="tiny-vlm", device="cpu", max_body_bytes=200_000)
    app = build_app(config, images=ImagesConfig(max_bytes=MAX_IMAGE_BYTES))
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def bon(vlm, tmp_path_factory):
    """(root URL, app) of the tiny VLM with Best-of-N over a reward that reads the image."""
    folder = tmp_path_factory.mktemp("reward")
    (folder / "vision_reward.py").write_text(REWARD)
    config = ServeConfig(model=str(vlm), served_model_name="tiny-vlm", device="cpu", max_body_bytes=200_000)
    app = build_app(config, ScoreConfig(reward_fn=f"{folder}/vision_reward.py:dark"))
    with serve_in_thread(app) as url:
        yield url, app


def api(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def test_openai_backend_against_winnow_serve_gets_the_local_greedy_rows(served, tmp_path):
    url, app = served
    (tmp_path / "img0.png").write_bytes(tiny_image(0))
    rows = [
        {"id": "trl", "messages": [{"role": "user", "content": [{"type": "image"}]}], "images": ["img0.png"]},
        {"id": "openai", "messages": chat(1)},
    ]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    run = tmp_path / "run"
    argv = ["generate", *flags(prompts=prompts, run_dir=run, backend="openai", base_url=f"{url}/v1")]
    assert main([*argv, *flags(model="tiny-vlm", n=2, max_new_tokens=6, temperature=0)]) == 0
    got = {(r["prompt_id"], r["sample_index"]): r["text"] for r in read_rows(run / "generate/shard-m0-00000.jsonl")}
    greedy = Sampling(n=2, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=6)
    local = app.state.backend.generate(load_prompts(prompts), greedy, seed=0)
    assert got == {(c.prompt_id, c.sample_index): c.text for c in local}
    assert len(list((run / "images").iterdir())) == 2  # stored by the client's run dir, as with any backend


def test_chat_with_an_image_answers_and_streams_the_same_text(served):
    url, app = served
    client = api(url)
    whole = client.chat.completions.create(model="tiny-vlm", messages=chat(2), max_tokens=6, temperature=0)
    stream = client.chat.completions.create(
        model="tiny-vlm", messages=chat(2), max_tokens=6, temperature=0, stream=True
    )
    deltas = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert "".join(deltas) == whole.choices[0].message.content
    assert len(deltas) > 1  # token by token, as generate() samples: not one piece at the end
    other = client.chat.completions.create(model="tiny-vlm", messages=chat(3), max_tokens=6, temperature=0)
    assert whole.usage.prompt_tokens == other.usage.prompt_tokens  # same size of image: same tokens


def test_best_of_n_with_an_image_keeps_the_best_by_a_reward_that_reads_it(bon):
    url, app = bon
    body = {"model": "tiny-vlm", "messages": chat(4), "max_tokens": 8, "temperature": 1.0, "seed": 5, "best_of": 4}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
    [choice] = answer["choices"]
    from winnow.prompts import chat_with_images

    prompt = chat_with_images(chat(4), id="p")
    sampling = Sampling(n=4, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8)
    grey = np.asarray(prompt.images[0].pil().convert("L")).mean() / 255
    texts = [c.text for c in app.state.backend.generate([prompt], sampling, seed=5)]
    assert choice["message"]["content"] in texts
    assert choice["reward"] == pytest.approx(1 - grey + max(len(t) for t in texts) / 10)


def test_a_bad_image_part_is_a_400_naming_it(served):
    url, _ = served
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    body = {"model": "tiny-vlm", "messages": [{"role": "user", "content": parts}], "max_tokens": 4}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "messages"
    assert error["message"].startswith("field 'messages[0].content[1]': not a readable image (")
    remote = {"model": "tiny-vlm", "messages": chat(0), "max_tokens": 4}
    remote["messages"][0]["content"][0]["image_url"]["url"] = "https://example.com/a.png"
    reply = httpx.post(f"{url}/v1/chat/completions", content=json.dumps(remote), timeout=60)
    assert reply.json()["error"]["message"] == (
        "field 'messages[0].content[0]': only data: URLs of base64 images are accepted, got 'https://example.com/a.png'"
    )


def test_an_image_over_max_image_bytes_is_a_400_naming_its_part(served):
    """The body (about 14 KB) is within ``max_body_bytes``; the image (about 10 KB) is over
    the server's ``--max-image-bytes``: refused before it is decoded, naming its part."""
    url, _ = served
    big = tiny_image(0, size=(60, 60))
    assert len(tiny_image(2)) < MAX_IMAGE_BYTES < len(big)
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url_of(0)}}]
    parts.append({"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(big).decode()}})
    body = {"model": "tiny-vlm", "messages": [{"role": "user", "content": parts}], "max_tokens": 4}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400
    assert reply.json()["error"] == {
        "message": f"field 'messages[0].content[2]': image larger than the limit of {MAX_IMAGE_BYTES} bytes",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }
    body["messages"][0]["content"] = parts[:2]  # the small image alone is answered
    assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 200
