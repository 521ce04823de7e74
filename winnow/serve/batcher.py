"""Concurrent requests into few backend calls: a short batching window and a bounded batch.

The first waiting request opens a window (``window_s``); requests with the same sampling
settings that arrive in it, up to ``max_batch``, go to the backend in one call. The
backend runs in a worker thread, one batch at a time (a model is not thread-safe), so while
a batch runs the event loop keeps accepting requests and the next batch forms meanwhile:
under load the batches fill up without waiting for the window. Requests beyond
``max_queue`` waiting are refused (``QueueFull``), which the app turns into 429 with
Retry-After.

A request whose client has gone is dropped from the queue at once (``drop``), so it holds
no place there; one already in the backend is cancelled by the app (see ``app.Ticket``).
A batch whose backend call fails is run again one request at a time, so a request that
breaks the backend fails alone and its batch-mates are answered.

Each batch runs in a new daemon thread rather than a pool's: a backend call that never
returns must not keep the process alive after shutdown (a pool's threads are joined at
interpreter exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("winnow.serve")


class QueueFull(Exception):
    """More requests are waiting than the server takes."""


@dataclass(eq=False)
class Job:
    key: Hashable
    item: Any
    seed: int | None
    future: asyncio.Future = field(repr=False)


class Batcher:
    """``await submit(key, item, seed)`` -> ``run(items, key, seed)[i]`` for this item.

    ``run(items, key, seed) -> list`` (one result per item, in order) is called in the
    worker thread with items that share ``key``. A batch is sampled from one random stream:
    its seed is the first request's seed, or a fresh one when it gave none.
    ``on_batch(size)``, if given, is told the size of every backend call (metrics).
    """

    def __init__(
        self,
        run: Callable[[list, Any, int], list],
        *,
        window_s: float,
        max_batch: int,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.pending: deque[Job] = deque()
        self.wake = asyncio.Event()
        self.batches = 0
        """Backend calls made so far (for tests and benchmarks)."""
        self.running = 0
        """Requests in the backend call under way."""

    def enqueue(self, key: Hashable, item: Any, seed: int | None) -> Job:
        """Queue a request now (``QueueFull`` when the queue is full); ``wait`` for its result."""
        if len(self.pending) >= self.max_queue:
            raise QueueFull
        job = Job(key, item, seed, asyncio.get_running_loop().create_future())
        self.pending.append(job)
        self.wake.set()
        return job

    async def wait(self, job: Job) -> Any:
        """The job's result; if the waiting task is cancelled, the job leaves the queue."""
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            self.drop(job)
            raise

    async def submit(self, key: Hashable, item: Any, seed: int | None) -> Any:
        return await self.wait(self.enqueue(key, item, seed))

    def drop(self, job: Job) -> None:
        """Forget a job whose client has gone: out of the queue, its future cancelled."""
        with contextlib.suppress(ValueError):
            self.pending.remove(job)
        job.future.cancel()

    async def run_forever(self) -> None:
        while True:
            while not self.pending:
                self.wake.clear()
                await self.wake.wait()
            batch = await self._collect()
            if not batch:  # every waiting client went away
                continue
            self.running = len(batch)
            try:
                await self._run_batch(batch)
            finally:
                self.running = 0

    async def _run_batch(self, batch: list[Job]) -> None:
        seed = batch[0].seed if batch[0].seed is not None else random.randrange(1 << 31)
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            results = await in_thread(self.run, [j.item for j in batch], batch[0].key, seed)
        except Exception as e:  # noqa: BLE001 -- the backend failed on this batch
            if len(batch) > 1:
                log.warning(
                    "a batch of %d failed (%s: %s); running its requests one by one", len(batch), type(e).__name__, e
                )
                for job in batch:
                    if not job.future.done():
                        await self._run_batch([job])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        self.batches += 1
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():  # a client that went away cancelled its future
                job.future.set_result(result)

    async def _collect(self) -> list[Job]:
        """Wait out the window (or until the batch is full), then take up to max_batch jobs
        that share the first job's key, in arrival order."""
        loop = asyncio.get_running_loop()
        key = self.pending[0].key
        deadline = loop.time() + self.window_s
        while sum(j.key == key for j in self.pending) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.pending:
                break
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), remaining)
            except TimeoutError:
                break
        batch: list[Job] = []
        rest: deque[Job] = deque()
        while self.pending:
            job = self.pending.popleft()
            if job.key == key and len(batch) < self.max_batch and not job.future.done():
                batch.append(job)
            elif not job.future.done():
                rest.append(job)
        self.pending = rest
        return batch

    def close(self) -> None:
        """Refuse what is still queued (the server is stopping); a running batch is abandoned."""
        while self.pending:
            job = self.pending.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))


def in_thread(fn: Callable, *args) -> asyncio.Future:
    """``fn(*args)`` in a new daemon thread; the returned future gets its result or exception."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if future.done():  # the awaiting task was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as e:  # noqa: BLE001 -- handed to the awaiting task
            result, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, daemon=True, name="winnow-backend").start()
    return future
