"""``winnow demo --task constraints``: rejection sampling on a task a verifier can check.

1. SmolLM2-135M-Instruct answers the shipped training prompts, each carrying one or two
   instructions in IFEval's schema (include a word, stay under a word count, no commas, a
   <<title>>, quotation marks, a P.S., forbidden words). IFEval's strict checker is the
   reward (share of the row's instructions followed); a completion passes at 1.0.
2. Sampling is adaptive (``winnow.adaptive``): STEP samples per open prompt at a time, up to
   MAX, and a prompt stops once one completion passes.
3. ``--strategy passing`` keeps up to K passing completions per prompt; the starting
   checkpoint is fine-tuned on them.
4. The starting and the fine-tuned model answer the held-out prompts (topics the training
   prompts do not use; ``winnow.evaluation``, what ``winnow eval`` runs, into ``RUN_DIR/eval/``); the report gives each one's strict pass rate of single samples,
   the gain with a paired bootstrap 95% interval (prompts resampled), the training run's
   pass@k and what adaptive sampling saved against a fixed MAX.
Every step goes through the same stage functions as ``winnow run``, so a rerun resumes.
"""

from __future__ import annotations

import json
import resource
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from winnow import figures, report, stages
from winnow.adaptive import sample_adaptive, score_adaptive
from winnow.config import AdaptiveConfig, EvalConfig, GenerateConfig, ScoreConfig, SelectConfig, TrainConfig
from winnow.demo import _timed, cost_summary
from winnow.evaluation import evaluate, model_dir
from winnow.models import SMOLLM2, resolve_model
from winnow.prompts import load_prompts
from winnow.records import atomic_write_json, atomic_write_text
from winnow.rundir import load_scored

REWARD = "winnow.verifiers.ifeval:ifeval"
PASS = 1.0
"""IFEval's prompt-level strict success: every instruction of the row followed."""
# 64 prompts a batch: with 2 samples each (an adaptive step) small batches leave the CPU idle
TRAIN: dict[str, Any] = dict(n=8, temperature=0.8, max_new_tokens=48, batch_size=64, shard_size=64, seed=0)
ADAPTIVE: dict[str, Any] = dict(step=2, stop_when="pass")
EVAL: dict[str, Any] = dict(n=4, temperature=0.8, max_new_tokens=48, batch_size=64, shard_size=64, seed=1)
SELECT: dict[str, Any] = dict(strategy="passing", k=2)
SFT: dict[str, Any] = dict(learning_rate=5e-5, epochs=3, batch_size=8, max_length=256, seed=0)
SEEDS = {"train": TRAIN["seed"], "held-out": EVAL["seed"], "sft": SFT["seed"], "bootstrap": 0}
"""What the figures depend on besides the machine (``winnow.figures``); adaptive steps derive theirs."""


def constraint_prompts():
    """The shipped prompts, split into (train, held-out) by their 'split' column."""
    path = Path(str(resources.files("winnow") / "data" / "constraints_prompts.jsonl"))
    prompts = load_prompts(path)
    return [p for p in prompts if p.columns["split"] == "train"], [
        p for p in prompts if p.columns["split"] == "heldout"
    ]


def run_constraints_demo(run_dir: str | Path, *, quick: bool = False) -> dict:
    run_dir = Path(run_dir)
    train_prompts, heldout = constraint_prompts()
    train_cfg, eval_cfg, sft_cfg, adaptive_cfg = dict(TRAIN), dict(EVAL), dict(SFT), dict(ADAPTIVE)
    if quick:  # a smoke run of every step; too small to measure anything
        train_prompts, heldout = train_prompts[:6], heldout[:6]
        train_cfg.update(n=2, max_new_tokens=8)
        eval_cfg.update(n=1, max_new_tokens=8)
        adaptive_cfg.update(step=1)
        sft_cfg.update(epochs=1)
    timings: dict[str, tuple[float, float]] = {}
    peaks: dict[str, float | None] = {}
    with _timed(timings, peaks, "convert model (once per machine)"):
        resolve_model(SMOLLM2)
    score = ScoreConfig(reward_fn=REWARD, pass_threshold=PASS)
    train_dir = run_dir / "train"
    with _timed(timings, peaks, "train: adaptive generate + score"):
        generate = GenerateConfig(models=[SMOLLM2], **train_cfg)
        sample_adaptive(train_dir, train_prompts, generate, score, AdaptiveConfig(**adaptive_cfg))
        score_adaptive(train_dir, score)  # the steps scored every completion already
    with _timed(timings, peaks, "train: select (passing) + sft"):
        stages.select(train_dir, SelectConfig(**SELECT))
        from winnow.sft import sft

        checkpoint = sft(train_dir, TrainConfig(model=SMOLLM2, **sft_cfg))["checkpoint"]
    with _timed(timings, peaks, "train: report (pass@k, adaptive savings)"):
        train_report = report.run_report(train_dir, iters=1000)
    # what `winnow eval` runs: both models on the held-out prompts with the same seeds
    evaluated = evaluate(
        run_dir / "eval",
        heldout,
        {"start": SMOLLM2, "fine-tuned": checkpoint},
        GenerateConfig(models=[SMOLLM2], **eval_cfg),
        score,
        EvalConfig(bootstrap_seed=SEEDS["bootstrap"]),
        step=lambda name: _timed(timings, peaks, name),
    )
    return write_report(run_dir, evaluated, train_report, timings, peaks)


def pass_rates(run_dir: Path, name: str) -> tuple[list, np.ndarray]:
    """Held-out prompts and the strict pass rate of each one's samples, shape (P,)."""
    prompts, _, rewards, _ = load_scored(model_dir(run_dir / "eval", name))
    with np.errstate(invalid="ignore"):
        return prompts, np.nanmean(np.where(np.isnan(rewards), np.nan, rewards >= PASS), axis=1)


def by_family(prompts, rates: np.ndarray) -> dict[str, float]:
    """Mean pass rate of the prompts holding each instruction family (a prompt may hold two)."""
    out: dict[str, list[float]] = {}
    for p, rate in zip(prompts, rates, strict=True):
        for iid in p.columns["instruction_id_list"]:
            out.setdefault(iid, []).append(float(rate))
    return {k: float(np.mean(v)) for k, v in sorted(out.items())}


def write_report(run_dir: Path, evaluated: dict, train_report: dict, timings: dict, peaks: dict) -> dict:
    """``evaluated``: the held-out evaluation's result (``winnow.evaluation``), its figures as they are."""
    names = [m["name"] for m in evaluated["models"]]
    rates = {name: pass_rates(run_dir, name) for name in names}
    prompts = rates[names[0]][0]
    gain = evaluated["gains"][0]
    peak_mb = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, *filter(None, peaks.values())])
    adaptive = train_report["adaptive"]
    pass_section = train_report["pass"]
    result = {
        "heldout_prompts": evaluated["prompts"],
        "samples_per_prompt": evaluated["samples_per_prompt"],
        "pass_at_1": {m["name"]: m["pass_at_1"] for m in evaluated["models"]},
        "gain": gain["pass_at_1_gain"],
        "gain_ci95": gain["pass_at_1_ci95"],
        "pass_at_1_by_family": {name: by_family(prompts, r) for name, (_, r) in rates.items()},
        "train": {
            "prompts": adaptive["prompts"],
            "samples": adaptive["samples"],
            "fixed_samples": adaptive["fixed_samples"],
            "saved_share": adaptive["saved_share"],
            "tokens": adaptive["tokens"],
            "prompts_with_a_pass": adaptive["passing_prompts"],
            "pass_at_k": dict(zip(pass_section["pass_at_k"]["k"], pass_section["pass_at_k"]["mean"], strict=True)),
            "selected": len(stages.load_selected(run_dir / "train")),
        },
        **cost_summary(timings, peaks, peak_mb),
        "machine": figures.machine(),
        "seeds": SEEDS,
    }
    atomic_write_json(run_dir / "report.json", result)
    atomic_write_text(run_dir / "report.md", markdown(result))
    _print(result, run_dir)
    return result


def markdown(r: dict) -> str:
    t = r["train"]
    families = sorted(r["pass_at_1_by_family"][next(iter(r["pass_at_1"]))])
    names = list(r["pass_at_1"])
    lines = [
        "# winnow constraints demo",
        "",
        f"Held-out strict pass rate of single samples ({r['heldout_prompts']} prompts x "
        f"{r['samples_per_prompt']} samples; IFEval's strict check, every instruction followed):",
        "",
        "| model | pass@1 |",
        "|---|---|",
        *[f"| {name} | {value:.3f} |" for name, value in r["pass_at_1"].items()],
        "",
        f"Gain {r['gain']:+.3f}, paired bootstrap 95% interval [{r['gain_ci95'][0]:+.3f}, {r['gain_ci95'][1]:+.3f}].",
        "",
        "| instruction family | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *[
            f"| {fam} | " + " | ".join(f"{r['pass_at_1_by_family'][n][fam]:.2f}" for n in names) + " |"
            for fam in families
        ],
        "",
        "## Training run (adaptive, stop at the first pass)",
        "",
        f"{t['samples']} completions sampled for {t['prompts']} prompts against {t['fixed_samples']} at a fixed N "
        f"({t['saved_share']:.1%} fewer), {t['tokens']} tokens; {t['prompts_with_a_pass']} prompts reached a "
        f"passing completion; {t['selected']} completions selected (strategy passing).",
        "",
        "pass@k over the first step's samples (every prompt got those): "
        + ", ".join(f"pass@{k} {v:.3f}" for k, v in t["pass_at_k"].items() if v is not None)
        + ". The training run's own report: train/report/report.md.",
        "",
        "## Time and memory",
        "",
        "| step | wall seconds | CPU seconds | peak memory (MB) |",
        "|---|---|---|---|",
        *[
            f"| {k} | {wall:.1f} | {r['cpu_seconds'][k]:.1f} | {r['peak_memory_mb_by_step'].get(k) or 0} |"
            for k, wall in r["seconds"].items()
        ],
        f"| total | {r['total_seconds']:.1f} | {r['total_cpu_seconds']:.1f} | {r['peak_memory_mb']} |",
        "",
    ]
    return "\n".join(lines)


def _print(r: dict, run_dir: Path) -> None:
    from rich.console import Console

    console = Console()
    for name, value in r["pass_at_1"].items():
        console.print(f"held-out pass@1 ({name}): {value:.3f}")
    console.print(f"gain {r['gain']:+.3f} [95% CI {r['gain_ci95'][0]:+.3f}, {r['gain_ci95'][1]:+.3f}]")
    t = r["train"]
    console.print(
        f"adaptive: {t['samples']} of {t['fixed_samples']} samples ({t['saved_share']:.1%} saved), "
        f"{t['prompts_with_a_pass']}/{t['prompts']} prompts passed"
    )
    console.print(
        f"total {r['total_seconds']:.0f} s wall, peak memory {r['peak_memory_mb']} MB; report: {run_dir / 'report.md'}"
    )
    console.print(figures.depends_on(r["machine"], r["seeds"]))
    recorded = figures.against_records("demo-constraints", r)
    if recorded:
        console.print(recorded)
    print(json.dumps({"report": str(run_dir / "report.json")}))
