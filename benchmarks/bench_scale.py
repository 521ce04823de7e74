"""Scale: every stage after generation at M prompts x 16 completions, wall time and peak RSS.

Run by hand: ``python benchmarks/bench_scale.py --sizes 10000 100000`` (the 10^5 size writes
about 6 GB and takes tens of minutes on 2 cores), ``--quick`` (1,000 and 3,000 prompts) or
``--formats`` (the shard-format measurement alone). Each size:

1. writes M prompts and M x 16 synthetic completions (word counts lognormal with a mean of
   300 words; 5% of completions repeat another of the same prompt, 10% are cut);
2. ``winnow import`` into a run dir, then ``score`` with a Python reward (distinct words,
   a file:function reward), ``select --strategy top_per_prompt``, ``select --strategy
   top_k_overall --dedup`` (k = 10% of the completions, in a second run dir that links the
   same generate and score folders), ``report`` and ``verify``;
3. every stage is a process of its own: wall time, CPU time (user + system: on a shared
   machine the one the load of other jobs does not inflate), and peak RSS from the kernel
   (``VmHWM`` of the child).

Then the growth exponent of each stage: the slope of log(wall) and log(peak RSS) against
log(M) over the sizes run. Linear is 1.0; the target is wall within 1.2x of linear, and
RSS flat apart from the O(M x N) arrays.

``--formats`` times parsing one generate shard's lines (json, orjson, msgspec, pyarrow's
JSON reader into Arrow columns) and reading only keys and rewards from a score shard.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N = 16
MEAN_WORDS = 300
VOCAB = 5000


def reward(prompts, completions, **kw):
    """The benchmark's Python reward: distinct words per completion."""
    return [float(len(set(c.split()))) for c in completions]


def synthesize(folder: Path, m: int, seed: int = 0) -> tuple[Path, Path, int]:
    """prompts.jsonl and completions.jsonl for m prompts x N; returns their paths and the
    completions file's bytes."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{k}" for k in range(VOCAB)])
    # One long random text; a completion is a slice of it, so texts cost a copy each, not a join.
    corpus_words = words[rng.zipf(1.3, size=2_000_000) % VOCAB]
    corpus = " ".join(corpus_words.tolist())
    starts_per_word = np.cumsum([0] + [len(w) + 1 for w in corpus_words.tolist()])
    sigma = 0.6
    mu = math.log(MEAN_WORDS) - sigma**2 / 2  # lognormal with this mu and sigma has mean MEAN_WORDS
    prompts = folder / "prompts.jsonl"
    with open(prompts, "w") as f:
        for i in range(m):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: explain topic {i % 997} briefly."}) + "\n")
    completions = folder / "completions.jsonl"
    with open(completions, "w") as f:
        for i in range(m):
            lengths = np.clip(rng.lognormal(mu, sigma, size=N).astype(int), 1, 4000)
            firsts = rng.integers(0, len(corpus_words) - 4001, size=N)
            repeat = rng.random(N) < 0.05
            cut = rng.random(N) < 0.10
            texts: list[str] = []
            for j in range(N):
                if repeat[j] and j:
                    texts.append(texts[int(rng.integers(0, j))])
                    continue
                a, b = int(firsts[j]), int(firsts[j] + lengths[j])
                texts.append(corpus[starts_per_word[a] : starts_per_word[b] - 1])
            for j, text in enumerate(texts):
                row = {
                    "prompt_id": f"q{i}",
                    "text": text,
                    "model": "synthetic",
                    "finish_reason": "length" if cut[j] else "stop",
                    "num_tokens": int(len(text.split()) * 1.3),
                }
                f.write(json.dumps(row) + "\n")
    return prompts, completions, completions.stat().st_size


CHILD = r"""
import json, resource, sys, time
argv = json.loads(sys.argv[1])
from winnow.cli import main
start = time.perf_counter()
code = main(argv)
wall = time.perf_counter() - start
# VmHWM: the peak RSS of this process image (ru_maxrss would include the parent's before exec)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU time: what the load of other jobs does not inflate
print(json.dumps({"code": code, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": peak / 1024}))
"""


HERE = str(Path(__file__).resolve().parent)
PATH = os.environ.get("PYTHONPATH", "")


def stage(argv: list[str], source: Path | None = None) -> dict:
    """One winnow command in a fresh process: its wall time (in-process) and peak RSS.
    ``source``: a folder holding another ``winnow`` package to run instead (an older revision)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([str(a) for a in argv])],
        capture_output=True,
        text=True,
        # the benchmarks' folder on the path: a reward module named by file (bench_decontaminate's)
        # imports its sibling benchmarks as it does when run as a script
        env={
            **os.environ,
            "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [source and str(source), HERE, PATH])),
        },
    )
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not last.startswith("{"):
        raise RuntimeError(f"{argv[0]} failed: {out.stderr[-2000:]}")
    result = json.loads(last)
    if result["code"] != 0:
        raise RuntimeError(f"{argv[0]} exited {result['code']}: {out.stderr[-2000:]}")
    return result


def run_size(m: int, work: Path, keep: bool) -> dict:
    folder = work / f"m{m}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    prompts, completions, size = synthesize(folder, m)
    made = time.perf_counter() - start
    run, run2 = folder / "run", folder / "run-topk"
    fn = f"{Path(__file__).resolve()}:reward"
    k = max(1, m * N // 10)
    rows: dict[str, dict] = {}
    rows["import"] = stage(["import", "--completions", completions, "--prompts", prompts, "--run-dir", run])
    completions.unlink()  # the run dir holds them now; halves the disk the size needs
    rows["score"] = stage(["score", "--run-dir", run, "--reward-fn", fn])
    rows["select top_per_prompt"] = stage(["select", "--run-dir", run, "--strategy", "top_per_prompt"])
    run2.mkdir()
    for name in ("generate", "score"):
        (run2 / name).symlink_to(run / name)
    rows["select top_k_overall --dedup"] = stage(
        ["select", "--run-dir", run2, "--strategy", "top_k_overall", "--k", k, "--dedup"]
    )
    rows["report"] = stage(["report", run2, "--bootstrap-iters", 200])
    rows["verify"] = stage(["verify", run])
    data_plane = sum(r["wall"] for name, r in rows.items() if name != "import")
    data_plane_cpu = sum(r["cpu"] for name, r in rows.items() if name != "import")
    generate_bytes = sum(p.stat().st_size for p in (run / "generate").glob("shard-*.jsonl"))
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "m": m,
        "completions": m * N,
        "source_mb": size / 2**20,
        "generate_mb": generate_bytes / 2**20,
        "synth_s": made,
        "stages": rows,
        "data_plane_s": data_plane,
        "data_plane_cpu_s": data_plane_cpu,
    }


def slope(xs, ys) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0]) if len(xs) > 1 else float("nan")


def formats(m: int = 2000) -> list[str]:
    """Parse speed of one shard's worth of rows in each format; MB/s of the JSONL bytes."""
    import msgspec
    import orjson
    import pyarrow as pa
    import pyarrow.json as pj

    with tempfile.TemporaryDirectory() as tmp:
        _, completions, size = synthesize(Path(tmp), m // N)
        data = completions.read_bytes()
    lines = data.splitlines()
    decoder = msgspec.json.Decoder()

    class Keys(msgspec.Struct):
        prompt_id: str
        finish_reason: str
        num_tokens: int

    keys_decoder = msgspec.json.Decoder(Keys)
    methods = {
        "json.loads per line": lambda: [json.loads(x) for x in lines],
        "orjson.loads per line": lambda: [orjson.loads(x) for x in lines],
        "msgspec decode per line": lambda: [decoder.decode(x) for x in lines],
        "msgspec typed, no text field": lambda: [keys_decoder.decode(x) for x in lines],
        "pyarrow.json.read_json (Arrow columns)": lambda: pj.read_json(pa.BufferReader(data)),
    }
    out = [
        f"Parsing {len(lines):,} completion rows ({size / 2**20:.1f} MB of JSONL); best of 5.",
        "",
        "| method | MB/s | vs json |",
        "|---|---:|---:|",
    ]
    times = {}
    for name, fn in methods.items():
        best = math.inf
        for _ in range(5):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        times[name] = best
    base = times["json.loads per line"]
    for name, t in times.items():
        out.append(f"| {name} | {size / 2**20 / t:.0f} | {base / t:.2f}x |")
    return out


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--quick", action="store_true", help="sizes 1,000 and 3,000")
    p.add_argument("--formats", action="store_true", help="only the shard-format measurement")
    p.add_argument("--work", default=None, help="folder for the run dirs (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the run dirs")
    p.add_argument("--json", default=None, help="also write the measurements here")
    args = p.parse_args(argv)
    if args.formats:
        lines = formats()
        print("\n".join(lines))
        return lines
    sizes = [1000, 3000] if args.quick else args.sizes
    work = Path(args.work or tempfile.mkdtemp(prefix="winnow-scale-"))
    results = []
    for m in sizes:
        r = run_size(m, work, args.keep)
        results.append(r)
        print(f"M={m}: data plane {r['data_plane_s']:.1f} s ({r['data_plane_cpu_s']:.1f} CPU s); " + ", ".join(
            f"{name} {s['wall']:.1f} s ({s['cpu']:.1f} CPU s) / {s['rss_mb']:.0f} MB" for name, s in r["stages"].items()
        ), flush=True)  # fmt: skip
    names = list(results[0]["stages"])
    head = " | ".join(f"M={r['m']:,} wall s | CPU s | peak RSS MB" for r in results)
    lines = [
        f"M prompts x {N} completions, lognormal lengths (mean {MEAN_WORDS} words); "
        + ", ".join(f"M={r['m']:,}: {r['generate_mb']:,.0f} MB of generate shards" for r in results),
        "",
        f"| stage | {head} | wall exponent | CPU exponent | RSS exponent |",
        "|---|" + "---:|---:|---:|" * len(results) + "---:|---:|---:|",
    ]
    ms = [r["m"] for r in results]
    for name in names:
        st = [r["stages"][name] for r in results]
        cells = " | ".join(f"{s['wall']:.1f} | {s['cpu']:.1f} | {s['rss_mb']:.0f}" for s in st)
        walls, cpus, rss = ([s[k] for s in st] for k in ("wall", "cpu", "rss_mb"))
        lines.append(f"| {name} | {cells} | {slope(ms, walls):.2f} | {slope(ms, cpus):.2f} | {slope(ms, rss):.2f} |")
    planes = [r["data_plane_s"] for r in results]
    plane_cpu = [r["data_plane_cpu_s"] for r in results]
    lines.append(
        "| data plane (all but import) | "
        + " | ".join(f"{r['data_plane_s']:.1f} | {r['data_plane_cpu_s']:.1f} | -" for r in results)
        + f" | {slope(ms, planes):.2f} | {slope(ms, plane_cpu):.2f} | - |"
    )
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return lines


if __name__ == "__main__":
    main()
