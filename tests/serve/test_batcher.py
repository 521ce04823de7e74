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


def test_a_cancelled_wait_leaves_the_queue_at_once():
    """A client gone while queued frees its place: the queue takes a new request at once,
    and the backend never sees the cancelled one."""
    seen = []

    def run(items, key, seed):
        seen.extend(items)
        return list(items)

    async def main():
        batcher = Batcher(run, window_s=0.0, max_batch=8, max_queue=2)
        gone = asyncio.ensure_future(batcher.submit("k", "gone", None))
        kept = asyncio.ensure_future(batcher.submit("k", "kept", None))
        await asyncio.sleep(0)
        assert len(batcher.pending) == 2
        gone.cancel()
        await asyncio.sleep(0)
        assert [j.item for j in batcher.pending] == ["kept"]
        late = asyncio.ensure_future(batcher.submit("k", "late", None))  # room again: no QueueFull
        loop = asyncio.create_task(batcher.run_forever())
        assert await asyncio.gather(kept, late) == ["kept", "late"]
        loop.cancel()
        batcher.close()

    asyncio.run(main())
    assert seen == ["kept", "late"]


def test_a_failing_batch_is_run_again_one_request_at_a_time():
    calls = []

    def run(items, key, seed):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("cannot sample 'bad'")
        return [f"ok:{item}" for item in items]

    async def main():
        batcher = Batcher(run, window_s=0.05, max_batch=8, max_queue=8)
        loop = asyncio.create_task(batcher.run_forever())
        got = await asyncio.gather(
            *(batcher.submit("k", item, None) for item in ("a", "bad", "c")), return_exceptions=True
        )
        loop.cancel()
        return got

    got = asyncio.run(main())
    assert got[0] == "ok:a" and got[2] == "ok:c" and isinstance(got[1], ValueError)
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
