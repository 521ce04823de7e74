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
from helpers import fails, flags, make_run, write_jsonl
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


def noise_png(seed: int, side: int) -> bytes:
    """A PNG of random pixels (about 3 bytes a pixel: PNG cannot compress noise)."""
    from PIL import Image

    out = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> tuple[Path, int]:
    """An imported run of 24 prompts x 2, each prompt with its own ~300 KB image (7 MB of
    images in all), scored by length and selected with pairs: (run dir, the images' bytes)."""
    root = tmp_path_factory.mktemp("many_images")
    rows, completions, total = [], [], 0
    for i in range(24):
        data = noise_png(i, 320)
        (root / f"img{i}.png").write_bytes(data)
        total += len(data)
        rows.append({"id": f"p{i}", "messages": [{"role": "user", "content": [{"type": "image"}, ASK]}]})
        rows[-1]["images"] = [f"img{i}.png"]
        completions += [{"prompt_id": f"p{i}", "text": "a" * (j + 1)} for j in range(2)]
    run = root / "run"
    imported = flags(
        completions=write_jsonl(root / "c.jsonl", completions), prompts=write_jsonl(root / "p.jsonl", rows)
    )
    assert main(["import", *imported, *flags(run_dir=run)]) == 0
    assert main(["score", *flags(run_dir=run, reward_fn="length")]) == 0
    assert main(["select", *flags(run_dir=run, pairs="best-worst")]) == 0
    return run, total


def test_export_holds_one_batch_of_images_not_the_runs(many_images, tmp_path, monkeypatch):
    """Batches of 1 MB of images (3 rows here): the export's Python allocations peak at a few
    batches' images, far below the run's 7 MB, and every row still gets its own image."""
    import tracemalloc

    from winnow.export import images as img

    run, total = many_images
    monkeypatch.setattr(img, "BATCH_BYTES", 1 << 20)
    tracemalloc.start()
    try:
        assert main(["export", str(run), "--to", str(tmp_path / "out"), "--all-scored"]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 7_000_000 and peak < 3_000_000, (total, peak)
    for config, rows in (("selected", 24), ("pairs", 24), ("all", 48)):
        [file] = (out := tmp_path / "out" / config).glob("*.parquet")
        table = pq.read_table(file, columns=["prompt_id", "images"])
        assert table.num_rows == rows and pq.ParquetFile(file).metadata.row_group(0).num_rows == 3, out
        for pid, cells in zip(table.column("prompt_id").to_pylist(), table.column("images").to_pylist(), strict=True):
            assert [c["bytes"] for c in cells] == [noise_png(int(pid[1:]), 320)], (config, pid)


def test_a_damaged_stored_image_is_named_when_its_batch_is_read(many_images, tmp_path, capsys):
    """The bytes are checked against the sha256 in their name as each batch reads them: a
    damaged file is one line naming it, and the export leaves no folder (written then renamed)."""
    run, _ = many_images
    stored = sorted((run / "images").iterdir())[-1]
    original = stored.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    out = tmp_path / "out"
    try:
        message = f"{stored}: damaged (its sha256 is not the one in its name); rerun `winnow generate`"
        fails(["export", str(run), "--to", str(out)], capsys, message, one_error=True)
    finally:
        stored.write_bytes(original)
    assert not out.exists() and list(tmp_path.iterdir()) == []
