"""Prompts with images: both input forms stored in TRL's form, bad images refused in one line
before any work, and a vision-language run end to end (generate with images, a reward that
reads them, select) that stores each image once however many samples."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import fails, flags, read_rows, start_held, tree_digest, wait_for, write_jsonl
from tiny_vlm import build_vlm, tiny_image

from winnow import images
from winnow.cli import main
from winnow.errors import WinnowError
from winnow.prompts import load_prompts

pytestmark = pytest.mark.usefixtures("one_thread")

ASK = {"type": "text", "text": "describe this"}
REWARD = '''
import numpy as np


def brightness(prompts, completions, images, **kw):
    """The first image's mean grey level in [0, 1], plus a thousandth per character."""
    return [np.asarray(row[0].convert("L")).mean() / 255 + len(c) / 1000 for row, c in zip(images, completions, strict=True)]
'''


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def with_images(folder: Path, *seeds: int) -> None:
    for s in seeds:
        (folder / f"img{s}.png").write_bytes(tiny_image(s))


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> Path:
    return build_vlm(tmp_path_factory.mktemp("vlm"), "llava")


def test_both_forms_are_stored_in_trl_form(tmp_path):
    with_images(tmp_path, 0)
    trl = {"id": "trl", "messages": [{"role": "user", "content": [{"type": "image"}, ASK]}], "images": ["img0.png"]}
    part = {"type": "image_url", "image_url": {"url": data_url(tiny_image(0))}}
    openai = {"id": "openai", "messages": [{"role": "user", "content": [part, ASK]}]}
    text = {"id": "text", "prompt": "describe this", "images": ["img0.png"]}
    plain = {"id": "plain", "prompt": "no image here"}
    got = [p.to_row() for p in load_prompts(write_jsonl(tmp_path / "p.jsonl", [trl, openai, text, plain]))]
    stored = [f"images/{sha(tiny_image(0))}.png"]
    message = [{"role": "user", "content": [{"type": "image"}, ASK]}]
    assert got == [
        {"id": "trl", "messages": message, "images": stored},
        {"id": "openai", "messages": message, "images": stored},
        {"id": "text", "messages": message, "images": stored},  # TRL's place for them: before the text
        {"id": "plain", "prompt": "no image here"},  # a text row as ever: same row, same hash
    ]


def test_image_format_names_the_extension(tmp_path):
    jpeg = tiny_image(3, fmt="JPEG")
    (tmp_path / "a.jpeg.png").write_bytes(jpeg)  # the name lies; the bytes decide
    [prompt] = load_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "images": ["a.jpeg.png"]}]))
    assert prompt.images[0].path == f"images/{sha(jpeg)}.jpg"
    assert prompt.images[0].data_url().startswith("data:image/jpeg;base64,")


def bad_rows(tmp_path: Path) -> list[tuple[dict, str]]:
    """(row, the error after ``prompts.jsonl:2: ``) of each kind of bad image."""
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path.parent / "outside.png").write_bytes(tiny_image(0))
    (tmp_path / "huge.png").write_bytes(tiny_image(0, size=(300, 300)))
    one = [{"role": "user", "content": [{"type": "image"}, ASK]}]
    url_part = {"type": "image_url", "image_url": {"url": data_url(tiny_image(1))}}
    return [
        (
            {"messages": one, "images": ["notes.png"]},
            "field 'images[0]': not a readable image (cannot identify image file <_io.BytesIO object at",
        ),
        (
            {"messages": one, "images": ["../outside.png"]},
            f"field 'images[0]': image path '../outside.png' is outside the prompts file's folder {tmp_path} "
            "(pass --image-paths-outside, or images: {paths_outside: true} in YAML, to allow it)",
        ),
        (
            {"messages": one, "images": ["huge.png"]},
            f"field 'images[0]': image of {(tmp_path / 'huge.png').stat().st_size} bytes, "
            "larger than the limit of 100000",
        ),
        (
            {"messages": one, "images": ["missing.png"]},
            f"field 'images[0]': cannot read image {tmp_path / 'missing.png'}: No such file or directory",
        ),
        (
            {"messages": one, "images": ["https://example.com/a.png"]},
            "field 'images[0]': only paths and data: URLs are accepted (no downloads), got 'https://example.com/a.png'",
        ),
        (
            {"messages": one, "images": ["img0.png", "img0.png"]},
            "field 'images': 2 images but 1 {'type': 'image'} parts",
        ),
        (
            {"messages": [{"role": "user", "content": [url_part, {"type": "image"}]}], "images": ["img0.png"]},
            "field 'images': the row also has image_url parts; give images one way, not both",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}],
                    }
                ]
            },
            "field 'messages[0].content[0]': the data: URL is not valid base64",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "field 'messages[0].content[0]': expected a content part {'type': 'text', 'text': str}, "
            "{'type': 'image'} or {'type': 'image_url', 'image_url': {'url': ...}}",
        ),
    ]


@pytest.mark.parametrize("case", range(9))
def test_bad_image_is_one_line_before_any_work(tmp_path, vlm, capsys, case):
    prompts = tmp_path / "in"
    prompts.mkdir()
    with_images(prompts, 0)
    row, message = bad_rows(prompts)[case]
    path = write_jsonl(prompts / "prompts.jsonl", [{"prompt": "fine"}, row])
    argv = ["generate", *flags(prompts=path, run_dir=tmp_path / "run", model=vlm, n=2, device="cpu")]
    err = fails([*argv, "--max-image-bytes", "100000"], capsys, error_last=True, one_error=True)
    assert f"winnow: error: {path}:2: {message}" in err
    assert not (tmp_path / "run").exists()  # refused while reading the prompts: nothing made


def test_paths_outside_are_read_when_allowed(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "outside.png").write_bytes(tiny_image(0))
    path = write_jsonl(tmp_path / "in/p.jsonl", [{"prompt": "x", "images": ["../outside.png"]}])
    [prompt] = load_prompts(path, image_paths_outside=True)
    assert prompt.images[0].data == tiny_image(0)


def run_prompts(folder: Path) -> Path:
    """Three prompts, two distinct images: p0 and p2 share img0 (TRL's form and OpenAI's)."""
    with_images(folder, 0, 1)
    one = [{"role": "user", "content": [{"type": "image"}, ASK]}]
    part = {"type": "image_url", "image_url": {"url": data_url(tiny_image(0))}}
    return write_jsonl(
        folder / "prompts.jsonl",
        [
            {"id": "p0", "messages": one, "images": ["img0.png"]},
            {"id": "p1", "prompt": "what is it", "images": ["img1.png"]},
            {"id": "p2", "messages": [{"role": "user", "content": [part, ASK]}]},
        ],
    )


def test_vision_language_run_end_to_end(tmp_path, vlm):
    prompts = run_prompts(tmp_path)
    (tmp_path / "vision_reward.py").write_text(REWARD)
    run = tmp_path / "run"
    common = flags(run_dir=run)
    n = 4
    assert main(["generate", *common, *flags(prompts=prompts, model=vlm, n=n, max_new_tokens=6, device="cpu")]) == 0
    assert main(["score", *common, *flags(reward_fn=f"{tmp_path}/vision_reward.py:brightness")]) == 0
    assert main(["select", *common, *flags(strategy="top_per_prompt")]) == 0

    # each distinct image once, byte for byte, however many prompts and samples hold it
    stored = sorted(p.relative_to(run).as_posix() for p in (run / "images").iterdir())
    assert stored == sorted(f"images/{sha(tiny_image(s))}.png" for s in (0, 1))
    assert sum(p.stat().st_size for p in (run / "images").iterdir()) == len(tiny_image(0)) + len(tiny_image(1))
    assert not any(b"base64" in p.read_bytes() for p in run.rglob("*.jsonl"))  # never inlined in a row
    manifest = json.loads((run / "generate/manifest.json").read_text())
    assert manifest["images"] == {"files": 2, "bytes": len(tiny_image(0)) + len(tiny_image(1)), "prompts": 3}

    completions = {
        (r["prompt_id"], r["sample_index"]): r["text"] for r in read_rows(run / "generate/shard-m0-00000.jsonl")
    }
    assert len(completions) == 3 * n
    grey = {s: _grey(tiny_image(s)) for s in (0, 1)}
    expected = [
        [grey[s] + len(completions[(p, j)]) / 1000 for j in range(n)] for p, s in (("p0", 0), ("p1", 1), ("p2", 0))
    ]
    np.testing.assert_allclose(np.load(run / "score/rewards.npy"), expected, rtol=1e-12)

    selected = read_rows(run / "select/selected.jsonl")
    assert [r["prompt_id"] for r in selected] == ["p0", "p1", "p2"]
    for r, s in zip(selected, (0, 1, 0), strict=True):
        assert r["images"] == [f"images/{sha(tiny_image(s))}.png"]
        assert (run / r["images"][0]).read_bytes() == tiny_image(s)
        parts = [part for m in r["prompt"] for part in m["content"]]
        assert parts.count({"type": "image"}) == 1
    prompts_rows = read_rows(run / "generate/prompts.jsonl")
    assert [r["images"] for r in prompts_rows] == [r["images"] for r in selected]


def _grey(data: bytes) -> float:
    """Mean grey level in [0, 1], computed from the file's own bytes."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB").convert("L")
    return float(np.asarray(img, dtype=np.float64).mean() / 255)


def test_image_hashes_enter_the_generate_config(tmp_path, vlm, capsys):
    prompts = run_prompts(tmp_path)
    run = tmp_path / "run"
    argv = ["generate", *flags(prompts=prompts, run_dir=run, model=vlm, n=1, max_new_tokens=2, device="cpu")]
    assert main(argv) == 0
    before = json.loads((run / "generate/config.json").read_text())["prompts_hash"]
    (tmp_path / "img1.png").write_bytes(tiny_image(7))  # same prompt text, another picture
    err = fails(argv, capsys, "prompts_hash", one_error=True)
    assert before in err


def test_stored_image_is_checked_against_its_name(tmp_path, vlm, capsys):
    prompts = run_prompts(tmp_path)
    run = tmp_path / "run"
    assert main(["generate", *flags(prompts=prompts, run_dir=run, model=vlm, n=1, max_new_tokens=2, device="cpu")]) == 0
    stored = run / f"images/{sha(tiny_image(1))}.png"
    stored.write_bytes(tiny_image(2))
    damaged = f"{stored}: damaged (its sha256 is not the one in its name); rerun `winnow generate`"
    fails(["score", *flags(run_dir=run, reward_fn="length")], capsys, f"winnow: error: {damaged}", one_error=True)
    assert main(["verify", str(run)]) == 2
    assert f"generate  PROBLEM {damaged}" in capsys.readouterr().out
    stored.unlink()
    assert main(["verify", str(run)]) == 2
    assert (
        f"generate  PROBLEM {stored}: cannot read image {stored}: No such file or directory" in capsys.readouterr().out
    )
    # the rerun the message asks for puts the image back, and the run goes on
    assert main(["generate", *flags(prompts=prompts, run_dir=run, model=vlm, n=1, max_new_tokens=2, device="cpu")]) == 0
    assert stored.read_bytes() == tiny_image(1)
    assert main(["verify", str(run)]) == 0


def test_decoded_images_are_shared_per_call():
    a = images.decode(tiny_image(0), name="a")
    b = images.decode(tiny_image(1), name="b")
    rows = images.decoded([(a,), (a, b), ()])
    assert rows[0][0] is rows[1][0] and rows[2] == []
    assert rows[1][1].size == (24, 20) and rows[1][1].mode == "RGB"


def test_killed_vision_run_resumes_to_identical_files(tmp_path, vlm):
    """Killed (SIGKILL) in its third shard and rerun, a run dir with images ends with the same
    files, byte for byte, as one never interrupted: images, shards, rewards, selection."""
    prompts = run_prompts(tmp_path)
    (tmp_path / "vision_reward.py").write_text(REWARD)

    def stages(run: Path) -> list[list[str]]:
        sampling = flags(prompts=prompts, model=vlm, n=3, max_new_tokens=6, shard_size=1, device="cpu")
        return [
            ["generate", *flags(run_dir=run), *sampling],
            ["score", *flags(run_dir=run, reward_fn=f"{tmp_path}/vision_reward.py:brightness")],
            ["select", *flags(run_dir=run, strategy="top_per_prompt")],
        ]

    reference = tmp_path / "reference"
    for argv in stages(reference):
        assert main(argv) == 0
    run = tmp_path / "run"
    proc = start_held(stages(run)[0], after=2, stderr=(tmp_path / "stderr.txt").open("w"))
    shard = run / "generate/shard-m0-00001.jsonl"
    wait_for(shard.exists, 120, shard.name, proc=proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (run / "generate/manifest.json").exists()
    assert len(list((run / "images").iterdir())) == 2  # stored before the first shard
    for argv in stages(run):
        assert main(argv) == 0
    got = {k: v for k, v in tree_digest(run).items() if not k.startswith("generate/.")}  # a kill's temp file
    assert got == tree_digest(reference)


def test_images_for_a_text_model_are_refused_naming_the_prompt(tmp_path, tiny_policy, capsys):
    prompts = run_prompts(tmp_path)
    argv = ["generate", *flags(prompts=prompts, run_dir=tmp_path / "run", model=tiny_policy, n=1, device="cpu")]
    fails(
        argv,
        capsys,
        f"winnow: error: prompt 'p0' has images, but model {tiny_policy} is not a vision-language model "
        "(its config has no vision_config)",
        one_error=True,
    )


def test_a_reward_model_refuses_prompts_with_images(tmp_path, vlm, tiny_reward_model, capsys):
    prompts = run_prompts(tmp_path)
    run = tmp_path / "run"
    assert main(["generate", *flags(prompts=prompts, run_dir=run, model=vlm, n=1, max_new_tokens=2, device="cpu")]) == 0
    err = fails(["score", *flags(run_dir=run, reward_model=tiny_reward_model, device="cpu")], capsys, one_error=True)
    assert err.strip().splitlines()[-1] == (
        f"winnow: error: reward function '{tiny_reward_model}': prompts with images are not supported by a reward "
        f"model ({tiny_reward_model}), which scores text; use a reward function, which gets the images, "
        "or a vision-language judge"
    )


def test_text_parts_reach_a_text_model_as_its_text(tiny_policy):
    from winnow.generate.chat import render
    from winnow.models import load_tokenizer
    from winnow.records import Prompt

    tok = load_tokenizer(tiny_policy)
    parts = [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]
    as_parts = Prompt(id="a", messages=({"role": "user", "content": parts},))
    as_text = Prompt(id="a", messages=({"role": "user", "content": "hello there"},))
    assert render(tok, as_parts, "m") == render(tok, as_text, "m")
    assert as_parts.texts() == ["hello there"]


def test_best_of_n_in_python_with_an_image(vlm):
    """``winnow.best_of_n`` on a chat with an ``image_url`` part: the reward gets the image, and
    the answer is the best of what ``winnow.sample`` draws with the same seed."""
    import winnow

    part = {"type": "image_url", "image_url": {"url": data_url(tiny_image(0))}}
    chat = [[{"role": "user", "content": [part, ASK]}]]
    seen = []

    def brightness(prompts, completions, images, **kw):
        seen.extend(images)
        return [
            np.asarray(row[0].convert("L")).mean() / 255 + len(c) / 1000
            for row, c in zip(images, completions, strict=True)
        ]

    options = dict(model=str(vlm), n=4, max_new_tokens=6, device="cpu")
    [best] = winnow.best_of_n(chat, reward=brightness, **options)
    [texts] = winnow.sample(chat, **options)
    assert best == max(texts, key=len)  # the image is the same for all four: length decides
    assert len(seen) == 4 and all(row[0].size == (24, 20) for row in seen)
    with pytest.raises(WinnowError, match=r"^prompts\[0\]: field 'messages\[0\].content\[0\]': only data: URLs"):
        winnow.sample(
            [[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}]], **options
        )


def test_dry_run_counts_the_images(tmp_path, vlm, capsys):
    prompts = run_prompts(tmp_path)
    argv = ["generate", *flags(prompts=prompts, run_dir=tmp_path / "run", model=vlm, n=2, device="cpu"), "--dry-run"]
    assert main(argv) == 0
    size = len(tiny_image(0)) + len(tiny_image(1))
    assert f"images: 2 distinct ({size:,} bytes) in 3 prompts, stored once" in capsys.readouterr().out.splitlines()
    assert not (tmp_path / "run").exists()


def test_imported_completions_keep_their_prompts_images(tmp_path, capsys):
    """``winnow import`` of completions made elsewhere for prompts with images: the images are
    stored once as generate stores them, and a reward reads them in ``winnow score``."""
    prompts = run_prompts(tmp_path)
    (tmp_path / "vision_reward.py").write_text(REWARD)
    made = write_jsonl(tmp_path / "made.jsonl", [{"prompt_id": p, "text": "abc"} for p in ("p0", "p1", "p2")])
    run = tmp_path / "run"
    assert main(["import", *flags(prompts=prompts, completions=made, run_dir=run)]) == 0
    assert sorted(p.name for p in (run / "images").iterdir()) == sorted(f"{sha(tiny_image(s))}.png" for s in (0, 1))
    assert main(["score", *flags(run_dir=run, reward_fn=f"{tmp_path}/vision_reward.py:brightness")]) == 0
    expected = [[_grey(tiny_image(s)) + 3 / 1000] for s in (0, 1, 0)]
    np.testing.assert_allclose(np.load(run / "score/rewards.npy"), expected, rtol=1e-12)


def test_too_many_pixels_is_refused_before_decoding():
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (8001, 8000)).save(out, format="PNG")  # a few kB of file, 64,008,000 pixels
    with pytest.raises(WinnowError) as e:
        images.decode(out.getvalue(), name="p.jsonl:1: field 'images[0]'")
    assert str(e.value) == "p.jsonl:1: field 'images[0]': image of 8001x8000 pixels, more than 64,000,000"


def test_image_options_are_yaml_keys_of_the_images_section(tmp_path, vlm, capsys):
    """``images.max_bytes`` and ``images.paths_outside`` in a config file do what the flags do,
    and flags win over the file."""
    prompts = tmp_path / "in"
    prompts.mkdir()
    (tmp_path / "outside.png").write_bytes(tiny_image(0))
    (prompts / "huge.png").write_bytes(tiny_image(0, size=(300, 300)))
    one = [{"role": "user", "content": [{"type": "image"}, ASK]}]
    path = write_jsonl(prompts / "p.jsonl", [{"messages": one, "images": ["../outside.png"]}])
    argv = ["generate", *flags(prompts=path, run_dir=tmp_path / "run", model=vlm, n=2, device="cpu"), "--dry-run"]
    outside = tmp_path / "outside.yaml"
    outside.write_text("images:\n  paths_outside: true\n")
    assert main([*argv, "--config", str(outside)]) == 0
    assert "images: 1 distinct" in capsys.readouterr().out
    fails(
        argv,
        capsys,
        "(pass --image-paths-outside, or images: {paths_outside: true} in YAML, to allow it)",
        one_error=True,
    )

    big = write_jsonl(prompts / "big.jsonl", [{"messages": one, "images": ["huge.png"]}])
    small = tmp_path / "small.yaml"
    small.write_text("images:\n  max_bytes: 100000\n")
    size = (prompts / "huge.png").stat().st_size
    argv = ["generate", *flags(prompts=big, run_dir=tmp_path / "run", model=vlm, n=2, device="cpu"), "--dry-run"]
    err = fails([*argv, "--config", str(small)], capsys, one_error=True)
    assert f"winnow: error: {big}:1: field 'images[0]': image of {size} bytes, larger than the limit of 100000" in err
    assert main([*argv, "--config", str(small), "--max-image-bytes", str(size)]) == 0  # the flag wins


@pytest.mark.parametrize(
    ("yaml_text", "argv", "message"),
    [
        ("images:\n  max_bytes: 0\n", [], "winnow: error: images.max_bytes: must be >= 1, got 0"),
        ("", ["--max-image-bytes", "-3"], "winnow: error: images.max_bytes: must be >= 1, got -3"),
        ("images:\n  max_byte: 3\n", [], "field 'max_byte': unknown option for ImagesConfig"),
    ],
)
def test_bad_image_options_are_one_line(tmp_path, capsys, yaml_text, argv, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    base = ["generate", "--config", str(config), *flags(prompts=path, run_dir=tmp_path / "run"), *argv]
    fails(base, capsys, message, one_error=True, error_last=True)
    assert not (tmp_path / "run").exists()


def test_the_image_limit_has_one_default_shown_in_the_help(capsys):
    from winnow.config import ImagesConfig
    from winnow.config.images import MAX_IMAGE_BYTES

    assert images.MAX_IMAGE_BYTES is MAX_IMAGE_BYTES == ImagesConfig().max_bytes == 20 * 1024 * 1024
    for command in ("generate", "run", "bon", "import", "eval", "batch-requests"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert "--max-image-bytes N Largest image a prompt may hold" in shown, command
        assert "(default: 20971520)" in shown and "--image-paths-outside Accept image paths" in shown, command


def test_image_options_leave_the_generate_config_hash_alone(tmp_path, vlm):
    """Other limits that accept the same images sample the same rows: a rerun resumes."""
    prompts = run_prompts(tmp_path)
    run = tmp_path / "run"
    argv = ["generate", *flags(prompts=prompts, run_dir=run, model=vlm, n=1, max_new_tokens=2, device="cpu")]
    assert main([*argv, "--max-image-bytes", "5000"]) == 0
    config = (run / "generate/config.json").read_text()
    assert "max_bytes" not in config and "paths_outside" not in config
    assert main([*argv, "--image-paths-outside"]) == 0  # finished under the same config: nothing to redo
    assert (run / "generate/config.json").read_text() == config


def test_store_links_to_the_shared_copy(tmp_path):
    """A nested run dir's images are hard links to the shared run dir's: one copy on disk,
    written there first; a damaged shared copy is mended, not linked."""
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "images": ["img0.png"]}])
    top, nested = tmp_path / "run", tmp_path / "run/adaptive/step-1"
    (tmp_path / "img0.png").write_bytes(tiny_image(0))
    prompt = load_prompts(tmp_path / "p.jsonl")
    name = prompt[0].images[0].path
    assert images.store(nested, prompt, shared=top) == 1
    assert (top / name).read_bytes() == tiny_image(0)
    assert (nested / name).stat().st_ino == (top / name).stat().st_ino
    assert images.store(nested, prompt, shared=top) == 0  # whole already: nothing written
    (top / name).unlink()
    (top / name).write_bytes(b"damaged")
    (nested / name).unlink()
    assert images.store(nested, prompt, shared=top) == 1
    assert (nested / name).read_bytes() == tiny_image(0) == (top / name).read_bytes()
    assert (nested / name).stat().st_ino == (top / name).stat().st_ino


def test_adaptive_steps_share_one_copy_and_a_copied_run_dir_works(tmp_path, vlm, capsys):
    """Adaptive steps hold hard links to RUN_DIR/images, not copies; the run dir copied to
    another place (links become files) verifies, resumes with nothing to redo, and goes on."""
    prompts = run_prompts(tmp_path)
    run = tmp_path / "run"

    def generate(run_dir: Path) -> list[str]:
        sampling = flags(prompts=prompts, model=vlm, n=2, max_new_tokens=4, device="cpu", run_dir=run_dir)
        steps = flags(adaptive_step=1, stop_when="pass", pass_threshold=1e9, reward_fn="length")
        return ["generate", *sampling, *steps]

    assert main(generate(run)) == 0
    for name in (f"images/{sha(tiny_image(s))}.png" for s in (0, 1)):
        top = (run / name).stat()
        steps = [(run / f"adaptive/step-{s}" / name).stat() for s in (1, 2)]
        assert [st.st_ino for st in steps] == [top.st_ino] * 2 and top.st_nlink == 3
    on_disk = {(p.stat().st_ino, p.stat().st_size) for p in run.rglob("images/*")}
    assert sum(size for _, size in on_disk) == len(tiny_image(0)) + len(tiny_image(1))

    copy = tmp_path / "elsewhere/run"
    shutil.copytree(run, copy)
    shutil.rmtree(run)
    before = tree_digest(copy)
    assert main(["verify", str(copy)]) == 0
    assert main(generate(copy)) == 0
    assert tree_digest(copy) == before
    assert main(["score", *flags(run_dir=copy, reward_fn="length", pass_threshold=1e9)]) == 0
    assert main(["select", *flags(run_dir=copy, strategy="top_per_prompt")]) == 0
    assert main(["verify", str(copy)]) == 0
    capsys.readouterr()


def test_evaluated_models_link_to_the_first_models_images(tmp_path, vlm, capsys):
    """``winnow eval`` with a baseline: the second model's images are hard links to the first's
    (one copy on disk), and each folder verifies on its own."""
    prompts = run_prompts(tmp_path)
    out = tmp_path / "out"
    argv = ["eval", *flags(model=vlm, baseline=vlm, prompts=prompts, run_dir=out, n=2, max_new_tokens=4)]
    assert main([*argv, *flags(device="cpu", reward_fn="length")]) == 0
    for name in (f"images/{sha(tiny_image(s))}.png" for s in (0, 1)):
        first, second = ((out / folder / name).stat() for folder in ("baseline", "model"))
        assert second.st_ino == first.st_ino and first.st_nlink == 2
        assert (out / "model" / name).read_bytes() == (out / "baseline" / name).read_bytes()
    assert main(["verify", str(out)]) == 0
    capsys.readouterr()


def test_later_rounds_link_to_round_one_images(tmp_path, vlm):
    """``run --rounds 2`` with images: round 2's images are hard links to round 1's (one copy
    on disk), and the run dir moved to another place verifies."""
    prompts = run_prompts(tmp_path)
    run = tmp_path / "run"
    argv = ["run", *flags(prompts=prompts, run_dir=run, model=vlm, rounds=2, n=2, max_new_tokens=4, device="cpu")]
    argv += [*flags(reward_fn="length", epochs=1, sft_batch_size=3), "--lora"]
    assert main(argv) == 0
    for name in (f"images/{sha(tiny_image(s))}.png" for s in (0, 1)):
        first, second = ((run / f"round-{r}" / name).stat() for r in (1, 2))
        assert second.st_ino == first.st_ino and first.st_nlink == 2
    moved = tmp_path / "moved"
    run.rename(moved)
    assert main(["verify", str(moved / "round-2")]) == 0
    assert (moved / "round-2" / f"images/{sha(tiny_image(1))}.png").read_bytes() == tiny_image(1)
