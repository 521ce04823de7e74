"""The Ray executor: a pool of Ray actors, each building its worker once and making many shards.

Why Ray core actors and not Ray Data: winnow's unit of work, of retry and of resume is a
named shard written atomically by ``write_shard``. Ray Data's unit is a block that it
splits, fuses and writes with its own datasinks and file names, and its failure handling
(``max_errored_blocks``) skips blocks without telling the driver which shard was lost.
With actors the driver keeps the few decisions that are winnow's: which shard goes to
which actor, a failed shard retried on another actor, a lost actor replaced, failures
named at the end. Ray does everything below that: placing actors on nodes by their
CPU and GPU requests, noticing a dead process or node, shipping inputs. The pool is one
loop over ``ray.wait`` ("next shard to the next idle actor"), not a scheduler.

Actors write their shard files themselves into the stage folder, which every node must
see at the same path (a shared filesystem): rows never travel back through the driver.
The driver holds the stage (config, claim, manifest); an actor only writes shard files.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from winnow.errors import WinnowError, install_hint
from winnow.executors.shards import Landing, ShardReport, ShardTask, ShardWorker, write_shard

if TYPE_CHECKING:  # the config imports this package's executor names, not the reverse
    from winnow.config import ExecutorConfig


def run_ray(
    tasks: Sequence[ShardTask], make_worker: Callable[[], ShardWorker], landing: Landing, *, config: ExecutorConfig
) -> ShardReport:
    """Make every task's shard file on a pool of ``config.workers`` Ray actors.

    The driver (this process) holds the stage's lock and calls ``landing.on_written(name)``
    as each shard lands, so every shard is verified and recorded here, never on a worker; a
    shard that fails that check counts as a failed try. Workers pass ``landing.config_hash``
    to ``write_shard``, which refuses to add a shard to a stage whose config changed.

    A shard whose try fails (its actor died, or ``worker.run`` raised) goes back to the
    queue and is tried again, on another actor where one is idle, up to ``config.retries``
    more times; a lost actor is replaced. Shards that fail every try are returned in
    ``report.failed`` (name -> last error) while the others finish. An error building the
    worker (a missing model, a prompt too long) is raised as the local executor raises it.
    """
    ray = _connect(config.ray_address)
    _check_fits(ray, config)
    watch = _RayWatch(ray, landing.desc)
    pool = _Pool(ray, make_worker, config, landing.stage_dir.resolve(), landing.config_hash)
    report = ShardReport(executor="ray")
    queue = deque(_Shard(t) for t in tasks)
    for _ in range(min(config.workers, len(tasks))):
        pool.start()
    meter = landing.meter
    bar = meter.bar(tasks, landing.desc)
    claimed = False
    try:
        while queue or pool.running:
            while (pick := pool.pick(queue)) is not None:
                if not claimed:
                    landing.claim()  # after a worker was built, before the first shard is written
                    claimed = True
                pool.submit(*pick)
            if not (pool.running or pool.building):
                _no_worker_left(pool, queue, report)
                break
            for ref in pool.wait():
                if ref in pool.building:
                    pool.built(ref)
                    continue
                shard, error = pool.finished(ref)
                error = _settle(shard, error, landing, report, queue, retries=config.retries)
                workers = len(pool.idle) + len(pool.running)
                bar.set_postfix(workers=workers, retries=report.retries, failed=len(report.failed), refresh=False)
                bar.update(meter.size(shard.task) if error is None else 0)
    finally:
        watch.stop()
        bar.close()
        pool.close()
    report.workers = pool.built_count
    return report


def _settle(
    shard: _Shard, error: str | None, landing: Landing, report: ShardReport, queue: deque, *, retries: int
) -> str | None:
    """Take in one finished try: a written shard is verified and recorded
    (``landing.on_written``) and counted done; a failed one (in the actor, or at that check)
    goes back on ``queue`` while it has ``retries`` left, else counts as failed. Returns the
    try's error, None when the shard is done."""
    if error is None and landing.on_written is not None:
        try:
            landing.on_written(shard.task.name)
        except WinnowError as e:  # a shard that fails verification is made again
            error = f"WinnowError: {e}"
    if error is None:
        report.done.append(shard.task.name)
        return None
    shard.tries += 1
    if shard.tries > retries:
        report.failed[shard.task.name] = error
    else:
        report.retries += 1
        queue.append(shard)
    return error


class ShardActor:
    """The body of one Ray actor: builds its worker once, then turns tasks into shard files.

    Every method returns an error as a value, so that to the driver an exception from
    ``ray.get`` can only mean a lost process or node.
    """

    def __init__(self, cwd: str):
        # Relative paths in a config (a model folder, a reward file) then resolve as they do
        # on the driver, where the shared filesystem is mounted at the same place.
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.worker: ShardWorker | None = None

    def build(self, make_worker: Callable[[], ShardWorker]) -> tuple[bool, str]:
        try:
            self.worker = make_worker()
        except Exception as e:  # noqa: BLE001 -- any error goes back to the driver, which decides
            return False, _describe(e)
        return True, f"{socket.gethostname()}:{os.getpid()}"

    def run(self, task: ShardTask, stage_dir: str, config_hash: str | None) -> str | None:
        """None once ``shard-<name>.jsonl`` is written, else the error."""
        assert self.worker is not None
        try:
            write_shard(Path(stage_dir), task.name, self.worker.run(task), config_hash=config_hash)
        except Exception as e:  # noqa: BLE001 -- the driver retries the shard on another actor
            return _describe(e)
        return None


@dataclass
class _Shard:
    task: ShardTask
    tries: int = 0
    failed_on: set = field(default_factory=set)
    """Actors this shard failed on: a retry goes to another one where one is idle."""


class _Pool:
    """The actors: starting, idle, running a shard; lost ones replaced while the budget lasts."""

    def __init__(
        self, ray: Any, make_worker: Callable, config: ExecutorConfig, stage_dir: Path, config_hash: str | None
    ):
        self.ray = ray
        self.stage_dir = str(stage_dir)
        self.config_hash = config_hash
        self.cwd = os.getcwd()
        self.factory = ray.put(make_worker)  # shipped to the object store once, not once per actor
        self.actor_class = ray.remote(ShardActor).options(
            num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker, max_restarts=0
        )
        # Each actor may be replaced as often as a shard may be retried: enough for lost
        # nodes, bounded when every new actor dies too (a GPU that is gone, say).
        self.starts_left = config.workers * (1 + config.retries)
        self.building: dict[Any, Any] = {}  # build ref -> actor
        self.running: dict[Any, tuple[Any, _Shard]] = {}  # run ref -> (actor, shard)
        self.idle: list[Any] = []
        self.built_count = 0
        self.lost: list[str] = []  # why actors were lost or could not be built

    def start(self) -> None:
        if self.starts_left <= 0:
            return
        self.starts_left -= 1
        actor = self.actor_class.remote(self.cwd)
        self.building[actor.build.remote(self.factory)] = actor

    def built(self, ref: Any) -> None:
        actor = self.building.pop(ref)
        try:
            ok, detail = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            self._lost(actor, f"worker lost while loading ({type(e).__name__})")
            return
        if ok:
            self.idle.append(actor)
            self.built_count += 1
        elif detail.startswith("WinnowError"):
            raise WinnowError(detail.removeprefix("WinnowError: "))  # bad input: the same on every actor
        else:
            self._lost(actor, f"building the worker failed: {detail}")

    def pick(self, queue: deque) -> tuple[_Shard, Any] | None:
        """The next (shard, idle actor) to pair, taken off the queue; None when none fits.

        A shard that failed goes to an actor it has not failed on; it waits for one while
        such an actor is alive but busy, and takes any actor once it has failed on them all.
        """
        live = {*self.idle, *self.building.values(), *(a for a, _ in self.running.values())}
        for actor in self.idle:
            for shard in queue:
                if actor not in shard.failed_on or not (live - shard.failed_on):
                    queue.remove(shard)
                    return shard, actor
        return None

    def submit(self, shard: _Shard, actor: Any) -> None:
        self.idle.remove(actor)
        self.running[actor.run.remote(shard.task, self.stage_dir, self.config_hash)] = (actor, shard)

    def finished(self, ref: Any) -> tuple[_Shard, str | None]:
        """The shard a finished run was for, and its error (None: the file is written)."""
        actor, shard = self.running.pop(ref)
        try:
            error = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            error = f"worker lost ({type(e).__name__})"
            self._lost(actor, error)
        else:
            self.idle.append(actor)
        if error is not None:
            shard.failed_on.add(actor)  # handles compare by actor id
        return shard, error

    def wait(self) -> list:
        """Refs that finished; waits at most a second so the progress bar's rate stays live."""
        refs = list(self.building) + list(self.running)
        done, _ = self.ray.wait(refs, num_returns=1, timeout=1.0)
        return done

    def _lost(self, actor: Any, why: str) -> None:
        self.lost.append(why)
        self.ray.kill(actor, no_restart=True)
        self.start()

    def close(self) -> None:
        for actor in [*self.idle, *self.building.values(), *(a for a, _ in self.running.values())]:
            self.ray.kill(actor, no_restart=True)


LOST = {
    "raylet": "a Ray node was lost (the raylet or its machine went away)",
    "gcs_server": "the Ray instance's head was lost (its GCS went away)",
}
"""Ray's name of each process ``_RayWatch`` watches -> what its loss means."""


class _RayWatch:
    """While a stage runs, the raylet and GCS of the Ray instance this process started are watched.

    When that raylet dies, Ray's core worker ends this process from C++ (``QuickExit``,
    status 1) after a line of its own about lost objects; when the GCS dies, it does the
    same a minute later ("Failed to connect to GCS within 60 seconds"). No Python code
    runs then, so nothing could say what happened. The watch (a thread polling the two
    processes) gets there first: one line, as the CLI writes its errors, then exit status
    2, the status of a run stopped by something outside it. Shards already written were
    verified and recorded as they landed, so a rerun resumes from them. A joined cluster's
    processes are not this process's children and are not watched.
    """

    def __init__(self, ray: Any, desc: str):
        node = getattr(ray._private.worker, "_global_node", None)
        started = getattr(node, "all_processes", None) or {}
        self.processes = {kind: started[kind][0].process for kind in LOST if started.get(kind)}
        self.desc = desc
        self.stopped = threading.Event()
        if self.processes:
            threading.Thread(target=self._watch, name="winnow-ray-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self.stopped.is_set():
            for kind, process in self.processes.items():
                if process.poll() is not None and not self.stopped.is_set():
                    sys.stderr.write(
                        f"\nwinnow: error: {self.desc}: {LOST[kind]}; "
                        "finished shards are kept, rerun the same command to resume\n"
                    )
                    sys.stderr.flush()
                    os._exit(2)
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopped.set()


def _no_worker_left(pool: _Pool, queue: deque, report: ShardReport) -> None:
    """Every actor was lost and none may be started: fail what is left, or say why none was built."""
    why = pool.lost[-1] if pool.lost else "no worker"
    if pool.built_count == 0:
        raise WinnowError(f"no Ray worker could be built ({len(pool.lost)} tries); last: {why}")
    for shard in queue:
        report.failed[shard.task.name] = f"no worker left after {len(pool.lost)} were lost; last: {why}"
    queue.clear()


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _connect(address: str | None) -> Any:
    """The ``ray`` module, connected: to the instance this process already has (tests,
    library use), to ``address`` (``auto`` or host:port), or to a new local instance."""
    try:
        import ray
    except ImportError:
        raise WinnowError(f"the ray executor needs Ray: {install_hint('ray')}") from None
    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:  # "local" starts a new instance rather than joining one found on this machine
            from winnow.executors import reaper

            with reaper.marked(reaper.start()):  # whatever ends this process, Ray's processes go too
                ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    except ConnectionError as e:
        raise WinnowError(f"cannot reach the Ray cluster at {address!r}: {e}") from None
    return ray


def _check_fits(ray: Any, config: ExecutorConfig) -> None:
    """Refuse a worker no node could hold (Ray would wait for it for ever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    wants = {"CPU": config.cpus_per_worker, "GPU": config.gpus_per_worker}
    if not any(all(res.get(k, 0) >= v for k, v in wants.items()) for res in nodes):
        biggest: dict = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        raise WinnowError(
            f"no Ray node has the --cpus-per-worker {config.cpus_per_worker:g} and --gpus-per-worker "
            f"{config.gpus_per_worker:g} one worker asks for (largest node: {biggest.get('CPU', 0):g} CPUs, "
            f"{biggest.get('GPU', 0):g} GPUs)"
        )
