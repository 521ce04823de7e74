"""A reward model that reads images (a tiny random ``Gemma3ForSequenceClassification``),
scored through its processor by ``winnow score``: each reward equals the model's own forward
pass on that row alone, and the image, not only the text, moves it."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import fails, flags, read_rows, write_jsonl
from tiny_vlm import build_vision_rm, tiny_image

from winnow.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

ASK = {"type": "text", "text": "describe this"}
ONE = [{"role": "user", "content": [{"type": "image"}, ASK]}]
ANSWERS = ["a cat", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def vision_rm(tmp_path_factory) -> Path:
    return build_vision_rm(tmp_path_factory.mktemp("vision_rm"))


def imported_run(tmp_path: Path) -> Path:
    """A run dir of five prompts x two completions: p0 and p2 hold img0 (TRL's form and
    OpenAI's), p4 asks the same as p0 of img1, p1 is text with img1, p3 has no image."""
    for s in (0, 1):
        (tmp_path / f"img{s}.png").write_bytes(tiny_image(s))
    url = "data:image/png;base64," + base64.b64encode(tiny_image(0)).decode()
    part = {"type": "image_url", "image_url": {"url": url}}
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"id": "p0", "messages": ONE, "images": ["img0.png"]},
            {"id": "p1", "prompt": "what is it", "images": ["img1.png"]},
            {"id": "p2", "messages": [{"role": "user", "content": [part, ASK]}]},
            {"id": "p3", "prompt": "no picture here"},
            {"id": "p4", "messages": ONE, "images": ["img1.png"]},
        ],
    )
    made = [{"prompt_id": p, "text": a} for p in ("p0", "p1", "p2", "p3", "p4") for a in ANSWERS]
    completions = write_jsonl(tmp_path / "made.jsonl", made)
    run = tmp_path / "run"
    assert main(["import", *flags(prompts=prompts, completions=completions, run_dir=run)]) == 0
    return run


def by_hand(folder: Path, run: Path) -> np.ndarray:
    """Each row alone through the model's own forward pass (its pooling, its processor)."""
    import torch
    from PIL import Image
    from transformers import AutoModelForSequenceClassification, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    got = []
    for row in read_rows(run / "generate/prompts.jsonl"):
        content = row.get("messages") or row["prompt"]
        messages = [{"role": "user", "content": content}] if isinstance(content, str) else content
        pictures = [Image.open(io.BytesIO((run / p).read_bytes())).convert("RGB") for p in row.get("images", [])]
        rewards = []
        for answer in ANSWERS:
            text = processor.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
            inputs = processor(
                text=[text], images=[pictures] if pictures else None, add_special_tokens=False, return_tensors="pt"
            )
            with torch.no_grad():
                rewards.append(model(**inputs).logits[0, 0].item())
        got.append(rewards)
    return np.array(got)


def test_scored_through_the_processor_as_each_row_alone(tmp_path, vision_rm):
    run = imported_run(tmp_path)
    assert main(["score", *flags(run_dir=run, reward_model=vision_rm, device="cpu")]) == 0
    rewards = np.load(run / "score/rewards.npy")  # (5 prompts, 2 completions), one batch of 10 rows
    assert rewards.shape == (5, 2)
    np.testing.assert_allclose(rewards, by_hand(vision_rm, run), rtol=0, atol=1e-5)
    np.testing.assert_allclose(rewards[0], rewards[2], rtol=0, atol=1e-6)  # same image, same text
    assert np.all(np.abs(rewards[0] - rewards[4]) > 1e-3)  # same text, another image
    rows = read_rows(run / "score/shard-00000.jsonl")
    assert {r["scored_by"] for r in rows} == {"full"}


def test_batches_and_order_do_not_change_scores(vision_rm):
    from PIL import Image

    from winnow.rewards.vision import VisionClassifierReward

    picture = [Image.open(io.BytesIO(tiny_image(s))).convert("RGB") for s in (0, 1)]
    prompts = [ONE, "plain text", ONE, ONE] * 3
    images = [[picture[0]], [], [picture[1]], [picture[0]]] * 3
    completions = [("word " * (i % 5 + 1)).strip() for i in range(12)]
    one = VisionClassifierReward(vision_rm, name="rm", device="cpu", max_batch_size=1)
    many = VisionClassifierReward(vision_rm, name="rm", device="cpu")
    a = np.array(one(prompts, completions, images=images))
    b = np.array(many(prompts, completions, images=images))
    assert one.stats["batches"] == 12 and many.stats["batches"] < 12
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    order = list(range(12))
    random.Random(0).shuffle(order)
    shuffled = many([prompts[i] for i in order], [completions[i] for i in order], images=[images[i] for i in order])
    np.testing.assert_allclose(shuffled, a[order], rtol=0, atol=1e-5)


def test_prefix_sharing_on_is_refused_in_one_line(tmp_path, vision_rm, capsys):
    run = imported_run(tmp_path)
    argv = ["score", *flags(run_dir=run, reward_model=vision_rm, device="cpu", reward_prefix_sharing="on")]
    err = fails(argv, capsys, one_error=True, error_last=True)
    assert err.strip().splitlines()[-1] == (
        f"winnow: error: reward model {vision_rm} reads images: --reward-prefix-sharing on is not available "
        "for it (every row is scored in full); use auto or off"
    )
