"""The serve batcher on its own: requests grouped by sampling key, in arrival order, bounded
batches, a full queue refused, and one failing backend call failing only its own batch."""

from __future__ import annotations

import asyncio

import pytest

from winnow.serve.batcher import Batcher, QueueFull


def test_batches_group_by_key_keep_order_and_respect_the_bound():
    calls = []

    def run(items, key, seed):
        calls.append((key, list(items), seed))
        return [f"{key}:{item}" for item in items]

    async def main():
        batcher = Batcher(run, window_s=0.05, max_batch=3, max_queue=100)
        loop = asyncio.create_task(batcher.run_forever())
        jobs = [("a", 0, 7), ("b", 1, None), ("a", 2, 9), ("a", 3, None), ("a", 4, None), ("b", 5, None)]
        got = await asyncio.gather(*(batcher.submit(key, item, seed) for key, item, seed in jobs))
        loop.cancel()
        batcher.close()
        return got

    got = asyncio.run(main())
    assert got == ["a:0", "b:1", "a:2", "a:3", "a:4", "b:5"]  # each request gets its own result
    assert [(key, items) for key, items, _ in calls] == [("a", [0, 2, 3]), ("b", [1, 5]), ("a", [4])]
    assert calls[0][2] == 7  # a batch is seeded by its first request's seed


def test_full_queue_and_a_failing_batch():
    def run(items, key, seed):
        if key == "bad":
            raise RuntimeError("backend down")
        return list(items)

    async def main():
        batcher = Batcher(run, window_s=0.01, max_batch=8, max_queue=2)
        first = asyncio.ensure_future(batcher.submit("bad", 1, None))
        second = asyncio.ensure_future(batcher.submit("ok", 2, None))
        await asyncio.sleep(0)  # both are queued; the loop has not started
        with pytest.raises(QueueFull):
            await batcher.submit("ok", 3, None)
        loop = asyncio.create_task(batcher.run_forever())
        with pytest.raises(RuntimeError, match="backend down"):
            await first
        assert await second == 2
        loop.cancel()
        batcher.close()

    asyncio.run(main())
