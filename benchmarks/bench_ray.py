"""The Ray executor against the local one: per-shard overhead, and throughput with 1 and 2 workers.

    python benchmarks/bench_ray.py            # ~10 min on 2 busy cores
    python benchmarks/bench_ray.py --quick    # smoke sizes (~4 min)

Both parts call ``run_shards`` as the stages do, with the stages' own worker factories, on a
local Ray instance started here (``num_cpus=2``). Steady-state rates are read off the shard
files themselves: (last mtime - first mtime) / (shards - 1), so the pool's start-up (a Ray
worker process, imports, the model load) is left out of them and reported on its own
(time to the first shard file, minus one steady shard).

1. **Per-shard overhead.** The score worker with the ``length`` reward on shards of 8
   completions: the work itself takes microseconds, so a shard's time is what the executor
   adds (task submission, argument shipping, the atomic write with fsync, the result).
   Local and Ray with one worker, same tasks.
2. **Throughput.** The generate worker with SmolLM2-135M's architecture cut to 4 of its 30
   layers (random weights; the full model took minutes a shard on the shared machine) on
   shards of 2 prompts x N=4 x 16 new tokens: local (one process, torch on both cores),
   Ray with 1 worker (1 CPU) and Ray with 2 workers (1 CPU each).
3. **Inputs to the scaling model** (benchmarks/README.md): the atomic write of a shard of
   realistic size, and the start-up of a worker.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from results import check, print_checks, result

from winnow.config import ExecutorConfig, GenerateConfig, ScoreConfig
from winnow.executors import ShardTask, run_shards, write_shard
from winnow.records import Prompt
from winnow.stages.generate import GenerateWorkerFactory, shard_seed
from winnow.stages.score import ScoreWorkerFactory

SUBJECTS = ["a rainy Monday commute", "an office printer", "a kitchen table", "a parking garage"]


def timed_run(tasks: list[ShardTask], factory, executor: ExecutorConfig) -> dict:
    """Run the tasks into a fresh folder; wall time, time to the first shard, steady s/shard."""
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        start = time.time()
        report = run_shards(tasks, factory, folder, claim=lambda: None, executor=executor, desc=executor.name)
        wall = time.time() - start
        assert not report.failed, report.failed
        files = sorted(folder.glob("shard-*.jsonl"))
        stamps = sorted(p.stat().st_mtime_ns / 1e9 for p in files)
        assert len(stamps) == len(tasks)
        steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
        digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
        return {"wall": wall, "first": stamps[0] - start, "steady": steady, "digest": digest}
    finally:
        shutil.rmtree(folder)


def overhead(num_shards: int) -> list[dict]:
    completions = [
        {"prompt_id": f"p{i}", "sample_index": j, "model": "m", "text": "word " * (i % 7 + 1)}
        for i in range(num_shards)
        for j in range(8)
    ]
    tasks = [
        ShardTask(f"{i:05d}", [("prompt", c, {}) for c in completions[i * 8 : (i + 1) * 8]]) for i in range(num_shards)
    ]
    factory = ScoreWorkerFactory(ScoreConfig(reward_fn="length"))
    local = timed_run(tasks, factory, ExecutorConfig(name="local"))
    remote = timed_run(tasks, factory, ExecutorConfig(name="ray", workers=1, cpus_per_worker=1))
    print(f"\nper-shard time, trivial work ({num_shards} shards of 8 completions):")
    print(f"  local {local['steady'] * 1e3:.2f} ms | ray, 1 worker {remote['steady'] * 1e3:.2f} ms")
    extra = remote["steady"] - local["steady"]
    return [
        row("per-shard time, local executor (ms)", local["steady"] * 1e3, f"{num_shards} shards"),
        row("per-shard time, ray executor, 1 worker (ms)", remote["steady"] * 1e3, f"{num_shards} shards"),
        row("ray overhead per shard over local (ms)", extra * 1e3, "difference of the two above"),
        row("ray pool start-up, score worker (s)", remote["first"] - remote["steady"], "time to first shard"),
    ]


def small_policy(layers: int) -> str:
    """SmolLM2-135M's architecture and tokenizer cut to ``layers`` of its 30 layers, random
    weights, saved once: sized so a shard takes seconds on a shared 2-core machine."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from winnow.models import cache_dir, resolve_model

    folder = cache_dir() / f"bench-smollm2-{layers}-layers"
    if not (folder / "config.json").is_file():
        source = resolve_model("smollm2")
        config = AutoConfig.from_pretrained(source)
        config.num_hidden_layers = layers
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


def throughput(num_shards: int, layers: int) -> list[dict]:
    import torch

    config = GenerateConfig(
        models=[small_policy(layers)], n=4, max_new_tokens=16, batch_size=2, shard_size=2, device="cpu"
    )
    prompts = [
        Prompt(id=f"q{i}", text=f"Describe {SUBJECTS[i % len(SUBJECTS)]} in two sentences ({i}).")
        for i in range(2 * num_shards)
    ]
    tasks = [ShardTask(f"m0-{i:05d}", (prompts[2 * i : 2 * i + 2], shard_seed(0, 0, i))) for i in range(num_shards)]
    factory = GenerateWorkerFactory(config, 0, prompts)
    runs = {
        "local": ExecutorConfig(name="local"),
        "ray, 1 worker": ExecutorConfig(name="ray", workers=1, cpus_per_worker=1),
        "ray, 2 workers": ExecutorConfig(name="ray", workers=2, cpus_per_worker=1),
    }
    results = {name: timed_run(tasks, factory, executor) for name, executor in runs.items()}
    # A Ray actor runs torch on the one CPU it reserves; this row tells that apart from Ray itself.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results["local, torch on 1 thread"] = timed_run(tasks, factory, ExecutorConfig(name="local"))
    finally:
        torch.set_num_threads(threads)
    print(f"\nSmolLM2 cut to {layers} layers, {num_shards} shards of 2 prompts x N=4 x 16 tokens:")
    rows = []
    for name, r in results.items():
        print(f"  {name}: {1 / r['steady']:.3f} shards/s steady, first shard after {r['first']:.1f} s")
        rows.append(row(f"throughput, {name} (shards/s)", 1 / r["steady"], f"wall {r['wall']:.1f} s"))
    # torch's CPU results depend on its thread count (matrix products split their sums by
    # thread), so a Ray actor on 1 CPU matches a local run on 1 thread, not one on 2.
    same = len({results[k]["digest"] for k in ("ray, 1 worker", "ray, 2 workers", "local, torch on 1 thread")}) == 1
    rows.append(
        {
            "check": "shards identical: ray 1 worker, ray 2 workers, local on 1 thread",
            "measured": float(same),
            "target": "== 1",
            "passed": same,
            "detail": "local on 2 threads: "
            + ("identical too" if results["local"]["digest"] == results["ray, 1 worker"]["digest"] else "differs"),
        }
    )
    one, two = results["ray, 1 worker"], results["ray, 2 workers"]
    rows.append(row("ray speed-up, 2 workers over 1", one["steady"] / two["steady"], "2 cores, shared machine"))
    rows.append(row("ray pool start-up, SmolLM2 worker (s)", one["first"] - one["steady"], "worker + model load"))
    return rows


def shard_write(num_prompts: int = 32, n: int = 8, tokens: int = 200) -> list[dict]:
    """The atomic write (temp file, fsync, rename) of a shard of realistic size."""
    text = "word " * tokens
    rows = [
        {
            "prompt_id": f"p{i}",
            "sample_index": j,
            "model": "m",
            "text": text,
            "num_tokens": tokens,
            "finish_reason": "length",
        }
        for i in range(num_prompts)
        for j in range(n)
    ]
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-write-"))
    try:
        times = []
        for k in range(10):
            start = time.perf_counter()
            write_shard(folder, f"{k:05d}", rows)
            times.append(time.perf_counter() - start)
        size = (folder / "shard-00000.jsonl").stat().st_size
    finally:
        shutil.rmtree(folder)
    detail = f"{num_prompts} prompts x N={n} x {tokens} tokens, {size / 1e6:.2f} MB, local disk"
    return [row("atomic write of one generate shard (ms)", min(times) * 1e3, detail)]


def row(name: str, measured: float, detail: str) -> dict:
    """A measured row with no target."""
    return check(name, measured, "-", None, detail)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--overhead-shards", type=int, default=400, help="shards of the overhead part")
    p.add_argument("--generate-shards", type=int, default=16, help="shards of the throughput part")
    p.add_argument("--layers", type=int, default=4, help="layers of the SmolLM2 cut used for throughput")
    p.add_argument("--quick", action="store_true", help="smoke sizes")
    a = p.parse_args(argv)
    if a.quick:
        a.overhead_shards, a.generate_shards = 50, 6
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        print(f"load average before: {os.getloadavg()[0]:.1f} (the machine may be shared)")
        rows = overhead(a.overhead_shards) + throughput(a.generate_shards, a.layers) + shard_write()
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        ray.shutdown()
    print_checks(rows, title="Ray executor")
    return result("ray", rows)


if __name__ == "__main__":
    raise SystemExit(0 if main()["passed"] else 1)
