"""Keeping a server busy: ``winnow generate --backend openai`` with shards one after another
against overlapping shards, on a local server whose requests take a random time.

Run by hand: ``python benchmarks/bench_overlap.py`` (about 3 minutes) or ``--quick``.

The server (``tests/serving.FakeServer``, a real HTTP server in this process) answers each
request after a delay drawn from a lognormal distribution (mean ``--mean-delay`` s, sigma 1:
most requests are quick, a few take several times the mean), the same delay for the same
request in every run. With ``--concurrency C`` requests in flight the most a client can get
is C / mean delay requests per second; utilisation is the measured rate over that ideal.
Shards one after another wait, at the end of each shard, for its slowest request with the
server mostly idle; overlapping shards fill the freed slots with the next shard's requests.
Both modes run side by side, interleaved, at each shard size, and their rows are compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from serving import FakeServer

from winnow.cli import main as winnow
from winnow.stages.generate import GenerateWorker


def delay_of(mean: float):
    sigma = 1.0
    mu = math.log(mean) - sigma**2 / 2

    def fault(count, body):
        # a pure function of the request: both modes see the same delay for the same request
        h = int.from_bytes(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()[:8], "little")
        u1, u2 = ((h & 0xFFFFFFFF) + 1) / 2**32, ((h >> 32) + 1) / 2**32
        z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
        time.sleep(math.exp(mu + sigma * z))
        return None

    return fault


def run_once(folder: Path, url: str, shard_size: int, concurrency: int, overlapped: bool, name: str) -> float:
    GenerateWorker.pipelined = property(lambda self: hasattr(self.backend, "submit") and overlapped)  # type: ignore[method-assign,assignment]
    start = time.perf_counter()
    code = winnow(
        [
            "generate", "--prompts", str(folder / "prompts.jsonl"), "--run-dir", str(folder / name),
            "--backend", "openai", "--base-url", url, "--model", "fake-model", "--n", "1",
            "--max-new-tokens", "8", "--shard-size", str(shard_size), "--concurrency", str(concurrency),
        ]
    )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"generate exited {code}")
    return time.perf_counter() - start


def shards(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "generate").glob("shard-*.jsonl"))}


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=1024)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--mean-delay", type=float, default=0.25)
    p.add_argument("--shard-sizes", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--quick", action="store_true", help="256 prompts, shard sizes 16 and 64")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.shard_sizes = 256, [16, 64]
    ideal = args.concurrency / args.mean_delay
    lines = [
        f"{args.prompts} prompts x 1 request, concurrency {args.concurrency}, lognormal delay "
        f"(mean {args.mean_delay} s, sigma 1): ideal {ideal:.0f} requests/s",
        "",
        "| shard size | one after another req/s | utilisation | overlapping req/s | utilisation | speed-up | same rows |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    original = GenerateWorker.pipelined
    with tempfile.TemporaryDirectory() as tmp, FakeServer(fault=delay_of(args.mean_delay)) as server:
        folder = Path(tmp)
        rows = "".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(args.prompts))
        (folder / "prompts.jsonl").write_text(rows)
        try:
            for size in args.shard_sizes:
                seq = run_once(folder, server.url, size, args.concurrency, False, f"seq-{size}")
                ovl = run_once(folder, server.url, size, args.concurrency, True, f"ovl-{size}")
                same = shards(folder / f"seq-{size}") == shards(folder / f"ovl-{size}")
                rs, ro = args.prompts / seq, args.prompts / ovl
                lines.append(
                    f"| {size} | {rs:.1f} | {rs / ideal:.0%} | {ro:.1f} | {ro / ideal:.0%} | {ro / rs:.2f}x | {same} |"
                )
                print(lines[-1], flush=True)
        finally:
            GenerateWorker.pipelined = original  # type: ignore[method-assign]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
