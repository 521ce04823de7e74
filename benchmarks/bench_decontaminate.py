"""Benchmark the select stage's decontamination and near-dedup at 10^5 selected rows.

Run by hand: ``python benchmarks/bench_decontaminate.py`` (full size: 10^5 prompts x 2
completions against 10^4 eval items, several minutes on 2 cores) or ``--quick`` (10^4 x 2
against 10^3). Prints a markdown table; ``main(argv)`` returns the summary rows ``run_all.py`` collects.

The data: completions are slices (about 100 words) of a random Zipf text over 5,000 words;
eval items are slices (about 150 words) of another. Planted: 1% of prompts have their best
completion carry a 20-word span of an eval item (its next-best is clean), 1% have their
best completion copy another prompt's best with one word changed (a near-duplicate, Jaccard
about 0.9), 0.1% have a prompt that quotes an eval item. Random texts share no 13-gram by
chance, so what the filters find is what was planted; the table checks the counts.

Each select runs in a fresh process (``bench_scale.stage``): wall time, CPU time and peak
RSS (VmHWM) side by side with a plain select of the same run dir. Targets: decontamination
adds under 60 s and under 200 MB of peak RSS to the plain select at full size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from bench_scale import stage

C = 2
VOCAB = 5000


def reward(prompts, completions, **kw):
    """Sample 0 is each prompt's best: the reward is 1 for a text starting 'best', else 0."""
    return [1.0 if c.startswith("best ") else 0.0 for c in completions]


def texts_of(rng, count: int, mean_words: int) -> list[str]:
    words = np.array([f"w{k}" for k in range(VOCAB)])
    lengths = rng.integers(mean_words // 2, mean_words * 3 // 2, size=count)
    return [" ".join(words[rng.zipf(1.3, size=int(n)) % VOCAB].tolist()) for n in lengths]


def synthesize(folder: Path, m: int, items: int, seed: int = 0) -> dict:
    """prompts.jsonl, completions.jsonl and evals.jsonl in ``folder``; returns the planted counts."""
    rng = np.random.default_rng(seed)
    evals = texts_of(rng, items, 150)
    with open(folder / "evals.jsonl", "w") as f:
        for k, text in enumerate(evals):
            f.write(json.dumps({"id": f"e{k}", "question": f"item {k}", "answer": text}) + "\n")
    contaminated = set(rng.choice(m, size=m // 100, replace=False).tolist())
    rest = np.array(sorted(set(range(m)) - contaminated))
    near = set(rng.choice(rest, size=m // 100, replace=False).tolist())
    quoting = set(rng.choice(np.array(sorted(set(rest.tolist()) - near)), size=m // 1000, replace=False).tolist())
    with open(folder / "prompts.jsonl", "w") as f:
        for i in range(m):
            prompt = f"Question {i}: explain topic {i % 997} briefly."
            if i in quoting:
                prompt += " " + evals[i % items]
            f.write(json.dumps({"id": f"q{i}", "prompt": prompt}) + "\n")
    texts = texts_of(rng, m * C, 100)
    best = {i: "best " + texts[i * C] for i in range(m)}
    for i in sorted(contaminated):
        span = evals[i % items].split()[:20]
        best[i] = f"best {texts[i * C]} {' '.join(span)}"
    # each near-duplicate copies a distinct clean prompt's best, its last word changed
    clean = np.array(sorted(set(range(m)) - contaminated - near - quoting))
    for i, source in zip(sorted(near), rng.choice(clean, size=len(near), replace=False).tolist(), strict=True):
        best[i] = " ".join(best[source].split()[:-1] + ["changed"])
    with open(folder / "completions.jsonl", "w") as f:
        for i in range(m):
            for j in range(C):
                text = best[i] if j == 0 else texts[i * C + j]
                f.write(json.dumps({"prompt_id": f"q{i}", "text": text, "finish_reason": "stop"}) + "\n")
    return {"contaminated": len(contaminated), "near": len(near), "quoting": len(quoting)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^4 prompts against 10^3 eval items")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the run dir (default: a temp dir)")
    args = parser.parse_args(argv)
    m, items = (10_000, 1_000) if args.quick else (100_000, 10_000)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-decontam-"))
    folder = work / f"m{m}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    planted = synthesize(folder, m, items)
    run = folder / "run"
    stage(
        [
            "import",
            "--completions",
            folder / "completions.jsonl",
            "--prompts",
            folder / "prompts.jsonl",
            "--run-dir",
            run,
        ]
    )
    stage(["score", "--run-dir", run, "--reward-fn", f"{Path(__file__).resolve()}:reward"])
    evals = folder / "evals.jsonl"
    variants = {
        "plain": [],
        "--decontaminate": ["--decontaminate", evals],
        "--near-dedup": ["--near-dedup"],
        "both": ["--decontaminate", evals, "--near-dedup"],
    }
    results = {}
    for name, extra in variants.items():
        shutil.rmtree(run / "select", ignore_errors=True)
        results[name] = stage(["select", "--run-dir", run, *extra])
        results[name]["manifest"] = json.loads((run / "select" / "manifest.json").read_text())
    base = results["plain"]
    rows = [
        f"{m:,} prompts x {C} completions, {m:,} selected, against {items:,} eval items "
        f"(planted: {planted['contaminated']:,} contaminated best completions, {planted['quoting']:,} "
        f"prompts quoting an eval item, {planted['near']:,} near-duplicate best completions)",
        "",
        "| select | wall s | CPU s | peak RSS MB | + wall s | + RSS MB | left out |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        mf = r["manifest"]
        out = [
            f"{mf[k]:,} {label}"
            for k, label in (
                ("contaminated_prompts", "prompts"),
                ("contaminated_completions", "completions"),
                ("near_duplicates_removed", "near-dups"),
            )
            if k in mf
        ]
        rows.append(
            f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_mb']:.0f} | {r['wall'] - base['wall']:+.1f} | "
            f"{r['rss_mb'] - base['rss_mb']:+.0f} | {', '.join(out) or '-'} |"
        )
    d = results["--decontaminate"]
    found = (d["manifest"]["contaminated_prompts"], d["manifest"]["contaminated_completions"])
    near = results["--near-dedup"]["manifest"]["near_duplicates_removed"]
    selected = d["manifest"]["num_selected"]
    rows += [
        "",
        f"Found what was planted: {found == (planted['quoting'], planted['contaminated'])} (contamination), "
        f"{near == planted['near']} (near-dups); rows selected with --decontaminate: {selected:,} "
        f"(each contaminated best replaced by its clean next-best: {selected == m - planted['quoting']}).",
    ]
    added, rss = d["wall"] - base["wall"], d["rss_mb"] - base["rss_mb"]
    exact = found == (planted["quoting"], planted["contaminated"]) and near == planted["near"]
    size = "" if args.quick else " (<= 60 s and <= 200 MB at full size)"
    rows.append(f"Decontamination adds {added:.1f} s and {rss:.0f} MB to the plain select{size}.")
    checks = [
        ("decontaminate: wall s added to select", added, "<= 60", None if args.quick else added <= 60),
        ("decontaminate: peak RSS MB added to select", rss, "<= 200", None if args.quick else rss <= 200),
        ("near-dedup: wall s added to select", results["--near-dedup"]["wall"] - base["wall"], "-", None),
        ("found exactly what was planted", float(exact), "== 1", exact),
    ]
    print("\n".join(rows))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": [{"check": c, "measured": v, "target": t, "passed": p} for c, v, t, p in checks], "table": rows}


if __name__ == "__main__":
    main()
