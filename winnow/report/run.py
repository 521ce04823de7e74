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
from winnow.records import atomic_write_json, atomic_write_text
from winnow.report import plots
from winnow.report.stats import best_of_n_band, best_of_n_curve, best_of_n_kl, best_of_n_rows
from winnow.report.streamed import CompletionArrays, array_stats
from winnow.rundir import completed_manifest
from winnow.stream import Cells, check_jsonl, iter_jsonl, load_scored_index


def run_report(run_dir: str | Path, *, out_dir: str | Path | None = None, iters: int = 2000, seed: int = 0) -> dict:
    """Compute the report of a scored run directory, write its files, and return report.json's dict."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "report"
    result = compute(run_dir, iters=iters, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
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
    """Every number of the report (NaN where undefined); keys starting with _ hold plot data.

    Streamed: per-completion numbers are arrays, texts are read from the shards only for
    distinct-n (``winnow.report.streamed``).
    """
    index, rewards, _ = load_scored_index(run_dir, hashes=True)
    generate = completed_manifest(run_dir, "generate")
    cells = Cells([index])
    rows, cols = np.divmod(index.order, rewards.shape[1])
    index.order = index.order[:0]  # now in rows and cols: 8 bytes a completion given back
    everything = _arrays(cells, rewards, rows.astype(np.int32), cols.astype(np.int32))
    del rows, cols
    selection, selected = _selection(run_dir, cells, rewards)
    mean = best_of_n_curve(rewards)
    low, high = best_of_n_band(rewards, iters=iters, seed=seed)
    ns = np.arange(1, rewards.shape[1] + 1)
    result = {
        "prompts": len(index.prompts),
        "columns": int(rewards.shape[1]),
        "models": generate["config"]["generate"]["models"],
        "max_new_tokens": generate["config"]["generate"]["max_new_tokens"],
        "completions": int(everything.rewards.size),
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
        "all": array_stats(everything, seed=seed),
        "selected": array_stats(selected, seed=seed),
        "pairs": _pairs(run_dir),
        "_plot": {
            "all": {"rewards": everything.rewards, "tokens": everything.tokens},
            "selected": {"rewards": selected.rewards, "tokens": selected.tokens},
        },
    }
    cells.close()
    return result


def _arrays(cells: Cells, rewards: np.ndarray, rows: np.ndarray, cols: np.ndarray, given=None) -> CompletionArrays:
    """The completions at cells (rows[k], cols[k]) as arrays; ``given``: their rewards, when
    not the matrix's (a selected row carries its own)."""
    assert cells.hashes is not None  # indexed with hashes=True
    values = rewards[rows, cols] if given is None else given
    return CompletionArrays(
        rewards=np.asarray(values, dtype=float),
        tokens=cells.num_tokens[rows, cols],  # int32: np.mean sums in float64 either way
        cut=cells.cut[rows, cols],
        prompt_row=rows,
        hashes=cells.hashes[rows, cols],
        size=cells.size[rows, cols],
        text=lambda k: (cells.row(int(rows[k]), int(cols[k])) or {})["text"],
    )


def _selection(run_dir: Path, cells: Cells, rewards: np.ndarray) -> tuple[dict, CompletionArrays]:
    """What was selected: the select stage's rows, or the best per prompt when it did not run."""
    if (run_dir / "select" / "manifest.json").exists():
        manifest = completed_manifest(run_dir, "select")
        pooled = _pooled_cells(run_dir, manifest)
        source = pooled[0] if pooled else cells
        path = run_dir / "select" / "selected.jsonl"
        check_jsonl(path, manifest["files"].get("selected.jsonl"), stage="select")
        rows, cols, given = [], [], []
        for _, r in iter_jsonl(path):
            key = (r["prompt_id"], r["sample_index"])
            i = source.row_of.get(r["prompt_id"])
            j = pooled[1].get((r["round"], r["sample_index"])) if pooled and "round" in r else r["sample_index"]
            if i is None or j is None or not 0 <= j < source.present.shape[1] or not source.present[i, j]:
                raise WinnowError(f"{run_dir}/select/selected.jsonl: {key} is not among the generated completions")
            rows.append(i)
            cols.append(j)
            given.append(np.nan if r["reward"] is None else r["reward"])
        summary = {k: v for k, v in manifest.items() if k not in ("config", "config_hash", "stage")}
        arrays = _arrays(
            source, rewards, np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), np.array(given)
        )
        return {"source": "select stage", **manifest["config"]["select"], **summary}, arrays
    best = sel.top_per_prompt(rewards)
    has = np.flatnonzero(best >= 0)
    arrays = _arrays(cells, rewards, has.astype(np.int64), best[has].astype(np.int64))
    return {"source": "best per prompt (no select stage)", "strategy": "top_per_prompt"}, arrays


def _pooled_cells(run_dir: Path, select_manifest: dict) -> tuple[Cells, dict] | None:
    """For a round folder whose selection pooled several rounds (``winnow.rounds``: its
    siblings are round-<r>/): their cells, and (round, sample_index) -> pooled column."""
    hashes = select_manifest["config"].get("score_hashes")
    if not hashes:
        return None
    from winnow.pool import load_pool_cells
    from winnow.rounds import round_dir

    pool = load_pool_cells({int(r): round_dir(run_dir.parent, int(r)) for r in hashes}, hashes=True)
    return pool.cells, {column: j for j, column in enumerate(pool.columns)}


def _pairs(run_dir: Path) -> dict | None:
    """Preference pairs written by ``select --pairs``: count, margins, and lengths of each side."""
    path = run_dir / "select" / "pairs.jsonl"
    if not (run_dir / "select" / "manifest.json").exists() or not path.exists():
        return None
    keys = ("margin", "chosen_reward", "rejected_reward", "chosen_tokens", "rejected_tokens")
    values: dict[str, list] = {key: [] for key in keys}
    for _, row in iter_jsonl(path):  # one pair at a time: only its numbers are kept
        for key in keys:
            values[key].append(row[key])
    if not values["margin"]:
        return {"count": 0}
    column = lambda key: np.array(values[key], dtype=float)  # noqa: E731
    return {
        "count": len(values["margin"]),
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
    sampled = [
        f"{name}: {r[name]['distinct_sample']:,}" for name in ("all", "selected") if r[name].get("distinct_sample")
    ]
    if sampled:  # too much text to count every n-gram: a uniform sample of completions
        lines += ["", f"Distinct-n computed on a uniform sample of completions ({', '.join(sampled)})."]
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
