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

``EXECUTORS`` (``winnow.config``) is the one list of executor names; ``run_shards`` dispatches on it:
``local`` (``_run_local`` below) and ``ray`` (``winnow.executors.ray``, a pool of Ray
actors that survives lost workers). Both end with the same shard files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from winnow.config import EXECUTORS, ExecutorConfig
from winnow.errors import WinnowError
from winnow.executors.shards import (
    ERROR,
    Landing,
    Meter,
    ShardReport,
    ShardTask,
    ShardWorker,
    errors_file,
    shard_file,
    write_shard,
)

__all__ = [  # the shard contract, handed on for callers of the package
    "ERROR",
    "EXECUTORS",
    "Landing",
    "Meter",
    "ShardReport",
    "ShardTask",
    "ShardWorker",
    "errors_file",
    "run_shards",
    "shard_file",
    "write_shard",
]


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
    if not tasks:
        return ShardReport(executor=name)
    landing = Landing(Path(stage_dir), claim, desc, on_written, config_hash, meter or Meter())
    match name:
        case "local":
            return _run_local(tasks, make_worker, landing)
        case "ray":
            from winnow.executors.ray import run_ray

            assert executor is not None
            return run_ray(tasks, make_worker, landing, config=executor)
        case _:
            raise WinnowError(f"unknown executor {name!r} (choose from: {', '.join(EXECUTORS)})")


def _run_local(tasks: Sequence[ShardTask], make_worker: Callable[[], ShardWorker], landing: Landing) -> ShardReport:
    """One worker in this process, shards in order; the first error stops the stage."""
    worker = make_worker()
    if getattr(worker, "pipelined", False):
        return _run_overlapped(tasks, worker, landing)
    report = ShardReport(executor="local", workers=1)
    meter = landing.meter
    bar = meter.bar(tasks, landing.desc)
    if hasattr(worker, "progress"):  # it counts within a shard (a generate worker, batch by batch)
        worker.progress = bar.update
    try:
        for task in tasks:
            counted = bar.n
            landing.write(task, worker.run(task), report)
            bar.update(max(0, meter.size(task) - (bar.n - counted)))
    finally:
        bar.close()
    return report


def _run_overlapped(tasks: Sequence[ShardTask], worker: Any, landing: Landing) -> ShardReport:
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
    bar = landing.meter.bar(tasks, landing.desc)
    try:
        for task in tasks:
            while len(flying) >= depth:
                bar.update(_land(flying.popleft(), report, landing))
            flying.append((task, worker.submit(task)))
        while flying:
            bar.update(_land(flying.popleft(), report, landing))
    finally:
        for _, future in flying:
            future.cancel()
        bar.close()
        if hasattr(worker, "close"):
            worker.close()
    return report


def _land(item, report: ShardReport, landing: Landing) -> int:
    """Wait for one submitted shard and write it; returns its size on the progress bar."""
    task, future = item
    landing.write(task, future.result(), report)
    return landing.meter.size(task)
