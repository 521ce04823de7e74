"""``winnow report RUN_DIR``: what best-of-n buys and what selection did, for any scored run.

Reads ``generate`` and ``score`` (and ``select`` when it ran) and writes, under
``RUN_DIR/report/`` unless told otherwise:

    report.json          every number below
    report.md            the same as tables
    best_of_n.png        best-of-n reward with its bootstrap band, against n and against KL
    selected_vs_all.png  reward and length histograms, selected against all

Without a select stage, "selected" is the best completion of each prompt (what
``top_per_prompt`` and ``winnow bon`` pick).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow.errors import WinnowError
from winnow.records import atomic_write_json, atomic_write_text, read_jsonl
from winnow.report import plots
from winnow.report.passk import pass_stats
from winnow.report.stats import best_of_n_band, best_of_n_curve, best_of_n_kl, best_of_n_rows, completion_stats
from winnow.rundir import completed_manifest, load_scored, load_selected


def run_report(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    iters: int = 2000,
    seed: int = 0,
    pass_threshold: float | None = None,
) -> dict:
    """Compute the report of a scored run directory, write its files, and return report.json's dict.

    pass_threshold: a completion passes at reward >= this (default: the score stage's); with
    one, the report adds pass statistics (``winnow.report.passk``) and pass_rates.png.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "report"
    result = compute(run_dir, iters=iters, seed=seed, pass_threshold=pass_threshold)
    out.mkdir(parents=True, exist_ok=True)
    if result.get("pass"):
        p = result["pass"]
        plots.plot_pass(
            out / "pass_rates.png",
            np.array([np.nan if x is None else x for x in p["pass_rate_per_prompt"]], dtype=float),
            *(np.array(p["pass_at_k"][key], dtype=float) for key in ("mean", "low", "high")),
        )
    bon = result["best_of_n"]
    if bon["rows"]:
        plots.plot_best_of_n(
            out / "best_of_n.png",
            *(np.array(bon[key], dtype=float) for key in ("mean", "low", "high", "kl_upper_bound")),
        )
    groups = {name: (np.array(v["rewards"], dtype=float), np.array(v["tokens"])) for name, v in _groups(result)}
    if all(len(tokens) for _, tokens in groups.values()):
        plots.plot_selected_vs_all(out / "selected_vs_all.png", groups)
    clean = _json_ready({k: v for k, v in result.items() if not k.startswith("_")})
    atomic_write_json(out / "report.json", clean)
    atomic_write_text(out / "report.md", markdown(clean))
    return clean


def compute(run_dir: Path, *, iters: int = 2000, seed: int = 0, pass_threshold: float | None = None) -> dict:
    """Every number of the report (NaN where undefined); keys starting with _ hold plot data."""
    prompts, by_key, rewards, scored_manifest = load_scored(run_dir)
    generate = completed_manifest(run_dir, "generate")
    row_of = {p.id: i for i, p in enumerate(prompts)}
    all_rows = [{**c, "reward": _reward(rewards, row_of[c["prompt_id"]], c["sample_index"])} for c in by_key.values()]
    selection, selected_rows = _selection(run_dir, prompts, by_key, rewards)
    mean = best_of_n_curve(rewards)
    low, high = best_of_n_band(rewards, iters=iters, seed=seed)
    ns = np.arange(1, rewards.shape[1] + 1)
    result = {
        "prompts": len(prompts),
        "columns": int(rewards.shape[1]),
        "models": generate["config"]["generate"]["models"],
        "max_new_tokens": generate["config"]["generate"]["max_new_tokens"],
        "completions": len(all_rows),
        "unscored": int(np.isnan(rewards).sum()),
        "best_of_n": {
            "n": ns.tolist(),
            "mean": mean.tolist(),
            "low": low.tolist(),
            "high": high.tolist(),
            "kl_upper_bound": best_of_n_kl(ns).tolist(),
            "rows": int(best_of_n_rows(rewards).shape[0]),
            "bootstrap_iters": iters,
            "level": 0.95,
        },
        "selection": selection,
        "all": completion_stats(all_rows),
        "selected": completion_stats(selected_rows),
        "pairs": _pairs(run_dir),
        "adaptive": generate.get("adaptive"),
        "pass": _pass(prompts, by_key, rewards, generate, scored_manifest, pass_threshold, iters=iters, seed=seed),
        "_plot": {
            "all": {"rewards": [r["reward"] for r in all_rows], "tokens": [r["num_tokens"] for r in all_rows]},
            "selected": {
                "rewards": [r["reward"] for r in selected_rows],
                "tokens": [r["num_tokens"] for r in selected_rows],
            },
        },
    }
    return result


def _pass(prompts, by_key, rewards, generate: dict, scored: dict, threshold, *, iters: int, seed: int) -> dict | None:
    """Pass statistics when there is a threshold (given, else the score stage's); else None.

    An adaptive run stopped sampling a prompt once its rule was met, so its later columns
    are sampled more often for hard prompts: pass rates over them are biased. Its pass@k and
    votes use the first step's columns alone, which every prompt got (k up to the step).
    """
    if threshold is None:
        threshold = (scored["config"].get("score") or {}).get("pass_threshold")
    if threshold is None:
        return None
    from winnow.answers import answer_tools

    # a run scored by the math verifier votes with its reading and equality of answers
    reward_fn = (scored["config"].get("score") or {}).get("reward_fn")
    extract, equal = answer_tools("math" if reward_fn in ("math", ["math"]) else "auto")
    adaptive = generate.get("adaptive")
    columns = min(adaptive["step"], rewards.shape[1]) if adaptive else None
    answers = [
        [extract(by_key[(p.id, j)]["text"]) if (p.id, j) in by_key else None for j in range(rewards.shape[1])]
        for p in prompts
    ]
    stats = pass_stats(rewards, threshold, columns=columns, answers=answers, iters=iters, seed=seed, equal=equal)
    stats["pass_at_k_source"] = (
        f"first {columns} samples of every prompt (the adaptive run's first step)" if adaptive else "all samples"
    )
    return stats


def _reward(rewards: np.ndarray, i: int, j: int) -> float:
    return float(rewards[i, j]) if j < rewards.shape[1] else float("nan")


def _selection(run_dir: Path, prompts, by_key: dict, rewards: np.ndarray) -> tuple[dict, list[dict]]:
    """What was selected: the select stage's rows, or the best per prompt when it did not run."""
    if (run_dir / "select" / "manifest.json").exists():
        manifest = completed_manifest(run_dir, "select")
        rows = []
        pooled = _pooled_completions(run_dir, manifest)
        for r in load_selected(run_dir):
            key = (r["prompt_id"], r["sample_index"])
            completion = pooled.get((r["round"], *key)) if "round" in r else by_key.get(key)
            if completion is None:
                raise WinnowError(f"{run_dir}/select/selected.jsonl: {key} is not among the generated completions")
            rows.append({**completion, "reward": r["reward"]})
        summary = {k: v for k, v in manifest.items() if k not in ("config", "config_hash", "stage")}
        return {"source": "select stage", **manifest["config"]["select"], **summary}, rows
    best = sel.top_per_prompt(rewards)
    rows = [
        {**by_key[(p.id, j)], "reward": float(rewards[i, j])}
        for i, (p, j) in enumerate(zip(prompts, best.tolist(), strict=True))
        if j >= 0
    ]
    return {"source": "best per prompt (no select stage)", "strategy": "top_per_prompt"}, rows


def _pooled_completions(run_dir: Path, select_manifest: dict) -> dict:
    """(round, prompt_id, sample_index) -> completion, for a round folder whose selection
    pooled several rounds (``winnow.rounds``: its siblings are round-<r>/); else empty."""
    hashes = select_manifest["config"].get("score_hashes")
    if not hashes:
        return {}
    from winnow.pool import load_pool
    from winnow.rounds import round_dir

    pool = load_pool({int(r): round_dir(run_dir.parent, int(r)) for r in hashes})
    return {(pool.columns[j][0], prompt_id, pool.columns[j][1]): c for (prompt_id, j), c in pool.by_key.items()}


def _pairs(run_dir: Path) -> dict | None:
    """Preference pairs written by ``select --pairs``: count, margins, and lengths of each side."""
    path = run_dir / "select" / "pairs.jsonl"
    if not (run_dir / "select" / "manifest.json").exists() or not path.exists():
        return None
    rows = [row for _, row in read_jsonl(path)]
    if not rows:
        return {"count": 0}
    column = lambda key: np.array([r[key] for r in rows], dtype=float)  # noqa: E731
    return {
        "count": len(rows),
        "mean_margin": float(column("margin").mean()),
        "mean_chosen_reward": float(column("chosen_reward").mean()),
        "mean_rejected_reward": float(column("rejected_reward").mean()),
        "mean_chosen_tokens": float(column("chosen_tokens").mean()),
        "mean_rejected_tokens": float(column("rejected_tokens").mean()),
    }


def _groups(result: dict):
    return [(name, result["_plot"][name]) for name in ("all", "selected")]


def _json_ready(obj):
    """NaN and infinities become null, so report.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(r: dict) -> str:
    """report.md from report.json's dict."""
    bon, sel_info = r["best_of_n"], r["selection"]
    shown = sorted({n for n in bon["n"] if n & (n - 1) == 0} | {bon["n"][-1]}) if bon["n"] else []
    lines = [
        "# winnow report",
        "",
        f"{r['prompts']} prompts x {r['columns']} samples ({', '.join(map(str, r['models']))}), "
        f"{r['completions']} completions, {r['unscored']} unscored; max_new_tokens {r['max_new_tokens']}.",
        "",
        "## Best-of-n",
        "",
        f"Expected best reward of n samples per prompt (unbiased order-statistic estimator over "
        f"{bon['rows']} fully scored prompts), with a {bon['level']:.0%} percentile bootstrap band "
        f"(prompts resampled {bon['bootstrap_iters']} times). KL is log n - (n-1)/n, the analytic "
        "KL of best-of-n from the policy, which is an upper bound on the true KL (Beirami et al. 2024).",
        "",
        "| n | best-of-n reward | 95% band | KL upper bound (nats) |",
        "|---|---|---|---|",
        *[
            f"| {n} | {_fmt(bon['mean'][n - 1])} | [{_fmt(bon['low'][n - 1])}, {_fmt(bon['high'][n - 1])}] "
            f"| {bon['kl_upper_bound'][n - 1]:.3f} |"
            for n in shown
        ],
        "",
        "![best-of-n](best_of_n.png)",
        "",
        "## Selected against all",
        "",
        f"Selected: {sel_info['source']}, strategy {sel_info.get('strategy')}.",
        "",
        "| | all | selected |",
        "|---|---|---|",
    ]
    rows = [
        ("completions", "count", "d"),
        ("mean reward", "mean_reward", ".3f"),
        ("mean length (tokens)", "mean_tokens", ".1f"),
        ("share cut by max_new_tokens", "truncated_share", ".3f"),
        ("distinct-1", "distinct_1", ".3f"),
        ("distinct-2", "distinct_2", ".3f"),
        ("repeated texts within a prompt", "duplicates", "d"),
    ]
    lines += [f"| {label} | {_fmt(r['all'][k], f)} | {_fmt(r['selected'][k], f)} |" for label, k, f in rows]
    lines += ["", "Distinct-n falls as a set grows, so a smaller selected set reads higher for that reason alone."]
    removed = [
        f"{sel_info[k]} {label}"
        for k, label in (("duplicates_removed", "duplicates removed"), ("truncated_dropped", "truncated dropped"))
        if sel_info.get(k) is not None
    ]
    if removed:
        lines += ["", f"Before selecting: {', '.join(removed)}."]
    lines += ["", "![selected vs all](selected_vs_all.png)", ""]
    lines += _pass_markdown(r.get("pass"), r.get("adaptive"))
    if r["pairs"]:
        p = r["pairs"]
        lines += ["## Preference pairs", "", f"{p['count']} pairs."]
        if p["count"]:
            lines += [
                "",
                "| | chosen | rejected |",
                "|---|---|---|",
                f"| mean reward | {p['mean_chosen_reward']:.3f} | {p['mean_rejected_reward']:.3f} |",
                f"| mean length (tokens) | {p['mean_chosen_tokens']:.1f} | {p['mean_rejected_tokens']:.1f} |",
                "",
                f"Mean margin {p['mean_margin']:.3f}.",
            ]
        lines.append("")
    return "\n".join(lines)


def _pass_markdown(p: dict | None, adaptive: dict | None) -> list[str]:
    """report.md's pass and adaptive sections (empty without them)."""
    lines: list[str] = []
    if adaptive:
        a = adaptive
        lines += [
            "## Adaptive sampling",
            "",
            f"Rule `{a['stop_when']}`, {a['step']} samples per open prompt and step, at most {a['max']}: "
            f"{a['samples']} completions sampled against {a['fixed_samples']} for a fixed N = {a['max']} "
            f"({_fmt(a['saved_share'], '.1%')} fewer), {a['tokens']} tokens; {a['steps']} steps; "
            f"{a['closed']} of {a['prompts']} prompts met the rule.",
            "",
        ]
    if not p:
        return lines
    solved, pak = p["solved"], p["pass_at_k"]
    lines += [
        "## Pass statistics",
        "",
        f"A completion passes at reward >= {p['threshold']}. Mean per-prompt pass rate "
        f"{_fmt(p['mean_pass_rate'])}; of {solved['prompts']} prompts, solved by none "
        f"{_fmt(solved['none'], '.1%')}, some {_fmt(solved['some'], '.1%')}, all {_fmt(solved['all'], '.1%')} "
        "of their samples.",
        "",
        f"pass@k is the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k)/C(n, k), averaged over "
        f"{pak['rows']} fully scored prompts from {p['pass_at_k_source']}, with a 95% bootstrap band (prompts).",
        "",
        "| k | pass@k | 95% band |",
        "|---|---|---|",
    ]
    shown = sorted({k for k in pak["k"] if k & (k - 1) == 0} | ({pak["k"][-1]} if pak["k"] else set()))
    lines += [
        f"| {k} | {_fmt(pak['mean'][k - 1])} | [{_fmt(pak['low'][k - 1])}, {_fmt(pak['high'][k - 1])}] |" for k in shown
    ]
    if p.get("votes"):
        v = p["votes"]
        lines += [
            "",
            "maj@k: majority vote over the extracted answers of k samples drawn from the same columns "
            "(ties to the answer seen first); weighted@k: each answer weighs the sum of its rewards. "
            f"A vote passes when its chosen sample passes. {_fmt(v['answered_share'], '.1%')} of samples "
            "held an extractable answer.",
            "",
            "| k | maj@k | weighted@k |",
            "|---|---|---|",
            *[
                f"| {k} | {_fmt(m)} | {_fmt(w)} |"
                for k, m, w in zip(v["k"], v["maj_at_k"], v["weighted_at_k"], strict=True)
            ],
        ]
    lines += ["", "![pass rates](pass_rates.png)", ""]
    return lines
