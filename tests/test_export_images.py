"""``winnow export`` of a run whose prompts had images: ``datasets.load_dataset`` gives every
config an ``images`` column of decoded images, equal pixel for pixel to the prompts' own, in
the rows of the prompts that hold them (none for a text prompt beside them); the card says the
rows carry images; a text run's export is as it was (no images column, no features metadata)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import flags, make_run, write_jsonl
from tiny_vlm import build_vlm, tiny_image

from winnow.cli import main
from winnow.export import tables

datasets = pytest.importorskip("datasets")
pytestmark = pytest.mark.usefixtures("one_thread")

ASK = {"type": "text", "text": "describe this"}
N = 3
SEEDS = {"p0": (0,), "p1": (1,), "p2": (0, 1), "p3": ()}
"""Each prompt's images, by tiny_image seed, in order; p3 is a text prompt."""


def pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A tiny LLaVA's run over prompts with images (TRL's form, a text prompt with images, two
    images in one prompt) and a text prompt: generate, score by length, select with pairs."""
    root = tmp_path_factory.mktemp("image_run")
    vlm = build_vlm(root / "vlm", "llava")
    for s in (0, 1):
        (root / f"img{s}.png").write_bytes(tiny_image(s))
    one = [{"role": "user", "content": [{"type": "image"}, ASK]}]
    two = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, ASK]}]
    prompts = write_jsonl(
        root / "prompts.jsonl",
        [
            {"id": "p0", "messages": one, "images": ["img0.png"]},
            {"id": "p1", "prompt": "what is it", "images": ["img1.png"]},
            {"id": "p2", "messages": two, "images": ["img0.png", "img1.png"]},
            {"id": "p3", "prompt": "no picture here"},
        ],
    )
    run = root / "run"
    sampling = flags(prompts=prompts, model=vlm, n=N, max_new_tokens=6, device="cpu")
    assert main(["generate", *flags(run_dir=run), *sampling]) == 0
    assert main(["score", *flags(run_dir=run, reward_fn="length")]) == 0
    assert main(["select", *flags(run_dir=run, pairs="best-worst")]) == 0
    return run


def load(folder: Path, tmp_path: Path, name: str | None = None) -> list[dict]:
    """One config's rows as ``datasets`` decodes them (``to_list`` would give the raw cells)."""
    split = datasets.load_dataset(str(folder), name, cache_dir=str(tmp_path / "cache"))["train"]
    assert split.features["images"] == datasets.List(datasets.Image())
    return list(split)


def assert_images(rows: list[dict], id_key: str = "prompt_id") -> None:
    """Each row's images are its prompt's, decoded, pixel for pixel, in order."""
    for row in rows:
        want = [pixels(tiny_image(s)) for s in SEEDS[row[id_key]]]
        got = [np.asarray(image.convert("RGB")) for image in row["images"]]
        assert len(got) == len(want), row[id_key]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_every_config_carries_the_rows_images(image_run, tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(image_run), "--to", str(out), "--all-scored"]) == 0

    selected = load(out, tmp_path)
    assert [r["prompt_id"] for r in selected] == ["p0", "p1", "p2", "p3"]
    assert_images(selected)
    assert selected[0]["prompt"] == [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "describe this"}]}
    ]
    # a text prompt beside prompts with images: its text as one part, no images
    assert selected[3]["prompt"] == [{"role": "user", "content": [{"type": "text", "text": "no picture here"}]}]
    assert selected[3]["images"] == []
    assert selected[2]["completion"][0]["role"] == "assistant"
    from trl.data_utils import prepare_multimodal_messages  # what TRL's vision collators call

    filled = prepare_multimodal_messages(selected[2]["prompt"], images=selected[2]["images"])
    assert [part.get("image") for part in filled[0]["content"]] == [*selected[2]["images"], None]

    pairs = load(out, tmp_path, "pairs")
    assert sorted(p["prompt_id"] for p in pairs) == ["p0", "p1", "p2", "p3"]
    assert_images(pairs)

    every = load(out, tmp_path, "all")
    assert sorted((r["prompt_id"], r["sample_index"]) for r in every) == [(p, j) for p in SEEDS for j in range(N)]
    assert_images(every)


def test_the_bytes_are_the_stored_images_and_the_card_says_so(image_run, tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(image_run), "--to", str(out), "--all-scored"]) == 0
    [file] = (out / "selected").glob("*.parquet")
    table = pq.read_table(file)
    cells = table.column("images").to_pylist()
    assert [[c["bytes"] for c in row] for row in cells] == [[tiny_image(s) for s in SEEDS[p]] for p in SEEDS]
    first = image_run / "select/selected.jsonl"
    assert cells[0][0]["path"] == first.read_text().split('"images": ["images/', 1)[1].split('"', 1)[0]
    # the all config's 12 rows hold 12 image cells (6 of each image); its file holds each image once
    [file] = (out / "all").glob("*.parquet")
    chunk = pq.ParquetFile(file).metadata.row_group(0)
    [images] = [
        c for c in map(chunk.column, range(chunk.num_columns)) if c.path_in_schema.startswith("images.list.element.b")
    ]
    distinct = len(tiny_image(0)) + len(tiny_image(1))
    assert distinct < images.total_compressed_size < distinct + 200 and not images.is_stats_set
    card = (out / "README.md").read_text()
    assert "## Images\n\nThe prompts hold images (2 distinct). Every row carries its prompt's images" in card
    assert "- image-text-to-text" in card.split("---")[1] and "- vision" in card.split("---")[1]


def test_a_text_run_has_no_images_column_nor_features(tmp_path):
    run = make_run(tmp_path / "run")
    assert main(["select", "--run-dir", str(run), "--pairs", "best-worst"]) == 0
    out = tmp_path / "out"
    assert main(["export", str(run), "--to", str(out), "--all-scored"]) == 0
    for config, columns in (("selected", tables.SELECTED), ("pairs", tables.PAIRS), ("all", tables.ALL)):
        [file] = (out / config).glob("*.parquet")
        schema = tables.schema(columns)
        table = pq.read_table(file).cast(schema)
        assert "images" not in table.schema.names and schema.metadata is None
        # byte for byte what the plain writer makes of these rows: no option nor metadata added
        plain = tmp_path / f"{config}.parquet"
        with pq.ParquetWriter(plain, schema, compression="zstd") as writer:
            writer.write_table(table, row_group_size=tables.BATCH_ROWS)
        assert plain.read_bytes() == file.read_bytes(), config
    card = (out / "README.md").read_text()
    assert "## Images" not in card and "image-text-to-text" not in card and "vision" not in card
