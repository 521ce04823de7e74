"""What ``--on-error skip`` costs when nothing fails: the same stages under ``fail`` and
``skip``, side by side.

Run by hand: ``python benchmarks/bench_on_error.py`` (a few minutes on 2 shared cores;
``--quick`` for a smoke run). Two measurements, each repeated with the order of the two
settings alternated (fail, skip, skip, fail, ...) so that drift in the machine's load
falls on both alike:

1. **score**: 5,000 prompts x 16 imported completions scored by the built-in ``length``
   reward in shards of 1,024 (the default), the stage as ``winnow score`` runs it;
2. **generate**: 64 prompts x 4 completions of 8 tokens from the tiny 2-layer Llama of the
   tests (``tests/tiny_models.py``), shards of 16 prompts, on the CPU.

Each repeat runs the stage from scratch into a fresh folder. Prints a markdown table, in
wall time and in this process's CPU time (the one the load of other jobs on a shared
machine inflates least): the median under each setting, the median of the per-pair ratios
skip / fail and their range (min to max), which is the spread to read a ratio of about 1
against.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny models the tests build

from tiny_models import build_policy  # noqa: E402

from winnow.config import GenerateConfig, ScoreConfig  # noqa: E402
from winnow.importer import import_completions  # noqa: E402
from winnow.records import Prompt  # noqa: E402
from winnow.stages.generate import generate  # noqa: E402
from winnow.stages.score import score  # noqa: E402


def imported_run(folder: Path, prompts: int, n: int = 16) -> tuple[Path, list[Prompt]]:
    """A run dir whose generate stage holds ``prompts`` x ``n`` short imported completions."""
    rows = [Prompt(id=f"q{i}", text=f"question {i}") for i in range(prompts)]
    path = folder / "completions.jsonl"
    with open(path, "w") as f:
        for i in range(prompts):
            for j in range(n):
                f.write(json.dumps({"prompt_id": f"q{i}", "text": f"answer {j} " * (1 + (i + j) % 9)}) + "\n")
    run = folder / "base"
    import_completions(run, path, rows)
    return run, rows


def paired(run_one, repeats: int) -> dict:
    """Time ``run_one(setting, k)`` for each setting, ``repeats`` pairs in alternating order."""
    wall: dict[str, list[float]] = {"fail": [], "skip": []}
    cpu: dict[str, list[float]] = {"fail": [], "skip": []}
    for k in range(repeats):
        order = ("fail", "skip") if k % 2 == 0 else ("skip", "fail")
        for setting in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            run_one(setting, k)
            wall[setting].append(time.perf_counter() - start)
            cpu[setting].append(time.process_time() - start_cpu)
    out = {}
    for name, times in (("wall", wall), ("cpu", cpu)):
        ratios = [s / f for s, f in zip(times["skip"], times["fail"], strict=True)]
        out[name] = {
            "fail": statistics.median(times["fail"]),
            "skip": statistics.median(times["skip"]),
            "ratio": statistics.median(ratios),
            "low": min(ratios),
            "high": max(ratios),
        }
    return out


def bench_score(folder: Path, prompts: int, repeats: int) -> dict:
    base, _ = imported_run(folder, prompts)

    def run_one(setting: str, k: int) -> None:
        run = folder / f"score-{setting}-{k}"
        shutil.copytree(base, run)
        manifest = score(run, ScoreConfig(reward_fn="length", on_error=setting))
        assert manifest["errors"] == 0 and manifest["unscored"] == 0
        shutil.rmtree(run)

    return paired(run_one, repeats)


def bench_generate(folder: Path, prompts: int, repeats: int) -> dict:
    model = build_policy(folder / "policy")
    rows = [Prompt(id=f"g{i}", text=f"say something about {i}") for i in range(prompts)]

    def run_one(setting: str, k: int) -> None:
        run = folder / f"gen-{setting}-{k}"
        config = GenerateConfig(
            models=[str(model)], n=4, max_new_tokens=8, shard_size=16, device="cpu", on_error=setting
        )
        manifest = generate(run, rows, config)
        assert manifest["errors"] == 0
        shutil.rmtree(run)

    return paired(run_one, repeats)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10, help="pairs of runs per stage")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 pairs: a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 3 if args.quick else args.repeats
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        score_prompts = 500 if args.quick else 5000
        gen_prompts = 16 if args.quick else 64
        out.append({"stage": f"score, {score_prompts:,} x 16, length", **bench_score(folder, score_prompts, repeats)})
        out.append(
            {"stage": f"generate, {gen_prompts} x 4 x 8 tokens, tiny", **bench_generate(folder, gen_prompts, repeats)}
        )
    print(f"| stage | time | fail (s, median) | skip (s, median) | skip / fail, median of {repeats} pairs | range |")
    print("|---|---|---:|---:|---:|---|")
    for r in out:
        for kind in ("wall", "cpu"):
            t = r[kind]
            print(
                f"| {r['stage']} | {kind} | {t['fail']:.3f} | {t['skip']:.3f} | {t['ratio']:.3f} | "
                f"{t['low']:.3f} - {t['high']:.3f} |"
            )
    return out


if __name__ == "__main__":
    main()
