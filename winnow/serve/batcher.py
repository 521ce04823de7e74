"""Concurrent requests into few backend calls: a short batching window and a bounded batch.

The first waiting request opens a window (``window_s``); requests with the same sampling
settings that arrive in it, up to ``max_batch``, go to the backend in one call. The
backend runs in one worker thread (a model is not thread-safe), so while a batch runs the
event loop keeps accepting requests and the next batch forms meanwhile: under load the
batches fill up without waiting for the window. Requests beyond ``max_queue`` waiting are
refused (``QueueFull``), which the app turns into 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """More requests are waiting than the server takes."""


@dataclass
class _Job:
    key: Hashable
    item: Any
    seed: int | None
    future: asyncio.Future = field(repr=False)


class Batcher:
    """``await submit(key, item, seed)`` -> ``run(items, key, seed)[i]`` for this item.

    ``run(items, key, seed) -> list`` (one result per item, in order) is called in the
    worker thread with items that share ``key``. A batch is sampled from one random stream:
    its seed is the first request's seed, or a fresh one when it gave none.
    """

    def __init__(self, run: Callable[[list, Any, int], list], *, window_s: float, max_batch: int, max_queue: int):
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.pending: deque[_Job] = deque()
        self.wake = asyncio.Event()
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="winnow-backend")
        self.batches = 0
        """Backend calls made so far (for tests and benchmarks)."""
        self.running = 0
        """Requests in the backend call under way."""

    async def submit(self, key: Hashable, item: Any, seed: int | None) -> Any:
        if len(self.pending) >= self.max_queue:
            raise QueueFull
        job = _Job(key, item, seed, asyncio.get_running_loop().create_future())
        self.pending.append(job)
        self.wake.set()
        return await job.future

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.wake.clear()
                await self.wake.wait()
            batch = await self._collect(loop)
            if not batch:  # every waiting client went away
                continue
            seed = batch[0].seed if batch[0].seed is not None else random.randrange(1 << 31)
            self.running = len(batch)
            try:
                results = await loop.run_in_executor(self.thread, self.run, [j.item for j in batch], batch[0].key, seed)
            except Exception as e:  # noqa: BLE001 -- the backend failed: every request of the batch gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            finally:
                self.running = 0
            self.batches += 1
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():  # a client that went away cancelled its future
                    job.future.set_result(result)

    async def _collect(self, loop) -> list[_Job]:
        """Wait out the window (or until the batch is full), then take up to max_batch jobs
        that share the first job's key, in arrival order."""
        key = self.pending[0].key
        deadline = loop.time() + self.window_s
        while sum(j.key == key for j in self.pending) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), remaining)
            except TimeoutError:
                break
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        while self.pending:
            job = self.pending.popleft()
            if job.key == key and len(batch) < self.max_batch and not job.future.done():
                batch.append(job)
            elif not job.future.done():
                rest.append(job)
        self.pending = rest
        return batch

    def close(self) -> None:
        self.thread.shutdown(wait=True)
