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

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow.errors import WinnowError
from winnow.records import atomic_write_json, atomic_write_text, dir_mode, read_jsonl
from winnow.report import plots
from winnow.report.stats import best_of_n_band, best_of_n_curve, best_of_n_kl, best_of_n_rows, completion_stats
from winnow.rundir import completed_manifest, load_scored, load_selected


def run_report(run_dir: str | Path, *, out_dir: str | Path | None = None, iters: int = 2000, seed: int = 0) -> dict:
    """Compute the report of a scored run directory, write its files, and return report.json's dict."""
    run_dir = Path(run_dir)
    final = Path(out_dir) if out_dir else run_dir / "report"
    result = compute(run_dir, iters=iters, seed=seed)
    with staged_folder(final) as out:
        return _write_report(result, out)


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A temp folder beside ``final`` that replaces it only once everything is written.

    A kill while the report is written leaves the previous report (or none) and a
    ``.tmp-`` folder, never a ``report/`` missing some of its files; the next report
    removes such leftovers.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        yield tmp
        tmp.chmod(dir_mode())
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_report(result: dict, out: Path) -> dict:
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


def compute(run_dir: Path, *, iters: int = 2000, seed: int = 0) -> dict:
    """Every number of the report (NaN where undefined); keys starting with _ hold plot data."""
    prompts, by_key, rewards, scored = load_scored(run_dir)
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
        # the stages read, so `winnow verify` can tell a report made before they were redone
        "made_from": {"generate": generate["config_hash"], "score": scored["config_hash"]},
        "_plot": {
            "all": {"rewards": [r["reward"] for r in all_rows], "tokens": [r["num_tokens"] for r in all_rows]},
            "selected": {
                "rewards": [r["reward"] for r in selected_rows],
                "tokens": [r["num_tokens"] for r in selected_rows],
            },
        },
    }
    return result


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
        *(
            [f"No prompt has all {r['columns']} samples scored, so there is no best-of-n curve.", ""]
            if not bon["rows"]
            else []
        ),
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
