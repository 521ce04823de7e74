"""The Python API reads prompts' images under the ``images`` section's options, as the CLI
does: ``images=`` (an ``ImagesConfig`` or a dict of its fields) on every function that takes
prompts, its defaults the section's own. A larger limit or ``paths_outside`` lets through what
the defaults refuse; a smaller limit refuses, naming the prompt and the field."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from helpers import read_rows, write_jsonl
from tiny_vlm import build_vlm, tiny_image

import winnow
from winnow.config import ImagesConfig
from winnow.errors import WinnowError

pytestmark = pytest.mark.usefixtures("one_thread")

ASK = {"type": "text", "text": "describe this"}
SIZE = len(tiny_image(0))
"""Bytes of the image every test uses (a 24x20 PNG)."""


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> Path:
    return build_vlm(tmp_path_factory.mktemp("vlm"), "llava")


def chat() -> list[list[dict]]:
    url = "data:image/png;base64," + base64.b64encode(tiny_image(0)).decode()
    return [[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, ASK]}]]


def outside(tmp_path: Path) -> Path:
    """A prompts file in ``tmp_path/in`` whose one row names an image beside the folder."""
    (tmp_path / "in").mkdir()
    (tmp_path / "outside.png").write_bytes(tiny_image(0))
    content = [{"type": "image"}, ASK]
    row = {"id": "p0", "messages": [{"role": "user", "content": content}], "images": ["../outside.png"]}
    return write_jsonl(tmp_path / "in/prompts.jsonl", [row])


def grey(prompts, completions, images, **kw):
    """The first image's mean grey level in [0, 1]."""
    return [float(np.asarray(row[0].convert("L")).mean() / 255) for row in images]


def test_best_of_n_and_sample_apply_max_bytes(vlm):
    options = dict(model=str(vlm), n=2, max_new_tokens=4, device="cpu")
    message = f"prompts[0]: field 'messages[0].content[0]': image of {SIZE} bytes, larger than the limit of {SIZE - 1}"
    for call in (winnow.best_of_n, winnow.sample):
        with pytest.raises(WinnowError) as refused:
            call(chat(), images={"max_bytes": SIZE - 1}, **options)
        assert str(refused.value) == message, call
    [best] = winnow.best_of_n(chat(), reward="length", images=ImagesConfig(max_bytes=SIZE), **options)
    [texts] = winnow.sample(chat(), images=ImagesConfig(max_bytes=SIZE), **options)
    assert best == max(texts, key=len)


def test_score_reads_a_rows_image_path_outside_when_allowed(tmp_path, monkeypatch):
    """A row given in memory names its images relative to the working folder, as a prompts
    file's rows do relative to the file's."""
    (tmp_path / "in").mkdir()
    (tmp_path / "outside.png").write_bytes(tiny_image(0))
    monkeypatch.chdir(tmp_path / "in")
    rows = [{"id": "a", "prompt": "x", "images": ["../outside.png"]}]
    with pytest.raises(
        WinnowError, match=r"^prompts\[0\]: field 'images\[0\]': image path '../outside.png' is outside"
    ):
        winnow.score(rows, [["t"]], reward=grey)
    [[got]] = winnow.score(rows, [["t"]], reward=grey, images={"paths_outside": True}).tolist()
    from PIL import Image

    want = np.asarray(Image.open(tmp_path / "outside.png").convert("L")).mean() / 255
    assert got == pytest.approx(want)


def test_generate_stage_reads_a_path_outside_when_allowed(tmp_path, vlm):
    prompts = outside(tmp_path)
    fields = dict(models=[str(vlm)], n=2, max_new_tokens=4, device="cpu")
    with pytest.raises(WinnowError, match=r"prompts.jsonl:1: field 'images\[0\]': image path '../outside.png'"):
        winnow.generate_stage(tmp_path / "refused", prompts, **fields)
    assert not (tmp_path / "refused").exists()
    manifest = winnow.generate_stage(tmp_path / "run", prompts, images={"paths_outside": True}, **fields)
    assert manifest["num_completions"] == 2
    [stored] = (tmp_path / "run/images").iterdir()
    assert stored.read_bytes() == tiny_image(0)
    [row] = read_rows(tmp_path / "run/generate/prompts.jsonl")
    assert row["images"] == [f"images/{stored.name}"]


@pytest.mark.parametrize("call", ["run", "evaluate"])
def test_run_and_evaluate_apply_the_images_options_to_a_prompts_file(tmp_path, call):
    """Refused while the prompts file is read, before any model is named or loaded."""
    prompts = outside(tmp_path)
    options = {"paths_outside": True, "max_bytes": SIZE - 1}
    message = f"prompts.jsonl:1: field 'images[0]': image of {SIZE} bytes, larger than the limit of {SIZE - 1}"
    with pytest.raises(WinnowError) as refused:
        if call == "run":
            winnow.run(tmp_path / "run", prompts, generate={"models": ["nowhere"]}, images=options)
        else:
            winnow.evaluate(tmp_path / "run", prompts, model="nowhere", images=options)
    assert str(refused.value).endswith(message), str(refused.value)
    assert not (tmp_path / "run").exists()


def test_a_bad_images_option_names_the_field():
    with pytest.raises(WinnowError, match=r"max_bytes"):
        winnow.score(["x"], [["y"]], reward="length", images={"max_bytes": 0})
    with pytest.raises(WinnowError, match=r"paths_outsde"):
        winnow.score(["x"], [["y"]], reward="length", images={"paths_outsde": True})
