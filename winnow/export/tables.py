"""The Parquet files of an exported dataset, written a batch at a time from the run dir's
streamed files (``winnow.stream``): memory holds one batch of rows and one shard, never the
dataset. Each config (``selected``, ``pairs``, ``all``) is a folder of files
``train-00000-of-0000N.parquet``, the layout ``datasets.load_dataset`` and the Hub read.

Columns are fixed per config (below), so every file and row group has one schema whatever
the first rows hold (a first batch of unscored rewards would otherwise be typed null). A
prompt row's other columns (reference answers, IFEval's instructions) are of any JSON shape,
so they travel as JSON text in ``columns``. A run whose prompts had images adds ``images``
(``winnow.export.images``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.errors import WinnowError, where
from winnow.executors import shard_file
from winnow.export import images as img
from winnow.records import Prompt
from winnow.rundir import completed_manifest
from winnow.stream import check_jsonl, generate_shards, iter_jsonl, iter_lines, verified_shard

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
"""A conversation, as TRL's conversational formats hold one: [{"role", "content"}, ...]."""
SELECTED = {
    "prompt": MESSAGES,
    "completion": MESSAGES,
    "prompt_id": pa.string(),
    "sample_index": pa.int64(),
    "model": pa.string(),
    "reward": pa.float64(),
}
"""``select/selected.jsonl``'s rows (TRL's prompt-completion format); ``round`` too when pooled."""
PAIRS = {
    "prompt": MESSAGES,
    "chosen": MESSAGES,
    "rejected": MESSAGES,
    "prompt_id": pa.string(),
    "chosen_index": pa.int64(),
    "rejected_index": pa.int64(),
    "chosen_model": pa.string(),
    "rejected_model": pa.string(),
    "chosen_reward": pa.float64(),
    "rejected_reward": pa.float64(),
    "margin": pa.float64(),
    "chosen_tokens": pa.int64(),
    "rejected_tokens": pa.int64(),
}
"""``select/pairs.jsonl``'s rows (TRL's preference format); ``chosen_round`` and ``rejected_round`` when pooled."""
ALL = {**SELECTED, "num_tokens": pa.int64(), "finish_reason": pa.string()}
"""Every completion of the generate stage with its reward (null: unscored)."""
POOLED = {"selected": ("round",), "pairs": ("chosen_round", "rejected_round")}
"""The columns a selection pooled over rounds adds: the round each completion came from."""
BATCH_ROWS = 8192
"""Rows per Parquet row group: what memory holds at once (a few MB of text)."""
FILE_ROWS = 500_000
"""Rows per file: files of a few hundred MB, as the Hub prefers them."""


def schema(
    columns: dict[str, pa.DataType],
    *,
    pooled: tuple[str, ...] = (),
    prompt_columns: bool = False,
    images: bool = False,
) -> pa.Schema:
    """A config's schema: its columns, the pooled ones, ``columns`` (JSON text) when the
    prompts have other columns, and with ``images`` the prompt as parts and the images
    (``winnow.export.images``)."""
    fields = [*columns.items(), *((name, pa.int64()) for name in pooled)]
    if prompt_columns:
        fields.append(("columns", pa.string()))
    if not images:
        return pa.schema(fields)
    fields = [(name, img.MESSAGES if name == "prompt" else kind) for name, kind in fields]
    return img.with_features(pa.schema([*fields, ("images", img.IMAGES)]))


class ParquetSink:
    """Tables in, Parquet files out: row groups of at most ``batch_rows`` rows, a new file
    every ``file_rows``; ``close`` names the files ``train-0000i-of-0000N.parquet``."""

    def __init__(self, folder: Path, schema: pa.Schema, *, batch_rows: int = BATCH_ROWS, file_rows: int = FILE_ROWS):
        self.folder, self.schema = folder, schema
        self.batch_rows, self.file_rows = batch_rows, max(file_rows, 1)
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._files: list[Path] = []
        self._in_file = 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None or self._in_file >= self.file_rows:
                self._next_file()
            assert self._writer is not None
            part = table.slice(0, self.file_rows - self._in_file)
            self._writer.write_table(part, row_group_size=self.batch_rows)
            self._in_file += part.num_rows
            self.rows += part.num_rows
            table = table.slice(part.num_rows)

    def _next_file(self) -> None:
        self._close_file()
        self._files.append(self.folder / f"train-{len(self._files):05d}.parquet")
        extra = img.writer_options(self.schema)  # {} for a text config: written as ever
        self._writer = pq.ParquetWriter(self._files[-1], self.schema, compression="zstd", **extra)
        self._in_file = 0

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[str]:
        """Close the last file (an empty config still gets one, with its schema) and return
        the files' names, numbered of their count."""
        if not self._files:
            self._next_file()
        self._close_file()
        names = []
        for i, path in enumerate(self._files):
            final = path.with_name(f"train-{i:05d}-of-{len(self._files):05d}.parquet")
            path.rename(final)
            names.append(final.name)
        return names


def write(folder: Path, tables: Iterable[pa.Table], schema: pa.Schema, **sizes: int) -> tuple[int, list[str]]:
    """Write ``tables`` as the Parquet files of one config in ``folder``: (rows, file names)."""
    sink = ParquetSink(folder, schema, **sizes)
    for table in tables:
        sink.add(table)
    return sink.rows, sink.close()


def batches(
    rows: Iterable[dict], schema: pa.Schema, batch_rows: int = BATCH_ROWS, images: img.RunImages | None = None
) -> Iterator[pa.Table]:
    """Rows as tables of ``batch_rows`` rows (the last may be shorter); with ``images``, each
    row's ``images`` paths become its cells as its batch is made (``RunImages.cells``)."""
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_rows:
            yield _from_rows(batch, schema, images)
            batch = []
    if batch:
        yield _from_rows(batch, schema, images)


def _from_rows(batch: list[dict], schema: pa.Schema, images: img.RunImages | None) -> pa.Table:
    if images is not None:
        for row, cells in zip(batch, images.cells([row["images"] for row in batch]), strict=True):
            row["images"] = cells
    return pa.Table.from_pylist(batch, schema=schema)


def select_rows(
    run_dir: Path, name: str, columns: Iterable[str], images: img.RunImages | None = None
) -> Iterator[dict]:
    """The rows of ``select/<name>.jsonl``, checked against the select manifest first, one
    line at a time; a key that is no column of the config names its file, line and field.
    ``images``: the run's images, for a config with images (a row's stay paths, checked:
    ``batches`` reads them a batch at a time)."""
    manifest = completed_manifest(run_dir, "select")
    path = run_dir / "select" / f"{name}.jsonl"
    check_jsonl(path, manifest["files"].get(f"{name}.jsonl"), stage="select")
    known = set(columns)
    for lineno, row in iter_jsonl(path):
        extra = sorted(set(row) - known)
        if extra:
            raise WinnowError(f"{where(path, lineno, extra[0])}: not a column winnow exports (a newer select stage?)")
        if images is not None:
            row = img.row_with_images(row, images, where=where(path, lineno))
        yield as_parquet_row(row)


class _Completion(msgspec.Struct):
    """A generate shard's row, decoded into a typed struct (faster than a dict by far)."""

    prompt_id: str
    sample_index: int
    model: str
    text: str
    num_tokens: int
    finish_reason: str


def all_tables(
    run_dir: Path, schema: pa.Schema, batch_rows: int = BATCH_ROWS, images: img.RunImages | None = None
) -> Iterator[pa.Table]:
    """Every completion of the generate stage, shard by shard, as tables of ``batch_rows``
    rows: its prompt as messages, its reward from the score stage's (M, C) matrix (null where
    unscored), and with ``images`` its prompt's images, read for its batch. Built a column at
    a time: a prompt's messages are converted once and taken by index, the texts go into
    Arrow as one list per batch."""
    generated = completed_manifest(run_dir, "generate")
    scored = completed_manifest(run_dir, "score")
    prompts, _ = img.run_prompts(run_dir, generated)  # the images' bytes are read per batch
    path = run_dir / "score" / "rewards.npy"
    verified_shard(path, scored["files"].get("rewards.npy"), stage="score")
    rewards = np.load(path)  # (M, C) float64: the numbers of the run, as every reader holds them
    if "images" in schema.names:
        by_prompt = {"prompt": pa.array([img.as_parts(p.as_messages()) for p in prompts], type=img.MESSAGES)}
    else:
        by_prompt = {"prompt": pa.array([p.as_messages() for p in prompts], type=MESSAGES)}
    if "columns" in schema.names:
        by_prompt["columns"] = pa.array([as_json(p.columns) for p in prompts], type=pa.string())
    row_of = {p.id: i for i, p in enumerate(prompts)}
    folder = run_dir / "generate"
    for name in generate_shards(run_dir, generated):
        shard = shard_file(folder, name)
        data = verified_shard(shard, generated["files"].get(shard.name), stage="generate")
        batch: list[_Completion] = []
        for lineno, _, line in iter_lines(data):
            batch.append(_decode(line, shard, lineno))
            if len(batch) == batch_rows:
                yield _table(batch, row_of, rewards, by_prompt, schema, shard, images)
                batch = []
        if batch:
            yield _table(batch, row_of, rewards, by_prompt, schema, shard, images)


def _decode(line: bytes, path: Path, lineno: int) -> _Completion:
    try:
        return _COMPLETION(line)
    except msgspec.DecodeError as e:  # a wrong type names its field
        raise WinnowError(f"{where(path, lineno)}: {e}; rerun `winnow generate`") from None


_COMPLETION = msgspec.json.Decoder(_Completion).decode


def _table(
    batch: list[_Completion],
    row_of: dict,
    rewards,
    by_prompt: dict,
    schema: pa.Schema,
    path: Path,
    images: img.RunImages | None,
) -> pa.Table:
    """One batch of completions as a table of the ``all`` config."""
    rows = np.array([row_of.get(c.prompt_id, -1) for c in batch], dtype=np.int64)
    cols = np.array([c.sample_index for c in batch], dtype=np.int64)
    if (rows < 0).any() or (cols < 0).any() or (cols >= rewards.shape[1]).any():
        raise WinnowError(f"{path}: a completion is not a cell of this run's matrix; rerun `winnow generate`")
    reward = rewards[rows, cols]
    texts = pa.array([c.text for c in batch], type=pa.string())
    roles = pa.array(np.full(len(batch), "assistant", dtype=object), type=pa.string())
    offsets = pa.array(np.arange(len(batch) + 1, dtype=np.int32))
    completion = pa.ListArray.from_arrays(
        offsets, pa.StructArray.from_arrays([roles, texts], fields=list(MESSAGES.value_type))
    )
    columns = {
        "prompt": by_prompt["prompt"].take(rows),
        "completion": completion,
        "prompt_id": pa.array([c.prompt_id for c in batch], type=pa.string()),
        "sample_index": pa.array(cols),
        "model": pa.array([c.model for c in batch], type=pa.string()),
        "reward": pa.array(reward, mask=np.isnan(reward)),
        "num_tokens": pa.array([c.num_tokens for c in batch], type=pa.int64()),
        "finish_reason": pa.array([c.finish_reason for c in batch], type=pa.string()),
    }
    if "columns" in by_prompt:
        columns["columns"] = by_prompt["columns"].take(rows)
    if images is not None:
        columns["images"] = images.column(rows)
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


def as_json(columns: dict) -> str | None:
    """A prompt row's other columns as the ``columns`` cell holds them: JSON text, or null."""
    return json.dumps(columns, ensure_ascii=False, sort_keys=True) if columns else None


def as_parquet_row(row: dict) -> dict:
    """A row as its config's columns hold it: the prompt row's other columns as JSON text."""
    if "columns" in row:
        row["columns"] = as_json(row["columns"])
    return row


def has_prompt_columns(prompts: list[Prompt]) -> bool:
    return any(p.columns for p in prompts)
