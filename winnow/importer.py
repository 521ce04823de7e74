"""``winnow import``: completions made elsewhere become a run directory's generate stage.

An offline vLLM job, an API batch or a dataset of responses holds rows of (prompt id,
completion text) and, when known, the model, the finish reason and the token count. The
import checks every row first (a bad one is named by line, or row, and field, and nothing
is written), then writes the rows as generate shards of ``shard_rows`` rows each, in the
file's order, with ``prompts.jsonl`` and a manifest that records the source file's sha256.
``score``, ``select``, ``sft``, ``report`` and ``verify`` read it as any generate stage.

Memory: one batch of rows at a time plus numbers per completion (the keys, to refuse a
repeated one), so a file of 16 million completions imports on a small machine.

Sample indices: a ``sample_index`` column is used as given; without one, each prompt's
completions are numbered 0, 1, 2, ... in file order. The matrix has as many columns as the
largest index plus one; a prompt with fewer completions leaves cells empty (unscored).
An index is at most ``MAX_N - 1`` (9999), as ``--n`` is at most ``MAX_N``: one stray large
index would otherwise make every prompt's row of the matrix that wide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from winnow import images
from winnow.config import MAX_N, ImportConfig
from winnow.errors import WinnowError, where
from winnow.executors import shard_file
from winnow.records import Completion, Prompt, atomic_write_jsonl, config_hash, sha256_file
from winnow.rundir import Stage
from winnow.stream import iter_jsonl, write_rows

FINISH_REASONS = ("stop", "length")
BATCH = 4096


def import_completions(
    run_dir: str | Path, completions: str | Path, prompts: list[Prompt], config: ImportConfig | None = None
) -> dict:
    """Write ``run_dir/generate`` from a completions file (JSONL, Parquet or a saved dataset)
    and the prompts (``winnow.prompts.load_prompts``); returns the manifest. Rerunning on the
    same files does nothing."""
    config = config or ImportConfig()
    config.validate()
    source = Path(completions)
    if not source.exists():
        raise WinnowError(f"completions file does not exist: {source}")
    prompt_rows = [p.to_row() for p in prompts]
    row_of = {p.id: i for i, p in enumerate(prompts)}
    digest = _source_hash(source)
    checked = _check_rows(source, row_of, config)
    names = [f"m0-{k:05d}" for k in range((checked.count + config.shard_rows - 1) // config.shard_rows)]
    stage = Stage(
        run_dir,
        "generate",
        {
            "import": {"source_sha256": digest, **asdict(config)},
            "generate": {"models": checked.models, "max_new_tokens": config.max_new_tokens},
            "prompts_hash": config_hash(prompt_rows),
        },
    )
    with stage:
        pending = set(stage.pending(names))
        if not pending and stage.stored_manifest() and stage.matches("prompts.jsonl"):
            return stage.manifest()
        stage.claim()
        for name, rows in zip(names, _shards(source, row_of, config, checked), strict=True):
            if name not in pending:
                continue
            write_rows(shard_file(stage.dir, name), rows)
            stage.record_shard(name, {(r["prompt_id"], r["sample_index"]) for r in rows}, exact=True)
        images.store(run_dir, prompts)
        atomic_write_jsonl(stage.dir / "prompts.jsonl", prompt_rows)
        return stage.finish(
            shards=names,
            outputs=["prompts.jsonl"],
            num_prompts=len(prompts),
            num_columns=checked.columns,
            num_completions=checked.count,
            skipped_prompts=int((checked.per_prompt == 0).sum()),
            source={"path": str(source), "sha256": digest, "rows": checked.count},
        )


@dataclass
class _Checked:
    count: int
    columns: int
    models: list[str]
    per_prompt: np.ndarray  # int64 (M,): completions of each prompt


def _check_rows(source: Path, row_of: dict[str, int], config: ImportConfig) -> _Checked:
    """Every row checked, and the keys: a repeated (prompt, sample_index) is named by both lines."""
    per_prompt = np.zeros(len(row_of), dtype=np.int64)
    keys: list[np.ndarray] = []
    lines: list[np.ndarray] = []
    models: dict[str, None] = {}
    count, columns = 0, 0
    batch_keys: list[int] = []
    batch_lines: list[int] = []
    for line, row in _rows(source):
        c = _completion(row, source, line, row_of, config, per_prompt)
        models.setdefault(c.model, None)
        i = row_of[c.prompt_id]
        per_prompt[i] += 1
        columns = max(columns, c.sample_index + 1)
        batch_keys.append(i)
        batch_keys.append(c.sample_index)
        batch_lines.append(line)
        count += 1
        if len(batch_lines) == BATCH:
            keys.append(np.array(batch_keys, dtype=np.int64).reshape(-1, 2))
            lines.append(np.array(batch_lines, dtype=np.int64))
            batch_keys, batch_lines = [], []
    if batch_lines:
        keys.append(np.array(batch_keys, dtype=np.int64).reshape(-1, 2))
        lines.append(np.array(batch_lines, dtype=np.int64))
    if not count:
        raise WinnowError(f"{source}: no completions found")
    all_keys = np.concatenate(keys)
    all_lines = np.concatenate(lines)
    packed = all_keys[:, 0] * columns + all_keys[:, 1]
    order = np.argsort(packed, kind="stable")
    repeat = np.flatnonzero(packed[order][1:] == packed[order][:-1])
    if repeat.size:
        first, second = sorted((int(all_lines[order[repeat[0]]]), int(all_lines[order[repeat[0] + 1]])))
        i, j = divmod(int(packed[order[repeat[0]]]), columns)
        prompt_id = next(pid for pid, row in row_of.items() if row == i)
        raise WinnowError(
            f"{where(source, second, 'sample_index')}: ({prompt_id!r}, {j}) repeats the completion on line {first}"
        )
    return _Checked(count, columns, list(models), per_prompt)


def _shards(source: Path, row_of: dict[str, int], config: ImportConfig, checked: _Checked) -> Iterator[list[dict]]:
    """The completion rows again (checked already), ``shard_rows`` at a time."""
    numbered = np.zeros(len(row_of), dtype=np.int64)
    shard: list[dict] = []
    for line, row in _rows(source):
        shard.append(_completion(row, source, line, row_of, config, numbered).to_row())
        numbered[row_of[shard[-1]["prompt_id"]]] += 1
        if len(shard) == config.shard_rows:
            yield shard
            shard = []
    if shard:
        yield shard


def _completion(
    row: dict, source: Path, line: int, row_of: dict[str, int], config: ImportConfig, numbered: np.ndarray
) -> Completion:
    """One checked row; ``numbered``: completions of each prompt so far (the next sample_index)."""
    raw_id = row.get(config.id_column)
    if raw_id is None:
        raise WinnowError(f"{where(source, line, config.id_column)}: missing (the prompt id)")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise WinnowError(f"{where(source, line, config.id_column)}: expected a string or integer, got {raw_id!r}")
    prompt_id = str(raw_id)
    if prompt_id not in row_of:
        raise WinnowError(
            f"{where(source, line, config.id_column)}: prompt id {prompt_id!r} is not in the prompts file"
        )
    text = row.get(config.text_column)
    if not isinstance(text, str):
        got = "missing" if text is None else f"expected a string, got {type(text).__name__}"
        raise WinnowError(f"{where(source, line, config.text_column)}: {got}")
    index = row.get("sample_index")
    if index is None:
        index = int(numbered[row_of[prompt_id]])
    elif isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise WinnowError(f"{where(source, line, 'sample_index')}: expected an integer >= 0, got {index!r}")
    if index >= MAX_N:  # the reward matrix has index + 1 columns for every prompt: bounded as --n is
        raise WinnowError(
            f"{where(source, line, 'sample_index')}: {index} is beyond the largest sample index, "
            f"{MAX_N - 1} (at most {MAX_N} completions per prompt, as for --n)"
        )
    model = row.get("model")
    if model is None:
        model = config.model
    elif not isinstance(model, str) or not model:
        raise WinnowError(f"{where(source, line, 'model')}: expected a non-empty string, got {model!r}")
    finish = row.get("finish_reason")
    if finish is None:
        finish = "stop"
    elif finish not in FINISH_REASONS:
        raise WinnowError(f"{where(source, line, 'finish_reason')}: expected 'stop' or 'length', got {finish!r}")
    tokens = row.get("num_tokens")
    if tokens is None:
        tokens = len(text.split())  # no tokenizer here: whitespace words stand in (stated in the docs)
    elif isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise WinnowError(f"{where(source, line, 'num_tokens')}: expected an integer >= 0, got {tokens!r}")
    return Completion(prompt_id, index, model, text, tokens, finish)


def _rows(source: Path) -> Iterator[tuple[int, dict]]:
    """(line or 1-based row, row) of a JSONL file, a Parquet file or a saved dataset, in batches."""
    if source.is_dir():
        yield from _dataset_rows(source)
    elif source.suffix == ".jsonl":
        yield from iter_jsonl(source)
    elif source.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(source).iter_batches(batch_size=BATCH)
            start = 1
            for batch in batches:
                for k, row in enumerate(batch.to_pylist()):
                    yield start + k, row
                start += batch.num_rows
        except (OSError, ValueError) as e:  # pyarrow's errors are both; the file must be named
            raise WinnowError(f"{source}: could not read as Parquet: {e}") from None
    else:
        raise WinnowError(f"{source}: unknown completions format (use .jsonl, .parquet or a saved dataset folder)")


def _dataset_rows(source: Path) -> Iterator[tuple[int, dict]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(source))
    except Exception as e:  # noqa: BLE001 -- datasets raises many types; the user needs the folder named
        raise WinnowError(f"{source}: could not read as a saved dataset: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    start = 1
    for batch in ds.iter(batch_size=BATCH):
        columns = list(batch)
        size = len(batch[columns[0]]) if columns else 0
        for k in range(size):
            yield start + k, {c: batch[c][k] for c in columns}
        start += size


def _source_hash(source: Path) -> str:
    """sha256 of the file, or of a dataset folder's files (names and contents, in name order)."""
    if source.is_file():
        return sha256_file(source)
    h = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(source)).encode() + b"\0" + sha256_file(path).encode())
    return h.hexdigest()
