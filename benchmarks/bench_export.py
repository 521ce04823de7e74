"""Export: ``winnow export`` of a run of M prompts x 16 completions, wall time and peak RSS.

Run by hand: ``python benchmarks/bench_export.py`` (10^4 and 10^5 prompts), ``--quick``
(10^3 and 10^4), or ``--sizes 100000``. Each size:

1. writes a finished generate stage (M prompts, M x 16 completions of lognormal length, mean
   60 words, in shards of 1,024 prompts) and a score stage (random rewards, 2% unscored) by
   hand, as ``tests/helpers.make_run`` does: minutes of sampling saved, the same files;
2. runs the real ``winnow select --pairs best-worst`` on it (its time is not the export's);
3. runs ``winnow export RUN --to DIR`` (selected rows and pairs) and ``winnow export RUN
   --to DIR --all-scored`` (and every completion), each in a fresh process: wall time, CPU
   time and peak RSS (``VmHWM``), as ``bench_scale.py`` measures a stage.

The target: under a minute at 10^5 prompts, and memory bounded, i.e. peak RSS grows far
slower than the data (the Parquet files are written a batch of rows at a time).

``--images`` measures a run whose prompts each hold their own image instead: M prompts
(``--sizes``, default 2,000) x 4 completions, one distinct PNG of random pixels each (about
50 KB, ``--image-side 128``), written by hand into ``RUN/images`` as the generate stage stores
them; then ``winnow export --all-scored`` in a fresh process, and with ``--baseline REV`` the
same export by the ``winnow`` package of git revision REV (``git archive`` into a temp
folder), side by side on the same run dir: wall time, CPU time, peak RSS, and whether the two
folders hold the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_scale import stage  # one command in a fresh process: wall, CPU time, peak RSS

from winnow.records import config_hash, file_record
from winnow.rundir import FORMAT

N = 16
SHARD_PROMPTS = 1024
MEAN_WORDS = 60


def write_run(run: Path, m: int, seed: int = 0, n: int = N, image_side: int = 0) -> int:
    """A finished generate and score stage of m prompts x n in ``run``; returns the bytes of
    the generate shards. ``image_side`` > 0: each prompt holds its own image, a PNG of random
    pixels of that side, stored once in ``run/images`` under its sha256."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{k}" for k in range(5000)])
    corpus_words = words[rng.zipf(1.3, size=1_000_000) % 5000].tolist()
    corpus = " ".join(corpus_words)
    starts = np.cumsum([0] + [len(w) + 1 for w in corpus_words])
    sigma = 0.6
    mu = math.log(MEAN_WORDS) - sigma**2 / 2
    gen, score = run / "generate", run / "score"
    gen.mkdir(parents=True)
    score.mkdir()
    prompts = [{"id": f"q{i}", "prompt": f"Question {i}: explain topic {i % 997} briefly."} for i in range(m)]
    if image_side:
        prompts = [with_image(run, p, rng, image_side) for p in prompts]
    (gen / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    shards = []
    for s, lo in enumerate(range(0, m, SHARD_PROMPTS)):
        name = f"m0-{s:05d}"
        lines = []
        for i in range(lo, min(lo + SHARD_PROMPTS, m)):
            lengths = np.clip(rng.lognormal(mu, sigma, size=n).astype(int), 1, 2000)
            firsts = rng.integers(0, len(corpus_words) - 2001, size=n)
            for j in range(n):
                a, b = int(firsts[j]), int(firsts[j] + lengths[j])
                row = {"prompt_id": f"q{i}", "sample_index": j, "model": "synthetic"}
                row |= {"text": corpus[starts[a] : starts[b] - 1], "num_tokens": int(lengths[j])}
                lines.append(json.dumps(row | {"finish_reason": "stop"}) + "\n")
        (gen / f"shard-{name}.jsonl").write_text("".join(lines))
        shards.append(name)
    config = {
        "format": FORMAT,
        "generate": {"models": ["synthetic"], "n": n, "temperature": 1.0, "max_new_tokens": 2000, "seed": seed},
        "prompts_hash": config_hash(prompts),
    }
    files = {p.name: file_record(p) for p in sorted(gen.iterdir())}
    manifest = {"format": FORMAT, "stage": "generate", "config": config, "config_hash": config_hash(config)}
    manifest |= {"files": files, "shards": shards, "num_columns": n, "num_prompts": m, "num_completions": m * n}
    (gen / "config.json").write_text(json.dumps(config))
    (gen / "manifest.json").write_text(json.dumps(manifest))
    rewards = rng.normal(size=(m, n))
    rewards[rng.random((m, n)) < 0.02] = np.nan
    np.save(score / "rewards.npy", rewards)
    config = {"format": FORMAT, "generate_hash": manifest["config_hash"], "score": {"reward_fn": "synthetic"}}
    scored = {"format": FORMAT, "stage": "score", "config": config, "config_hash": config_hash(config)}
    scored |= {"files": {"rewards.npy": file_record(score / "rewards.npy")}, "unscored": int(np.isnan(rewards).sum())}
    (score / "config.json").write_text(json.dumps(config))
    (score / "manifest.json").write_text(json.dumps(scored))
    return sum(files[f"shard-{s}.jsonl"]["bytes"] for s in shards)


def with_image(run: Path, prompt: dict, rng: np.random.Generator, side: int) -> dict:
    """``prompt`` as messages with one image part, its PNG of random pixels written to
    ``run/images/<sha256>.png`` (PNG cannot compress noise: about 3 bytes a pixel)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)).save(out, format="PNG")
    data = out.getvalue()
    name = f"images/{hashlib.sha256(data).hexdigest()}.png"
    (run / "images").mkdir(parents=True, exist_ok=True)
    (run / name).write_bytes(data)
    content = [{"type": "image"}, {"type": "text", "text": prompt["prompt"]}]
    return {"id": prompt["id"], "messages": [{"role": "user", "content": content}], "images": [name]}


def source_of(rev: str, folder: Path) -> Path:
    """The ``winnow`` package of git revision ``rev``, extracted into ``folder``."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "winnow"], capture_output=True, check=True)
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def folder_digest(folder: Path) -> str:
    """One sha256 over every file's relative path and bytes."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_images(m: int, work: Path, *, side: int, baseline: str | None) -> dict:
    """The ``--images`` measurement at m prompts: this code's export and the baseline's."""
    folder = work / f"images-m{m}"
    shutil.rmtree(folder, ignore_errors=True)
    run = folder / "run"
    write_run(run, m, n=4, image_side=side)
    images = sum(p.stat().st_size for p in (run / "images").iterdir())
    stage(["select", "--run-dir", run, "--pairs", "best-worst"])
    sources = {"this code": None}
    if baseline:
        sources[f"baseline {baseline}"] = source_of(baseline, folder / "baseline")
    rows, digests = {}, {}
    for name, source in sources.items():
        out = folder / f"out-{len(rows)}"
        rows[name] = stage(["export", run, "--to", out, "--all-scored"], source=source)
        digests[name] = folder_digest(out)
    same = len(set(digests.values())) == 1
    shutil.rmtree(folder, ignore_errors=True)
    return {"m": m, "images_mb": images / 2**20, "stages": rows, "same_bytes": same}


def images_table(results: list[dict]) -> list[str]:
    lines = [
        "| prompts x N | images (MB) | code | wall (s) | CPU (s) | peak RSS (MB) | same bytes |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        for name, s in r["stages"].items():
            lines.append(
                f"| {r['m']:,} x 4 | {r['images_mb']:,.1f} | {name} | {s['wall']:.1f} | {s['cpu']:.1f} | "
                f"{s['rss_mb']:,.0f} | {'yes' if r['same_bytes'] else 'NO'} |"
            )
    return lines


def run_size(m: int, work: Path) -> dict:
    folder = work / f"m{m}"
    shutil.rmtree(folder, ignore_errors=True)
    run = folder / "run"
    start = time.perf_counter()
    shard_bytes = write_run(run, m)
    made = time.perf_counter() - start
    rows = {"select --pairs best-worst": stage(["select", "--run-dir", run, "--pairs", "best-worst"])}
    rows["export"] = stage(["export", run, "--to", folder / "out"])
    rows["export --all-scored"] = stage(["export", run, "--to", folder / "out-all", "--all-scored"])
    parquet = {name: sum(p.stat().st_size for p in (folder / name).rglob("*.parquet")) for name in ("out", "out-all")}
    shutil.rmtree(folder, ignore_errors=True)
    return {"m": m, "shard_mb": shard_bytes / 2**20, "synth_s": made, "stages": rows, "parquet": parquet}


def table(results: list[dict]) -> list[str]:
    lines = [
        "| prompts | completions | generate shards | command | wall (s) | CPU (s) | peak RSS (MB) | Parquet (MB) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for name, s in r["stages"].items():
            out = {"export": "out", "export --all-scored": "out-all"}.get(name)
            size = f"{r['parquet'][out] / 2**20:,.1f}" if out else "-"
            lines.append(
                f"| {r['m']:,} | {r['m'] * N:,} | {r['shard_mb']:,.0f} MB | `{name}` | {s['wall']:.1f} | "
                f"{s['cpu']:.1f} | {s['rss_mb']:,.0f} | {size} |"
            )
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="prompts per run (default 10^4 and 10^5; --images: 2,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 prompts (--images: 200)")
    parser.add_argument("--work", type=Path, help="where the run dirs go (default: a temp folder)")
    parser.add_argument("--images", action="store_true", help="a run whose prompts each hold their own image")
    parser.add_argument("--image-side", type=int, default=128, help="--images: the PNGs' side in pixels")
    parser.add_argument("--baseline", help="--images: also export with the winnow of this git revision")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-export-"))
    if args.images:
        sizes = args.sizes or ([200] if args.quick else [2_000])
        found = [run_images(m, work, side=args.image_side, baseline=args.baseline) for m in sizes]
        lines = images_table(found)
        print("\n".join(lines))
        return lines
    sizes = [1_000, 10_000] if args.quick else (args.sizes or [10_000, 100_000])
    results = [run_size(m, work) for m in sizes]
    lines = table(results)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
