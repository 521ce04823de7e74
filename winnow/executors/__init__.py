"""Executors: who turns a stage's pending shards into shard files.

The driver (a stage function in ``winnow.stages``) owns the stage folder: its config, its
lock and its manifest. It lists the shards still to make as ``ShardTask``s and hands them
to an executor together with a worker factory. A worker is built once per process (that is
where a model is loaded) and turns one task into one shard's rows; the executor writes them
atomically as ``shard-<name>.jsonl`` in the stage folder. The same worker code runs under
every executor, so a local run and a distributed one cannot drift.

Trust stays with the driver: it holds the stage's lock for the whole stage (workers on
other machines only write shard files), and it checks and records each shard as the
executor reports it (``on_written``) or, at the latest, when ``run_shards`` returns. A
worker given ``config_hash`` refuses to write into a stage whose config.json changed.

``EXECUTORS`` is the one list of executor names; ``run_shards`` dispatches on it:
``local`` (``_run_local`` below) and ``ray`` (``winnow.executors.ray``, a pool of Ray
actors that survives lost workers). Both end with the same shard files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tqdm.auto import tqdm

from winnow.errors import WinnowError
from winnow.records import atomic_write_jsonl

if TYPE_CHECKING:
    from winnow.config import ExecutorConfig

EXECUTORS = ("local", "ray")


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
        """The rows of one shard, keyed by (prompt_id, sample_index); no file I/O."""
        ...


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


def shard_file(stage_dir: Path, name: str) -> Path:
    return Path(stage_dir) / f"shard-{name}.jsonl"


def write_shard(stage_dir: Path, name: str, rows: list[dict], *, config_hash: str | None = None) -> None:
    """Write one shard atomically (temp file + rename): present means whole.

    With ``config_hash``, the writer first checks that the stage's ``config.json`` is still
    the one its driver claimed, so no worker adds a shard to a stage of another config.
    """
    if config_hash is not None:
        check_stage_config(stage_dir, config_hash)
    atomic_write_jsonl(shard_file(stage_dir, name), rows)


def check_stage_config(stage_dir: Path, expected_hash: str) -> None:
    """Refuse to write into ``stage_dir`` unless its config.json hashes to ``expected_hash``."""
    from winnow.records import config_hash, read_json

    path = Path(stage_dir) / "config.json"
    found = config_hash(read_json(path)) if path.exists() else None
    if found != expected_hash:
        raise WinnowError(
            f"{path}: the stage's config changed under this writer ({expected_hash} -> {found}); shard not written"
        )


def run_shards(
    tasks: Sequence[ShardTask],
    make_worker: Callable[[], ShardWorker],
    stage_dir: Path,
    *,
    claim: Callable[[], None],
    executor: ExecutorConfig | None = None,
    desc: str = "shards",
    on_written: Callable[[str], None] | None = None,
    config_hash: str | None = None,
    meter: Meter | None = None,
) -> ShardReport:
    """Turn every task into a shard file in ``stage_dir``; ``make_worker`` must be picklable.

    ``claim`` is called once, before the first shard is written: a stage that fails
    before producing anything (a typo in a model path) leaves its folder unclaimed, so it
    can be rerun with the mistake fixed. No worker is built when ``tasks`` is empty.
    ``on_written(name)`` is called in the driver as each shard file lands, so the driver can
    verify and record it at once (a kill then loses at most the shards in flight);
    ``config_hash`` is passed to every ``write_shard``; ``meter``: what the progress bar counts.
    Shards that failed every try are in ``report.failed``; the caller must not call the
    stage complete while there are any (``ShardReport.raise_failed``).
    """
    name = executor.name if executor is not None else "local"
    meter = meter or Meter()
    if not tasks:
        return ShardReport(executor=name)
    match name:
        case "local":
            return _run_local(
                tasks,
                make_worker,
                Path(stage_dir),
                claim=claim,
                desc=desc,
                on_written=on_written,
                config_hash=config_hash,
                meter=meter,
            )
        case "ray":
            from winnow.executors.ray import run_ray

            assert executor is not None
            return run_ray(
                tasks,
                make_worker,
                Path(stage_dir),
                claim=claim,
                config=executor,
                desc=desc,
                on_written=on_written,
                config_hash=config_hash,
                meter=meter,
            )
        case _:
            raise WinnowError(f"unknown executor {name!r} (choose from: {', '.join(EXECUTORS)})")


def _run_local(
    tasks: Sequence[ShardTask],
    make_worker: Callable[[], ShardWorker],
    stage_dir: Path,
    *,
    claim: Callable[[], None],
    desc: str,
    on_written: Callable[[str], None] | None,
    config_hash: str | None,
    meter: Meter,
) -> ShardReport:
    """One worker in this process, shards in order; the first error stops the stage."""
    worker = make_worker()
    if getattr(worker, "pipelined", False):
        return _run_overlapped(
            tasks,
            worker,
            stage_dir,
            claim=claim,
            desc=desc,
            on_written=on_written,
            config_hash=config_hash,
            meter=meter,
        )
    report = ShardReport(executor="local", workers=1)
    bar = meter.bar(tasks, desc)
    if hasattr(worker, "progress"):  # it counts within a shard (a generate worker, batch by batch)
        worker.progress = bar.update
    try:
        for task in tasks:
            counted = bar.n
            _write(task, worker.run(task), report, stage_dir, claim, on_written, config_hash)
            bar.update(max(0, meter.size(task) - (bar.n - counted)))
    finally:
        bar.close()
    return report


def _run_overlapped(
    tasks: Sequence[ShardTask],
    worker: Any,
    stage_dir: Path,
    *,
    claim: Callable[[], None],
    desc: str,
    on_written: Callable[[str], None] | None,
    config_hash: str | None,
    meter: Meter,
) -> ShardReport:
    """``_run_local`` for a worker whose shards may overlap (``worker.submit(task)`` returns a
    future of the rows): up to ``worker.depth()`` shards are submitted and not yet written,
    so the next shards' requests start while the last of the current one finish. Shards are
    written whole and in order, as one after another would write them: the first error
    stops the stage with the shards before it written and none after (those in flight are
    cancelled), and a kill loses only the shards in flight."""
    from collections import deque

    report = ShardReport(executor="local", workers=1)
    depth = worker.depth()
    flying: deque = deque()
    bar = meter.bar(tasks, desc)
    try:
        for task in tasks:
            while len(flying) >= depth:
                bar.update(_land(flying.popleft(), report, stage_dir, claim, on_written, config_hash, meter))
            flying.append((task, worker.submit(task)))
        while flying:
            bar.update(_land(flying.popleft(), report, stage_dir, claim, on_written, config_hash, meter))
    finally:
        for _, future in flying:
            future.cancel()
        bar.close()
        if hasattr(worker, "close"):
            worker.close()
    return report


def _land(item, report: ShardReport, stage_dir: Path, claim, on_written, config_hash, meter: Meter) -> int:
    """Wait for one submitted shard and write it; returns its size on the progress bar."""
    task, future = item
    _write(task, future.result(), report, stage_dir, claim, on_written, config_hash)
    return meter.size(task)


def _write(
    task: ShardTask, rows: list[dict], report: ShardReport, stage_dir: Path, claim, on_written, config_hash
) -> None:
    """Write one finished shard: the stage is claimed before its first shard lands."""
    if not report.done:
        claim()
    write_shard(stage_dir, task.name, rows, config_hash=config_hash)
    report.done.append(task.name)
    if on_written is not None:
        on_written(task.name)
