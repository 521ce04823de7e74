"""``winnow report RUN_DIR``: what best-of-n buys and what selection did, for any scored run.

Reads ``generate`` and ``score`` (and ``select`` when it ran) and writes, under
``RUN_DIR/report/`` unless told otherwise:

    report.json          every number below
    report.md            the same as tables
    best_of_n.png        best-of-n reward with its bootstrap band, against n and against KL
    selected_vs_all.png  reward and length histograms, selected against all
    eval_curve.png       held-out reward of the start and the checkpoint, for a run with --eval-prompts

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
from winnow import summary
from winnow.errors import WinnowError
from winnow.records import atomic_write_json, atomic_write_text, dir_mode
from winnow.report import evals, plots
from winnow.report.judges import judge_sections, judges_markdown
from winnow.report.passk import pass_stats
from winnow.report.stats import best_of_n_band, best_of_n_curve, best_of_n_kl, best_of_n_rows
from winnow.report.streamed import CompletionArrays, array_stats
from winnow.rundir import completed_manifest
from winnow.stream import Cells, check_jsonl, iter_jsonl, load_scored_index


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
    final = Path(out_dir) if out_dir else run_dir / "report"
    result = compute(run_dir, iters=iters, seed=seed, pass_threshold=pass_threshold)
    with staged_folder(final) as out:
        return _write_report(result, out)


def rounds_to_report(run_dir: str | Path) -> list[int]:
    """The rounds a report of ``run_dir`` covers: every ``round-<r>`` when it is a rounds
    run's folder (``run --rounds``: no stage folders of its own), else [] (one run dir).
    Each round is an ordinary run dir, reported into ``round-<r>/report`` (or OUT/round-<r>)."""
    from winnow.rounds import rounds_in

    run_dir = Path(run_dir)
    return [] if (run_dir / "generate").exists() else rounds_in(run_dir)


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
    if result.get("eval"):
        evals.draw(result["eval"], out / evals.CURVE)
    clean = _json_ready({k: v for k, v in result.items() if not k.startswith("_")})
    atomic_write_json(out / "report.json", clean)
    atomic_write_text(out / "report.md", markdown(clean))
    return clean


def _best_of_n(rewards: np.ndarray, adaptive: dict | None, *, iters: int, seed: int) -> dict:
    """The best-of-n curve of an M x N reward matrix, its bootstrap band and KL bound."""
    # An adaptive run sampled a prompt's later columns only while its rule was unmet: the
    # prompts scored in every column are the hard ones, so best-of-n over them reads low.
    # The first step's columns, which every prompt got, give the unbiased curve (as pass@k).
    first = min(adaptive["step"], rewards.shape[1]) if adaptive else rewards.shape[1]
    curve = rewards[:, :first]
    low, high = best_of_n_band(curve, iters=iters, seed=seed)
    ns = np.arange(1, first + 1)
    return {
        "source": _source(adaptive, first),
        "n": ns.tolist(),
        "mean": best_of_n_curve(curve).tolist(),
        "low": low.tolist(),
        "high": high.tolist(),
        "kl_upper_bound": best_of_n_kl(ns).tolist(),
        "rows": int(best_of_n_rows(curve).shape[0]),
        "bootstrap_iters": iters,
        "level": 0.95,
    }


def compute(run_dir: Path, *, iters: int = 2000, seed: int = 0, pass_threshold: float | None = None) -> dict:
    """Every number of the report (NaN where undefined); keys starting with _ hold plot data.

    Streamed: per-completion numbers are arrays, texts are read from the shards only for
    distinct-n (``winnow.report.streamed``).
    """
    index, rewards, scored = load_scored_index(run_dir, hashes=True)
    generate = completed_manifest(run_dir, "generate")
    cells = Cells([index])
    rows, cols = np.divmod(index.order, rewards.shape[1])
    index.order = index.order[:0]  # now in rows and cols: 8 bytes a completion given back
    everything = _arrays(cells, rewards, rows.astype(np.int32), cols.astype(np.int32))
    del rows, cols
    selection, selected = _selection(run_dir, cells, rewards)
    adaptive = generate.get("adaptive")
    result = {
        "prompts": len(index.prompts),
        "columns": int(rewards.shape[1]),
        "models": generate["config"]["generate"]["models"],
        "max_new_tokens": generate["config"]["generate"]["max_new_tokens"],
        "completions": int(everything.rewards.size),
        # sampled and left without a reward; an adaptive run's cells it never sampled are apart
        "unscored": int((np.isnan(rewards) & cells.present).sum()),
        "never_sampled": int((~cells.present).sum()),
        # rows that failed and were skipped (on_error: skip), each in its stage's errors.jsonl
        "errors": {"generate": generate.get("errors", 0), "score": scored.get("errors", 0)},
        # what the API requests used (and cost, with a price): the openai backend's, the judge's
        "api_usage": {
            k: v for k, v in (("generate", generate.get("usage")), ("judge", scored.get("judge_usage"))) if v
        },
        "best_of_n": _best_of_n(rewards, adaptive, iters=iters, seed=seed),
        "selection": selection,
        "all": array_stats(everything, seed=seed),
        "selected": array_stats(selected, seed=seed),
        "pairs": _pairs(run_dir),
        # the stages read, so `winnow verify` can tell a report made before they were redone
        "made_from": {"generate": generate["config_hash"], "score": scored["config_hash"]},
        "adaptive": adaptive,
        "eval": evals.read(run_dir),  # the held-out evaluation of `run --eval-prompts`, when it ran
        "pass": _pass(cells.prompts, cells.by_key(), rewards, generate, scored, pass_threshold, iters=iters, seed=seed),
        **judge_sections(run_dir, scored),
        "_plot": {
            "all": {"rewards": everything.rewards, "tokens": everything.tokens},
            "selected": {"rewards": selected.rewards, "tokens": selected.tokens},
        },
    }
    cells.close()
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
    stats["pass_at_k_source"] = _source(adaptive, columns)
    return stats


def _estimated(votes: dict) -> str:
    """The report's note on prompts whose vote was estimated by sampling ("" when none)."""
    est = votes.get("estimated_prompts") or {}
    parts = [
        f"{est[key]} prompts' {name}@k" for key, name in (("maj", "maj"), ("weighted", "weighted")) if est.get(key)
    ]
    if not parts:
        return ""
    return f", except {' and '.join(parts)}, estimated from 200 random subsets (rewards of too many distinct values)"


def _source(adaptive: dict | None, columns: int | None) -> str:
    """Which samples a per-prompt curve (best-of-n, pass@k) is computed from."""
    return f"first {columns} samples of every prompt (the adaptive run's first step)" if adaptive else "all samples"


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
    """report.md from report.json's dict: a section a part of the report, in this order."""
    lines = [
        "# winnow report",
        "",
        f"{r['prompts']} prompts x {r['columns']} samples ({', '.join(map(str, r['models']))}), "
        f"{r['completions']} completions, {r['unscored']} unscored"
        + (f", {r['never_sampled']} cells never sampled (adaptive)" if r.get("never_sampled") else "")
        + f"; max_new_tokens {r['max_new_tokens']}.",
        "",
    ]
    failed = summary.errors_line(r)
    lines += [failed, ""] if failed else []
    used = summary.usage_line(r)
    lines += [used, ""] if used else []
    lines += _best_of_n_markdown(r["best_of_n"])
    lines += _selected_markdown(r)
    lines += _pass_markdown(r.get("pass"), r.get("adaptive"))
    lines += _pairs_markdown(r["pairs"])
    if r.get("eval"):
        lines += evals.markdown(r["eval"]) + [f"![held-out curve]({evals.CURVE})", ""]
    lines += judges_markdown(r)
    return "\n".join(lines)


def eval_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict | None:
    """The held-out evaluation of a rounds run (``RUN_DIR/eval``: start, round 1, round 2...)
    as its own report in ``out_dir`` (default ``RUN_DIR/report``): report.json, report.md and
    the curve; None, writing nothing, when the run was not evaluated. Written before the
    rounds' reports, which go into ``round-<r>`` folders inside an ``out_dir``."""
    result = evals.read(run_dir)
    if result is None:
        return None
    with staged_folder(Path(out_dir) if out_dir else Path(run_dir) / "report") as out:
        evals.draw(result, out / evals.CURVE)
        atomic_write_json(out / "report.json", {"eval": result})
        lines = ["# winnow report", "", *evals.markdown(result), f"![held-out curve]({evals.CURVE})", ""]
        atomic_write_text(out / "report.md", "\n".join(lines))
    return result


def _powers_of_two(ns: list[int]) -> list[int]:
    """The rows a curve's table shows: n = 1, 2, 4, ... and the last n.

    >>> _powers_of_two([1, 2, 3, 4, 5, 6])
    [1, 2, 4, 6]
    >>> _powers_of_two([])
    []
    """
    return sorted({n for n in ns if n & (n - 1) == 0} | {ns[-1]}) if ns else []


def _best_of_n_markdown(bon: dict) -> list[str]:
    """report.md's best-of-n section: the estimator, then a row per n shown."""
    return [
        "## Best-of-n",
        "",
        f"Expected best reward of n samples per prompt (unbiased order-statistic estimator over "
        f"{bon['rows']} fully scored prompts, from {bon['source']}), with a {bon['level']:.0%} percentile bootstrap band "
        f"(prompts resampled {bon['bootstrap_iters']} times). KL is log n - (n-1)/n, the analytic "
        "KL of best-of-n from the policy, which is an upper bound on the true KL (Beirami et al. 2024).",
        "",
        *(
            [f"No prompt has all {len(bon['n'])} samples scored, so there is no best-of-n curve.", ""]
            if not bon["rows"]
            else []
        ),
        "| n | best-of-n reward | 95% band | KL upper bound (nats) |",
        "|---|---|---|---|",
        *[
            f"| {n} | {_fmt(bon['mean'][n - 1])} | [{_fmt(bon['low'][n - 1])}, {_fmt(bon['high'][n - 1])}] "
            f"| {bon['kl_upper_bound'][n - 1]:.3f} |"
            for n in _powers_of_two(bon["n"])
        ],
        "",
        "![best-of-n](best_of_n.png)",
        "",
    ]


def _selected_markdown(r: dict) -> list[str]:
    """report.md's section comparing the selected completions with all of them."""
    sel_info = r["selection"]
    lines = [
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
        ("share cut (max_new_tokens, or by the server)", "truncated_share", ".3f"),
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
    return lines + _kept_out_markdown(sel_info) + ["", "![selected vs all](selected_vs_all.png)", ""]


def _kept_out_markdown(sel_info: dict) -> list[str]:
    """What decontamination and near-dedup removed, with the first matches the manifest keeps."""
    lines = []
    if sel_info.get("contaminated_prompts") is not None:
        n = sel_info.get("decontaminate_ngram")
        lines += [
            "",
            f"Decontaminated ({n}-grams shared with an eval item): {sel_info['contaminated_prompts']} prompts "
            f"and {sel_info['contaminated_completions']} further completions left out.",
        ]
        for m in sel_info.get("contamination_matches", []):
            what = "its prompt" if m["sample_index"] is None else f"sample {m['sample_index']}"
            lines.append(f'- {m["prompt_id"]} {what} shares "{m["ngram"]}" with {m["eval_item"]}')
    if sel_info.get("near_duplicates_removed") is not None:
        t = sel_info.get("near_dedup_threshold")
        lines += [
            "",
            f"Near-duplicates (Jaccard >= {t}): {sel_info['near_duplicates_removed']} selected completions dropped (each prompt's next-best candidate taken instead, where it has one).",
        ]
        for m in sel_info.get("near_duplicate_matches", []):
            lines.append(
                f"- {m['prompt_id']} sample {m['sample_index']} is like {m['like_prompt_id']} "
                f"sample {m['like_sample_index']} (Jaccard {m['jaccard']})"
            )
    return lines


def _pairs_markdown(p: dict | None) -> list[str]:
    """report.md's preference-pairs section (empty without pairs)."""
    if not p:
        return []
    lines = ["## Preference pairs", "", f"{p['count']} pairs."]
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
    return lines + [""]


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
    lines += [
        f"| {k} | {_fmt(pak['mean'][k - 1])} | [{_fmt(pak['low'][k - 1])}, {_fmt(pak['high'][k - 1])}] |"
        for k in _powers_of_two(pak["k"])
    ]
    if p.get("votes"):
        v = p["votes"]
        lines += [
            "",
            "maj@k: majority vote over the extracted answers of k samples from the same columns "
            "(ties to the answer seen first); weighted@k: each answer weighs the sum of its rewards. "
            "A vote passes when its chosen sample passes; both are exact averages over every k-subset"
            f"{_estimated(v)}. {_fmt(v['answered_share'], '.1%')} of samples held an extractable answer.",
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
