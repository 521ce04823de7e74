"""The Parquet files of an exported dataset, written a batch at a time from the run dir's
streamed files (``winnow.stream``): memory holds one batch of rows and one shard, never the
dataset. Each config (``selected``, ``pairs``, ``all``) is a folder of files
``train-00000-of-0000N.parquet``, the layout ``datasets.load_dataset`` and the Hub read.

Columns are fixed per config (below), so every file and row group has one schema whatever
the first rows hold (a first batch of unscored rewards would otherwise be typed null). A
prompt row's other columns (reference answers, IFEval's instructions) are of any JSON shape,
so they travel as JSON text in ``columns``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from winnow.errors import WinnowError, where
from winnow.records import Prompt
from winnow.rundir import completed_manifest
from winnow.stream import check_jsonl, generate_shards, iter_jsonl, iter_shard_rows, load_prompts, verified_shard

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
ALL = {
    "prompt": MESSAGES,
    "completion": MESSAGES,
    "prompt_id": pa.string(),
    "sample_index": pa.int64(),
    "model": pa.string(),
    "reward": pa.float64(),
    "num_tokens": pa.int64(),
    "finish_reason": pa.string(),
}
"""Every completion of the generate stage with its reward (null: unscored)."""
POOLED = {"selected": ("round",), "pairs": ("chosen_round", "rejected_round")}
"""The columns a selection pooled over rounds adds: the round each completion came from."""
BATCH_ROWS = 8192
"""Rows per Parquet row group: what memory holds at once (a few MB of text)."""
FILE_ROWS = 500_000
"""Rows per file: files of a few hundred MB, as the Hub prefers them."""


def schema(columns: dict[str, pa.DataType], *, pooled: tuple[str, ...] = (), prompt_columns: bool = False) -> pa.Schema:
    """A config's schema: its columns, the pooled ones, and ``columns`` (JSON text) when the
    prompts have other columns."""
    fields = [*columns.items(), *((name, pa.int64()) for name in pooled)]
    if prompt_columns:
        fields.append(("columns", pa.string()))
    return pa.schema(fields)


class ParquetSink:
    """Rows in, Parquet files out: a row group every ``batch_rows`` rows, a new file every
    ``file_rows``; ``close`` names the files ``train-0000i-of-0000N.parquet``."""

    def __init__(self, folder: Path, schema: pa.Schema, *, batch_rows: int = BATCH_ROWS, file_rows: int = FILE_ROWS):
        self.folder, self.schema = folder, schema
        self.batch_rows, self.file_rows = batch_rows, max(file_rows, batch_rows)
        self.rows = 0
        self._batch: list[dict] = []
        self._writer: pq.ParquetWriter | None = None
        self._files: list[Path] = []
        self._in_file = 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        self._batch.append(row)
        if len(self._batch) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._batch and self._files:
            return
        if self._writer is None or self._in_file >= self.file_rows:
            self._close_file()
            self._files.append(self.folder / f"train-{len(self._files):05d}.parquet")
            self._writer = pq.ParquetWriter(self._files[-1], self.schema, compression="zstd")
            self._in_file = 0
        self._writer.write_table(pa.Table.from_pylist(self._batch, schema=self.schema))
        self._in_file += len(self._batch)
        self.rows += len(self._batch)
        self._batch = []

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[str]:
        """Write what is left (an empty config still gets one file, with its schema) and
        return the files' names, numbered of their count."""
        self._flush()
        self._close_file()
        names = []
        for i, path in enumerate(self._files):
            final = path.with_name(f"train-{i:05d}-of-{len(self._files):05d}.parquet")
            path.rename(final)
            names.append(final.name)
        return names


def write(folder: Path, rows: Iterable[dict], schema: pa.Schema, **sizes: int) -> tuple[int, list[str]]:
    """Write ``rows`` as the Parquet files of one config in ``folder``: (rows, file names)."""
    sink = ParquetSink(folder, schema, **sizes)
    for row in rows:
        sink.add(row)
    files = sink.close()  # before reading the count: close writes the last batch
    return sink.rows, files


def select_rows(run_dir: Path, name: str, columns: Iterable[str]) -> Iterator[dict]:
    """The rows of ``select/<name>.jsonl``, checked against the select manifest first, one
    line at a time; a key that is no column of the config names its file, line and field."""
    manifest = completed_manifest(run_dir, "select")
    path = run_dir / "select" / f"{name}.jsonl"
    check_jsonl(path, manifest["files"].get(f"{name}.jsonl"), stage="select")
    known = set(columns)
    for lineno, row in iter_jsonl(path):
        extra = sorted(set(row) - known)
        if extra:
            raise WinnowError(f"{where(path, lineno, extra[0])}: not a column winnow exports (a newer select stage?)")
        yield as_parquet_row(row)


def all_rows(run_dir: Path) -> Iterator[dict]:
    """Every completion of the generate stage, shard by shard, with its reward from the score
    stage's (M, C) matrix (null where unscored) and its prompt as messages."""
    generated = completed_manifest(run_dir, "generate")
    scored = completed_manifest(run_dir, "score")
    prompts = load_prompts(run_dir, generated)
    path = run_dir / "score" / "rewards.npy"
    verified_shard(path, scored["files"].get("rewards.npy"), stage="score")
    rewards = np.load(path, mmap_mode="r")
    row_of = {p.id: i for i, p in enumerate(prompts)}
    folder = run_dir / "generate"
    for row in iter_shard_rows(folder, generate_shards(run_dir, generated), generated["files"], stage="generate"):
        prompt = prompts[row_of[row["prompt_id"]]]
        reward = float(rewards[row_of[row["prompt_id"]], row["sample_index"]])
        yield as_parquet_row(
            {
                "prompt": prompt.as_messages(),
                "completion": [{"role": "assistant", "content": row["text"]}],
                "prompt_id": row["prompt_id"],
                "sample_index": row["sample_index"],
                "model": row["model"],
                "reward": None if np.isnan(reward) else reward,
                "num_tokens": row["num_tokens"],
                "finish_reason": row["finish_reason"],
                **({"columns": prompt.columns} if prompt.columns else {}),
            }
        )


def as_parquet_row(row: dict) -> dict:
    """A row as its config's columns hold it: the prompt row's other columns as JSON text."""
    if "columns" in row:
        row["columns"] = json.dumps(row["columns"], ensure_ascii=False, sort_keys=True)
    return row


def has_prompt_columns(prompts: list[Prompt]) -> bool:
    return any(p.columns for p in prompts)
