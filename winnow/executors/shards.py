"""The shard contract every executor keeps: a ``ShardTask`` in, a ``ShardWorker``'s rows out,
written whole as ``shard-<name>.jsonl`` (``write_shard``), and a ``ShardReport`` of what was
done. A row carrying ``ERROR`` is no output but a row that failed (``on_error: skip``): those
go to ``errors-<name>.jsonl``, written whole before the shard, so a present shard always has
its errors beside it. The executors (``winnow.executors``, ``winnow.executors.ray``) import this module, never
the package that dispatches to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from winnow.config import ExecutorConfig
from winnow.errors import WinnowError
from winnow.records import atomic_write_jsonl, config_hash, read_json


@dataclass(frozen=True)
class Meter:
    """What a stage's progress bar counts: ``unit`` (e.g. "completion") and how many each
    task makes, by task name (None: one shard a task). A worker with a ``progress``
    attribute is given the bar's ``update`` to count within a shard (the local executor);
    the bar is topped up to the task's size as its shard lands either way."""

    unit: str = "shard"
    sizes: dict[str, int] | None = None

    def size(self, task: ShardTask) -> int:
        return 1 if self.sizes is None else self.sizes[task.name]

    def bar(self, tasks: Sequence[ShardTask], desc: str) -> tqdm:
        return tqdm(total=sum(self.size(t) for t in tasks), desc=desc, unit=self.unit)


@dataclass(frozen=True)
class ShardTask:
    """One shard to make: its name (file ``shard-<name>.jsonl``) and its picklable inputs."""

    name: str
    payload: Any
    """What the worker needs for this shard alone (prompt rows, completion rows, a seed)."""


class ShardWorker(Protocol):
    def run(self, task: ShardTask) -> list[dict]:
        """The rows of one shard, keyed by (prompt_id, sample_index), and a row with an
        ``ERROR`` key for each that failed and was skipped; no file I/O."""
        ...


ERROR = "error"
"""The key that marks a worker's row as a failure record (its value: the reason, one line)."""


@dataclass
class ShardReport:
    """What an executor did: shards written, shards that failed every try (name -> error)."""

    executor: str = "local"
    workers: int = 0
    """Workers built (0 when no shard was pending; replacements of lost ones included)."""
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    """Tries beyond the first, over all shards."""

    def merge(self, other: ShardReport) -> ShardReport:
        """This report followed by ``other`` (a stage that runs one pool per model)."""
        return ShardReport(
            executor=other.executor,
            workers=self.workers + other.workers,
            done=self.done + other.done,
            failed={**self.failed, **other.failed},
            retries=self.retries + other.retries,
        )

    def record(self, config: ExecutorConfig) -> dict:
        """The manifest's ``executor`` entry: how the shards of this invocation were made."""
        workers = 1 if config.name == "local" else config.workers
        return {"name": config.name, "workers": workers, "retries": self.retries}

    def raise_failed(self, stage: str, total: int) -> None:
        """A clear error naming every shard that failed, after the others were written."""
        if not self.failed:
            return
        lines = "; ".join(f"shard-{name}.jsonl: {error}" for name, error in sorted(self.failed.items()))
        raise WinnowError(
            f"{stage}: {len(self.failed)} of {total} pending shards failed every try ({lines}). "
            "The other shards are written; rerun the same command to retry only these."
        )


@dataclass(frozen=True)
class Landing:
    """Where an executor's shards land and what the driver does as each one lands; every
    executor takes one.

    stage_dir: the stage folder the ``shard-<name>.jsonl`` files go in. claim: called once,
    before the first shard is written. on_written(name): called in the driver as each shard
    lands, to verify and record it. config_hash: passed to every ``write_shard``. desc and
    meter: the progress bar's label and what it counts.
    """

    stage_dir: Path
    claim: Callable[[], None]
    desc: str = "shards"
    on_written: Callable[[str], None] | None = None
    config_hash: str | None = None
    meter: Meter = field(default_factory=Meter)

    def write(self, task: ShardTask, rows: list[dict], report: ShardReport) -> None:
        """Write a shard made in this process, claiming the stage before its first shard lands,
        and count it done in ``report``."""
        if not report.done:
            self.claim()
        write_shard(self.stage_dir, task.name, rows, config_hash=self.config_hash)
        report.done.append(task.name)
        if self.on_written is not None:
            self.on_written(task.name)


def shard_file(stage_dir: Path, name: str) -> Path:
    return Path(stage_dir) / f"shard-{name}.jsonl"


def errors_file(stage_dir: Path, name: str) -> Path:
    """The rows of shard ``name`` that failed and were skipped (absent when none did)."""
    return Path(stage_dir) / f"errors-{name}.jsonl"


def write_shard(stage_dir: Path, name: str, rows: list[dict], *, config_hash: str | None = None) -> None:
    """Write one shard atomically (temp file + rename): present means whole.

    Rows carrying ``ERROR`` are written first, atomically too, to ``errors-<name>.jsonl``
    (and a stale one of an earlier try is removed when there are none), so that a shard
    file on disk always has its errors beside it. With ``config_hash``, the writer first
    checks that the stage's ``config.json`` is still the one its driver claimed, so no
    worker adds a shard to a stage of another config.
    """
    if config_hash is not None:
        check_stage_config(stage_dir, config_hash)
    failed = [row for row in rows if ERROR in row]
    if failed:
        atomic_write_jsonl(errors_file(stage_dir, name), failed)
        rows = [row for row in rows if ERROR not in row]
    else:
        errors_file(stage_dir, name).unlink(missing_ok=True)
    atomic_write_jsonl(shard_file(stage_dir, name), rows)


def check_stage_config(stage_dir: Path, expected_hash: str) -> None:
    """Refuse to write into ``stage_dir`` unless its config.json hashes to ``expected_hash``."""
    path = Path(stage_dir) / "config.json"
    found = config_hash(read_json(path)) if path.exists() else None
    if found != expected_hash:
        raise WinnowError(
            f"{path}: the stage's config changed under this writer ({expected_hash} -> {found}); shard not written"
        )
