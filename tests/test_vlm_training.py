"""SFT and DPO of vision-language models on rows with images: the images reach the batch, the
loss is on completion tokens, LoRA on each tiny architecture raises the likelihood of the
trained completions given their images, and a bad image is refused in one line before training."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers import fails, flags, read_rows, write_jsonl
from tiny_vlm import VLM_ARCHS, build_vlm, tiny_image

from winnow import images
from winnow.cli import main
from winnow.config import DpoConfig, TrainConfig
from winnow.dpo import dpo
from winnow.errors import WinnowError
from winnow.records import atomic_write_jsonl
from winnow.rundir import Stage
from winnow.sft import make_trainer, sft
from winnow.train_images import image_paths

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTION = [{"type": "image"}, {"type": "text", "text": "what is in the picture"}]
ANSWERS = ["the sun rises over the kitchen table", "a rainy monday commute"]


@pytest.fixture(scope="module")
def vlms(tmp_path_factory) -> dict[str, Path]:
    """model_type -> the folder of a tiny random vision-language model of that architecture."""
    root = tmp_path_factory.mktemp("vlm")
    return {arch: build_vlm(root / arch, arch) for arch in VLM_ARCHS}


def store_image(run: Path, seed: int) -> str:
    """Write a tiny PNG into ``run/images`` under its sha256, as generate stores a prompt's; its path in rows."""
    data = tiny_image(seed)
    path = run / "images" / f"{hashlib.sha256(data).hexdigest()}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path.relative_to(run))


def image_rows(run: Path) -> list[dict]:
    """Four selected rows, two prompts (each its own image) x two samples: the completion
    the model is to learn depends on the image."""
    images = [store_image(run, seed) for seed in range(2)]
    return [
        {
            "prompt_id": f"p{i}",
            "sample_index": j,
            "prompt": [{"role": "user", "content": QUESTION}],
            "completion": [{"role": "assistant", "content": ANSWERS[i]}],
            "images": [images[i]],
        }
        for i in range(2)
        for j in range(2)
    ]


def hand_select(run: Path, selected: list[dict], pairs: list[dict] | None = None) -> Path:
    """A finished select stage of ``run`` holding these rows, written as select writes one."""
    outputs = ["selected.jsonl"] + (["pairs.jsonl"] if pairs is not None else [])
    with Stage(run, "select", {"select": {"by": "hand"}}) as stage:
        stage.claim()
        atomic_write_jsonl(stage.dir / "selected.jsonl", selected)
        summary = {}
        if pairs is not None:
            atomic_write_jsonl(stage.dir / "pairs.jsonl", pairs)
            summary["num_pairs"] = len(pairs)
        stage.finish(outputs=outputs, num_selected=len(selected), **summary)
    return run


def as_pairs(rows: list[dict]) -> list[dict]:
    """Each prompt's answer chosen over a shrug."""
    return [
        {
            "prompt_id": r["prompt_id"],
            "prompt": r["prompt"],
            "chosen": r["completion"],
            "rejected": [{"role": "assistant", "content": "no idea at all"}],
            "images": r["images"],
        }
        for r in rows
        if r["sample_index"] == 0
    ]


def completion_logprob(folder, prompt: list[dict], completion: list[dict], image: Path) -> float:
    """log p(completion tokens | prompt with its image) under the model in ``folder``."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    images = [[Image.open(image).convert("RGB")]]
    start = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(prompt + completion, tokenize=False)
    n = processor(text=[start], images=images, return_tensors="pt")["input_ids"].shape[1]
    inputs = processor(text=[full], images=images, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, n - 1 : -1]
    targets = inputs["input_ids"][0, n:]
    return float(torch.log_softmax(logits.float(), -1).gather(1, targets[:, None]).sum())


def trained_logprob(folder, run: Path, rows: list[dict], side: str = "completion") -> float:
    return sum(completion_logprob(folder, r["prompt"], r[side], run / r["images"][0]) for r in rows)


def margin(folder, run: Path, pairs: list[dict]) -> float:
    """Sum over pairs of log p(chosen) - log p(rejected), each given its prompt's image."""
    return trained_logprob(folder, run, pairs, "chosen") - trained_logprob(folder, run, pairs, "rejected")


def test_a_batch_holds_the_images_and_the_loss_is_on_completion_tokens(tmp_path, vlms):
    """TRL's vision collator: pixel values of each row's image, labels only on the completion."""
    run = tmp_path / "run"
    rows = image_paths(image_rows(run), run, Path("selected.jsonl"))
    folder = vlms["llava"]
    trainer, processor = make_trainer(rows[:1], TrainConfig(model=str(folder), device="cpu"), tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["pixel_values"].shape == (1, 3, 16, 16)
    from PIL import Image

    image = [[Image.open(rows[0]["images"][0]).convert("RGB")]]
    start = processor.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(rows[0]["prompt"] + rows[0]["completion"], tokenize=False)
    prompt_ids = processor(text=[start], images=image)["input_ids"][0]
    full_ids = processor(text=[full], images=image)["input_ids"][0]
    labels = batch["labels"][0]
    assert labels[labels != -100].tolist() == full_ids[len(prompt_ids) :]
    assert batch["input_ids"][0].tolist()[: len(prompt_ids)] == prompt_ids  # 16 image tokens among them
    assert prompt_ids.count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 16


def test_the_pixels_trained_on_are_those_sampled_from(tmp_path, vlms):
    """A transparent image is decoded as generate decodes it (``images.Image.pil``), not by
    the processor's own conversion, which would put it on white."""
    from PIL import Image

    rgba = Image.new("RGBA", (24, 20), (200, 30, 90, 0))  # every pixel transparent
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    stored = images.decode(buffer.getvalue(), name="test")
    run = tmp_path / "run"
    (run / stored.path).parent.mkdir(parents=True)
    (run / stored.path).write_bytes(stored.data)
    row = {**looking_at(stored.path), "completion": [{"role": "assistant", "content": ANSWERS[0]}]}
    rows = image_paths([row], run, Path("s.jsonl"))
    trainer, processor = make_trainer(rows, TrainConfig(model=str(vlms["llava"]), device="cpu"), tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    sampled = processor.image_processor(images=[stored.pil()], return_tensors="pt")["pixel_values"]
    on_white = processor.image_processor(images=[rgba], return_tensors="pt")["pixel_values"]
    assert torch.equal(batch["pixel_values"], sampled)
    assert not torch.equal(sampled, on_white)


@pytest.mark.parametrize("arch", sorted(VLM_ARCHS))
def test_sft_with_lora_on_each_architecture(tmp_path, vlms, arch):
    run = tmp_path / "run"
    rows = image_rows(run)
    hand_select(run, rows)
    base = vlms[arch]
    config = TrainConfig(model=str(base), lora=True, learning_rate=2e-2, epochs=6, batch_size=2, device="cpu")
    manifest = sft(run, config)
    assert manifest["num_rows"] == manifest["rows_trained"] == 4
    assert math.isfinite(manifest["train_loss"]) and all(math.isfinite(loss) for _, loss in manifest["loss_curve"])
    checkpoint = Path(manifest["checkpoint"])
    # only the LoRA-adapted linear layers moved (merged into the checkpoint); embeddings did not
    from safetensors.torch import load_file

    before, after = load_file(base / "model.safetensors"), load_file(checkpoint / "model.safetensors")
    assert before.keys() == after.keys()
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.endswith("proj.weight") or "fc" in name or "linear" in name for name in moved), moved
    assert not any("embed_tokens" in name for name in moved)
    assert any("vision" in name for name in moved)  # peft's all-linear reaches the vision tower
    # the trained completions are likelier given their images
    assert trained_logprob(checkpoint, run, rows[::2]) > trained_logprob(base, run, rows[::2]) + 1.0
    # an ordinary vision-language folder: it loads and generates from an image
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    text = processor.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False)
    image = Image.open(run / rows[0]["images"][0]).convert("RGB")
    inputs = processor(text=[text], images=[[image]], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)
    assert not list((run / "sft").glob(".tmp-*"))


@pytest.mark.parametrize("arch", sorted(VLM_ARCHS))
def test_dpo_with_lora_on_pairs_with_images(tmp_path, vlms, arch):
    run = tmp_path / "run"
    rows = image_rows(run)
    pairs = as_pairs(rows)
    hand_select(run, rows, pairs)
    base = vlms[arch]
    config = DpoConfig(model=str(base), lora=True, beta=0.1, learning_rate=2e-2, epochs=8, batch_size=1, device="cpu")
    manifest = dpo(run, config)
    assert manifest["num_pairs"] == 2 and math.isfinite(manifest["train_loss"])
    assert margin(manifest["checkpoint"], run, pairs) > margin(base, run, pairs) + 1.0


def test_full_fine_tuning_without_lora(tmp_path, vlms):
    """Every weight trained (the default): SFT and DPO on one run dir, each the likelier for it."""
    run = tmp_path / "run"
    rows = image_rows(run)
    pairs = as_pairs(rows)
    hand_select(run, rows, pairs)
    base = vlms["llava"]
    trained = sft(run, TrainConfig(model=str(base), learning_rate=1e-3, epochs=4, batch_size=2, device="cpu"))
    assert trained_logprob(trained["checkpoint"], run, rows[::2]) > trained_logprob(base, run, rows[::2]) + 1.0
    preferred = dpo(run, DpoConfig(model=str(base), learning_rate=1e-3, epochs=4, batch_size=1, device="cpu"))
    assert margin(preferred["checkpoint"], run, pairs) > margin(base, run, pairs) + 1.0


def sft_args(run: Path, model: Path) -> list[str]:
    return ["sft", "--run-dir", str(run), "--sft-model", str(model), "--device", "cpu", "--lora", "--epochs", "1"]


def test_a_missing_image_is_one_line_before_training(tmp_path, vlms, capsys):
    run = tmp_path / "run"
    rows = image_rows(run)
    hand_select(run, rows)
    os.unlink(run / rows[2]["images"][0])  # the second prompt's image: rows (lines) 3 and 4
    err = fails(sft_args(run, vlms["llava"]), capsys, one_error=True)
    selected = run / "select" / "selected.jsonl"
    assert err.strip() == f"winnow: error: {selected}:3: field 'images[0]': {rows[2]['images'][0]} not found in {run}"
    assert not (run / "sft" / "config.json").exists()  # nothing trained, nothing claimed


def test_image_rows_on_a_text_model_are_refused_in_one_line(tmp_path, tiny_policy, capsys):
    run = tmp_path / "run"
    hand_select(run, image_rows(run))
    err = fails(sft_args(run, tiny_policy), capsys, one_error=True)
    selected = run / "select" / "selected.jsonl"
    assert err.strip() == (
        f"winnow: error: {selected}: field 'images': 4 of 4 rows carry images but {tiny_policy} is a text-only "
        "model (its config has no vision_config); give a vision-language model"
    )


def bad_runs(run: Path) -> dict[str, tuple[object, str]]:
    """Ways a row's image can be wrong -> (the row's ``images`` entry, the message after its place)."""
    good = store_image(run, 0)
    (run / "outside.png").write_bytes(tiny_image(1))
    text = run / "images" / f"{hashlib.sha256(b'not an image').hexdigest()}.png"
    text.write_bytes(b"not an image")
    damaged = run / "images" / f"{'0' * 64}.png"
    damaged.write_bytes(tiny_image(2))
    link = run / "images" / f"{hashlib.sha256(tiny_image(1)).hexdigest()}.png"
    link.symlink_to(run / "outside.png")
    return {
        "outside the images folder": (
            "outside.png",
            "'outside.png' is not a path images/<sha256>.<ext> in the run dir",
        ),
        "up and out": ("images/../outside.png", "is not a path images/<sha256>.<ext> in the run dir"),
        "absolute": (str(run / good), "is not a path images/<sha256>.<ext> in the run dir"),
        "not a string": (7, "7 is not a path images/<sha256>.<ext> in the run dir"),
        "a link": (str(link.relative_to(run)), "is not a regular file (links are not followed)"),
        "damaged": (str(damaged.relative_to(run)), f"{damaged}: damaged (its sha256 is not the one in its name)"),
        "not an image": (str(text.relative_to(run)), "is not a readable image (cannot identify image file"),
    }


def looking_at(*names) -> dict:
    """A row whose prompt has one image part for each of ``names``."""
    parts = [{"type": "image"} for _ in names] + [{"type": "text", "text": "compare"}]
    return {"prompt": [{"role": "user", "content": parts}], "images": list(names)}


def test_each_bad_image_is_named_by_file_line_and_field(tmp_path):
    run = tmp_path / "run"
    cases = bad_runs(run)
    good = store_image(run, 0)
    for why, (entry, message) in cases.items():
        rows = [looking_at(good), looking_at(good, entry)]
        with pytest.raises(WinnowError) as e:
            image_paths(rows, run, Path("selected.jsonl"))
        assert str(e.value).startswith("selected.jsonl:2: field 'images[1]': "), why
        assert message in str(e.value), (why, str(e.value))
    with pytest.raises(WinnowError, match=r"^selected.jsonl:1: field 'images': expected a list of paths, got 'x.png'$"):
        image_paths([{"images": "x.png"}], run, Path("selected.jsonl"))


def test_images_and_image_parts_must_pair_up(tmp_path):
    """TRL fills the prompt's image parts with the row's images in order: a count that differs
    would fail mid-training, so it is one line before."""
    run = tmp_path / "run"
    good = store_image(run, 0)
    two_parts = looking_at(good, good)
    expected = (
        's.jsonl:2: field \'prompt\': 2 {"type": "image"} part(s) for 1 image(s); '
        "the images fill the prompt's image parts in order, one each"
    )
    with pytest.raises(WinnowError) as e:
        image_paths([looking_at(good), {**two_parts, "images": [good]}], run, Path("s.jsonl"))
    assert str(e.value) == expected
    text_prompt = {"prompt": [{"role": "user", "content": "what is it"}], "images": [good]}
    with pytest.raises(WinnowError, match=r"^s.jsonl:1: field 'prompt': 0 .* for 1 image"):
        image_paths([text_prompt], run, Path("s.jsonl"))
    assert image_paths([two_parts], run, Path("s.jsonl"))[0]["images"] == [str((run / good).resolve())] * 2


def test_images_are_bounded_by_size_and_pixels(tmp_path, monkeypatch):
    import winnow.train_images as train_images

    run = tmp_path / "run"
    name = store_image(run, 0)  # 24 x 20 pixels
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 479)
    with pytest.raises(
        WinnowError, match=rf"^s.jsonl:1: field 'images\[0\]': {name} is 24x20 pixels, over the 479 allowed$"
    ):
        image_paths([looking_at(name)], run, Path("s.jsonl"))
    size = (run / name).stat().st_size
    monkeypatch.setattr(train_images, "MAX_STORED_BYTES", size - 1)
    with pytest.raises(
        WinnowError, match=rf"^s.jsonl:1: field 'images\[0\]': {name} is {size} bytes, over the {size - 1} allowed$"
    ):
        image_paths([looking_at(name)], run, Path("s.jsonl"))


def test_rows_without_images_pass_as_they_are(tmp_path):
    rows = [{"prompt": "a"}, {"prompt": "b", "images": []}]
    assert image_paths(rows, tmp_path, Path("s.jsonl")) == rows


@pytest.mark.parametrize("arch", sorted(VLM_ARCHS))
def test_a_max_length_that_cuts_image_tokens_is_one_line(tmp_path, vlms, capsys, arch):
    """A prompt's image tokens (4 to 16, with their markers) and its text do not fit in 12: the
    model's mismatch of features and tokens becomes the option's name."""
    run = tmp_path / "run"
    hand_select(run, image_rows(run))
    err = fails([*sft_args(run, vlms[arch]), "--max-length", "12"], capsys, error_last=True)
    assert err.strip().splitlines()[-1] == (
        "winnow: error: sft.max_length: 12 tokens cut off the image tokens of a prompt; raise --max-length"
    )
    assert not (run / "sft" / "checkpoint").exists()


REWARD = '''
import numpy as np


def brightness(prompts, completions, images, **kw):
    """The first image's mean grey level in [0, 1] (0 without one), plus a thousandth per character."""
    grey = [np.asarray(row[0].convert("L")).mean() / 255 if row else 0.0 for row in images]
    return [g + len(c) / 1000 for g, c in zip(grey, completions, strict=True)]
'''


def test_a_vision_language_run_end_to_end_with_lora(tmp_path, vlms):
    """generate with images -> a reward that reads them -> select -> sft with LoRA -> the
    checkpoint samples the same prompts, images included."""
    for seed in (0, 1):
        (tmp_path / f"img{seed}.png").write_bytes(tiny_image(seed))
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"id": "p0", "messages": [{"role": "user", "content": QUESTION}], "images": ["img0.png"]},
            {"id": "p1", "prompt": "what is it", "images": ["img1.png"]},
            {"id": "p2", "prompt": "no picture here"},
        ],
    )
    (tmp_path / "vision_reward.py").write_text(REWARD)
    run, model = tmp_path / "run", vlms["idefics3"]
    common = flags(run_dir=run)
    assert main(["generate", *common, *flags(prompts=prompts, model=model, n=3, max_new_tokens=5, device="cpu")]) == 0
    assert main(["score", *common, *flags(reward_fn=f"{tmp_path}/vision_reward.py:brightness")]) == 0
    assert main(["select", *common, *flags(strategy="top_per_prompt")]) == 0
    selected = read_rows(run / "select/selected.jsonl")
    assert [len(r.get("images", [])) for r in selected] == [1, 1, 0]
    assert main([*sft_args(run, model), "--learning-rate", "1e-2", "--sft-batch-size", "3"]) == 0
    manifest = json.loads((run / "sft/manifest.json").read_text())
    assert manifest["num_rows"] == manifest["rows_trained"] == 3 and math.isfinite(manifest["train_loss"])
    again = tmp_path / "again"
    checkpoint = run / "sft/checkpoint"
    argv = flags(prompts=prompts, run_dir=again, model=checkpoint, n=2, max_new_tokens=3, device="cpu")
    assert main(["generate", *argv]) == 0
    assert len(read_rows(again / "generate/shard-m0-00000.jsonl")) == 6
    assert sorted(p.name for p in (again / "images").iterdir()) == sorted(p.name for p in (run / "images").iterdir())
