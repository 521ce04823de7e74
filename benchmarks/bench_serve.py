"""``winnow serve`` throughput with batching against one request at a time, and the cost of
generating through the OpenAI protocol against the in-process ``hf`` backend.

    python benchmarks/bench_serve.py            # tiny model and SmolLM2 (~15 min on 2 busy cores)
    python benchmarks/bench_serve.py --quick    # tiny model only, smaller sizes (~4 min)

1. Throughput. A ``winnow serve`` process (hf backend, CPU) is started twice per model:
   batched (``--max-batch-prompts 32 --batch-window-ms 10 --batch-size 32``) and one
   request at a time (``--max-batch-prompts 1 --batch-window-ms 0``). 1, 8 and 32
   concurrent clients (async httpx, one connection each) send chat requests (temperature
   1.0, ``max_tokens`` 32, distinct prompts) until each
   cell's requests are answered;
   requests/s and completion tokens/s (from ``usage``) over the cell's wall time.
   Target: batched >= 4x one-at-a-time in requests/s at 32 clients.
2. Protocol overhead. The same workload (tiny: 16 prompts x n=4 x 32 tokens; SmolLM2:
   8 prompts x n=4 x 32 tokens; one seed) through
   ``HFBackend.generate`` in this process and through ``OpenAIBackend.generate`` against
   the batched server (one request per prompt, all concurrent); the difference per request is what HTTP,
   JSON and the batching window cost. Interleaved, best of the repeats.

3. Streaming. A Best-of-N server (``--reward-fn length --best-of 4``, batched) takes chat
   requests with ``best_of`` 1 and 4, streamed (``stream: true``) and not, from 1, 8 and 32
   concurrent clients (``--streaming-requests`` each, ``max_tokens`` 32). Time to first
   token (TTFT): from sending to the first content delta (not streamed: the whole answer);
   latency: to the last byte. Median over the cell's requests. With ``best_of`` 1 tokens
   are streamed as they are sampled; with 4 the answer is chosen after every candidate is
   scored, so its TTFT is close to its latency (keep-alives meanwhile).

Threads: ``--threads`` (default 1) torch threads for the servers (``OMP_NUM_THREADS``) and
this process. On a shared, oversubscribed machine OpenMP's spinning threads make 2 threads
up to 25x slower than 1 (SmolLM2, 16 tokens: 78 s against 3 s, measured here).

Models: a random 2-layer Llama built in-process (``tiny``) and SmolLM2-135M-Instruct
(``smollm2``). The machine may be shared: cells run one after another, ratios are taken
within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

SUBJECTS = [
    "a rainy Monday commute",
    "an office printer",
    "a kitchen table",
    "a parking garage",
    "a bus timetable",
    "a pencil sharpener",
    "a laundry room",
    "a grocery receipt",
]
TARGET = 4.0
WORKLOADS = {
    # requests per cell (by concurrent clients), max_tokens, and the protocol-overhead workload
    "tiny": dict(cells={1: 8, 8: 64, 32: 128}, max_tokens=32, prompts=16, n=4),
    "smollm2": dict(cells={1: 4, 8: 16, 32: 32}, max_tokens=32, prompts=8, n=4),
}
QUICK = {"tiny": dict(cells={1: 2, 8: 8, 32: 32}, max_tokens=16, prompts=8, n=2)}


def prompt(i: int) -> str:
    return f"Describe {SUBJECTS[i % len(SUBJECTS)]} in two sentences (note {i})."


@contextlib.contextmanager
def server(model: str, *, batched: bool, threads: int = 1, extra: tuple[str, ...] = ()):
    port = _free_port()
    flags = ["--max-batch-prompts", "32", "--batch-window-ms", "10"] if batched else ["--max-batch-prompts", "1",
                                                                                      "--batch-window-ms", "0"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "winnow", "serve", "--model", model, "--served-model-name", "m", "--device", "cpu",
         "--port", str(port), "--batch-size", "32", "--max-queue", "4096", *flags, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError("winnow serve exited at start-up")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, clients: int, total: int, max_tokens: int) -> tuple[float, int, int]:
    """``clients`` concurrent clients share ``total`` requests; (seconds, requests, tokens)."""
    counter = iter(range(total))
    tokens = 0

    async def client() -> None:
        nonlocal tokens
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=1)) as http:
            for i in counter:
                body = {"model": "m", "messages": [{"role": "user", "content": prompt(i)}], "max_tokens": max_tokens}
                r = await http.post(f"{url}/v1/chat/completions", json=body)
                r.raise_for_status()
                tokens += r.json()["usage"]["completion_tokens"]

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, total, tokens


def throughput(model: str, name: str, sizes: dict[int, int], max_tokens: int, threads: int) -> list[dict]:
    rows = []
    for batched in (True, False):
        with server(model, batched=batched, threads=threads) as url:
            asyncio.run(load(url, 1, 1, max_tokens))  # warm-up
            for clients, total in sizes.items():
                seconds, requests, tokens = asyncio.run(load(url, clients, total, max_tokens))
                rows.append(
                    dict(model=name, batched=batched, clients=clients, requests=requests, seconds=seconds,
                         rps=requests / seconds, tps=tokens / seconds)
                )  # fmt: skip
                print(f"  {name} {'batched' if batched else 'one at a time'} {clients:>2} clients: "
                      f"{requests / seconds:6.2f} req/s {tokens / seconds:7.1f} tok/s ({seconds:.1f} s)", flush=True)  # fmt: skip
    return rows


async def stream_load(url: str, clients: int, per_client: int, best_of: int, streamed: bool, max_tokens: int):
    """``clients`` concurrent clients, ``per_client`` requests each; (TTFTs, latencies) in seconds."""
    ttfts: list[float] = []
    latencies: list[float] = []

    async def client(c: int) -> None:
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=1)) as http:
            for k in range(per_client):
                body = {"model": "m", "messages": [{"role": "user", "content": prompt(c * per_client + k)}],
                        "max_tokens": max_tokens, "best_of": best_of, "stream": streamed}  # fmt: skip
                start = time.perf_counter()
                first = None
                async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if first is None and (not streamed or ('"content":"' in line and '"content":""' not in line)):
                            first = time.perf_counter()
                end = time.perf_counter()
                ttfts.append((first or end) - start)
                latencies.append(end - start)

    await asyncio.gather(*(client(c) for c in range(clients)))
    return ttfts, latencies


def streaming(model: str, name: str, per_client: int, max_tokens: int, threads: int) -> list[dict]:
    import statistics

    cells = []
    extra = ("--reward-fn", "length", "--best-of", "4")
    with server(model, batched=True, threads=threads, extra=extra) as url:
        asyncio.run(stream_load(url, 1, 1, 1, True, max_tokens))  # warm-up
        for clients in (1, 8, 32):
            for best_of in (1, 4):
                for streamed in (True, False):  # side by side, same server, one after the other
                    ttfts, latencies = asyncio.run(stream_load(url, clients, per_client, best_of, streamed, max_tokens))
                    cell = dict(model=name, clients=clients, best_of=best_of, streamed=streamed,
                                ttft=statistics.median(ttfts), latency=statistics.median(latencies))  # fmt: skip
                    cells.append(cell)
                    print(f"  {name} {clients:>2} clients best_of {best_of} {'streamed' if streamed else 'whole   '}: "
                          f"TTFT p50 {cell['ttft'] * 1000:7.0f} ms, latency p50 {cell['latency'] * 1000:7.0f} ms",
                          flush=True)  # fmt: skip
    return cells


def overhead(model: str, name: str, prompts: int, n: int, max_tokens: int, repeats: int, threads: int) -> dict:
    """Seconds for the same generate call in-process (hf) and through winnow serve (openai)."""
    from winnow.generate import Sampling
    from winnow.generate.hf import HFBackend
    from winnow.generate.openai_api import OpenAIBackend
    from winnow.records import Prompt
    from winnow.remote import ClientSettings

    rows = [Prompt(id=f"p{i}", text=prompt(i)) for i in range(prompts)]
    sampling = Sampling(n=n, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_tokens)
    hf = HFBackend(model, device="cpu", batch_size=prompts)
    best = {"hf": float("inf"), "openai": float("inf")}
    tokens = {}
    with server(model, batched=True, threads=threads) as url:
        remote = OpenAIBackend("m", client=ClientSettings(base_url=f"{url}/v1", concurrency=prompts), endpoint="chat")
        remote.generate(rows[:1], sampling, seed=0)  # warm-up, and learns how the server takes n
        hf.generate(rows[:1], sampling, seed=0)
        for r in range(repeats):
            for label, backend in (("hf", hf), ("openai", remote)):
                start = time.perf_counter()
                out = backend.generate(rows, sampling, seed=r)
                best[label] = min(best[label], time.perf_counter() - start)
                tokens[label] = sum(c.num_tokens for c in out)
    per_request = (best["openai"] - best["hf"]) / prompts
    print(f"  {name}: hf {best['hf']:.2f} s, openai via winnow serve {best['openai']:.2f} s "
          f"({prompts} requests of n={n}): {per_request * 1000:+.0f} ms per request", flush=True)  # fmt: skip
    workload = f"{prompts} prompts x n={n} x {max_tokens} tokens"
    return dict(model=name, hf=best["hf"], openai=best["openai"], per_request=per_request, workload=workload)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, smaller sizes")
    parser.add_argument("--models", nargs="*", choices=list(WORKLOADS), help="run just these models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the servers and this process")
    parser.add_argument("--only-streaming", action="store_true", help="run just the streaming cells")
    parser.add_argument("--streaming-requests", type=int, default=2, help="requests per client in a streaming cell")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from conftest import build_policy

    workloads = QUICK if args.quick else {k: v for k, v in WORKLOADS.items() if k in (args.models or WORKLOADS)}
    models = {}
    if "tiny" in workloads:
        models["tiny"] = str(build_policy(Path(tempfile.mkdtemp(prefix="winnow-bench-")) / "tiny"))
    if "smollm2" in workloads:
        from winnow.models import resolve_model

        models["smollm2"] = str(resolve_model("smollm2"))
    rows = []
    if not args.only_streaming:
        rows += batching_and_overhead(models, workloads, args)
    print("\n## Streaming: time to first token and latency, streamed and not\n")
    stream_cells = []
    for name, model in models.items():
        stream_cells += streaming(model, name, args.streaming_requests, workloads[name]["max_tokens"], args.threads)
    print("\n| model | clients | best_of | TTFT streamed | TTFT whole | latency streamed | latency whole |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c in stream_cells:
        if c["streamed"]:
            w = next(
                x
                for x in stream_cells
                if not x["streamed"] and all(x[k] == c[k] for k in ("model", "clients", "best_of"))
            )
            print(f"| {c['model']} | {c['clients']} | {c['best_of']} | {c['ttft'] * 1000:.0f} ms | {w['ttft'] * 1000:.0f} ms "
                  f"| {c['latency'] * 1000:.0f} ms | {w['latency'] * 1000:.0f} ms |")  # fmt: skip
            rows.append(dict(check=f"serve {c['model']}: streamed TTFT / whole-answer time, {c['clients']} clients, "
                             f"best_of {c['best_of']}", measured=c["ttft"] / w["ttft"], target="-", passed=None,
                             detail=""))  # fmt: skip
    return {"benchmark": "serve", "rows": rows, "passed": all(r["passed"] is not False for r in rows)}


def batching_and_overhead(models: dict, workloads: dict, args) -> list[dict]:
    print("## winnow serve: batched vs one request at a time\n")
    cells = []
    for name, model in models.items():
        cells += throughput(model, name, workloads[name]["cells"], workloads[name]["max_tokens"], args.threads)
    print(
        "\n| model | clients | batched req/s | one-at-a-time req/s | batched tok/s | one-at-a-time tok/s | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in models:
        for clients in workloads[name]["cells"]:
            b, s = (next(c for c in cells if c["model"] == name and c["clients"] == clients and c["batched"] is x)
                    for x in (True, False))  # fmt: skip
            ratio = b["rps"] / s["rps"]
            print(
                f"| {name} | {clients} | {b['rps']:.2f} | {s['rps']:.2f} | {b['tps']:.0f} | {s['tps']:.0f} | {ratio:.1f}x |"
            )
            if clients == 32:
                # a --quick run's cells are too short to judge the batching (as results.checks leaves them)
                rows.append(dict(check=f"serve {name}: batched / one at a time, 32 clients (req/s)", measured=ratio,
                                 target=f">= {TARGET}", passed=None if args.quick else ratio >= TARGET,
                                 detail=""))  # fmt: skip
    print("\n## Generation through --backend openai against winnow serve vs in-process hf\n")
    costs = []
    for name, model in models.items():
        w = workloads[name]
        costs.append(overhead(model, name, w["prompts"], w["n"], w["max_tokens"], 1 if args.quick else 2, args.threads))
    print("\n| model | workload | in-process hf | openai via winnow serve | overhead per request |")
    print("|---|---|---:|---:|---:|")
    for c in costs:
        print(f"| {c['model']} | {c['workload']} | {c['hf']:.2f} s | {c['openai']:.2f} s "
              f"| {c['per_request'] * 1000:+.0f} ms |")  # fmt: skip
        rows.append(dict(check=f"openai backend overhead per request, {c['model']} (ms)",
                         measured=c["per_request"] * 1000, target="-", passed=None, detail=""))  # fmt: skip
    return rows


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["passed"] else 1)
