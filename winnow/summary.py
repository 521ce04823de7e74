"""What the commands print: a few lines a person reads; the manifests hold the rest.

``stage_lines`` turns the manifests ``pipeline.run_stages`` returns into one line a stage
(``--json`` prints the manifests themselves); ``report_lines`` does the same for
``winnow report``. Pure functions of dicts, so tests compare exact lines.
"""

from __future__ import annotations

import json
import sys


def _num(x, spec: str = ".3f") -> str:
    """A number as the summary shows it; '-' where there is none (None, or NaN made null)."""
    return "-" if x is None else format(x, spec)


def stage_lines(summary: dict, run_dir: str) -> list[str]:
    """One line per stage of ``run_stages``' summary; a rounds run's summary is keyed by
    round (``round-1``: {stage: manifest}) and prints each round's lines under its name.

    >>> stage_lines({"select": {"num_selected": 5, "mean_selected_reward": 0.75}}, "runs/x")
    ['select: 5 completions selected, mean reward 0.750 -> runs/x/select/selected.jsonl']
    """
    if summary and all(name.startswith("round-") for name in summary):
        out: list[str] = []
        for name, stages in summary.items():
            out.append(f"{name}:")
            out += [f"  {line}" for line in stage_lines(stages, f"{run_dir}/{name}")]
        return out
    return [STAGE_LINES[name](m, f"{run_dir}/{name}") for name, m in summary.items() if name in STAGE_LINES]


def _generate(m: dict, folder: str) -> str:
    skipped = f", {m['skipped_prompts']} prompts skipped" if m.get("skipped_prompts") else ""
    skipped += _errors(m, folder)
    a = m.get("adaptive")
    spent = f" in {a['steps']} adaptive steps ({_num(a['saved_share'], '.0%')} fewer than fixed N)" if a else ""
    each = f"up to {m['num_columns']:,}" if a else f"{m['num_columns']:,}"
    used = f", API {usage_text(m['usage'])}" if m.get("usage") else ""
    img = m.get("images")
    stored = f", {img['files']:,} images stored once ({img['bytes']:,} bytes)" if img else ""
    return (
        f"generate: {m['num_completions']:,} completions, {m['num_prompts']:,} prompts x {each} samples"
        f"{stored}{spent}{skipped}{used} -> {folder}"
    )


def _errors(m: dict, folder: str) -> str:
    """Where a stage's failed rows are, when some failed and were skipped.

    >>> _errors({"errors": 2}, "runs/x/score"), _errors({"errors": 0}, "runs/x/score")
    (', 2 failed (runs/x/score/errors.jsonl)', '')
    """
    return f", {m['errors']:,} failed ({folder}/errors.jsonl)" if m.get("errors") else ""


def _score(m: dict, folder: str) -> str:
    return (
        f"score: {m['scored']:,} of {m['num_completions']:,} completions scored ({m['unscored']:,} unscored"
        f"{_errors(m, folder)}), "
        f"mean reward {_num(m.get('mean_reward'))}, mean best per prompt {_num(m.get('mean_best_reward'))}"
        + (f", judge {usage_text(m['judge_usage'])}" if m.get("judge_usage") else "")
        + (f"; {_judged(m['rule_then_judge'])}" if m.get("rule_then_judge") else "")
        + f" -> {folder}/rewards.npy"
    )


def _judged(counts: dict) -> str:
    """A rule backed by a judge: what each decided.

    >>> _judged({"rule_passes": 2, "judge_asked": 5, "judge_passes": 3, "judge_overrides": 1})
    '2 rule passes, 5 rows to the judge: 3 passed, 1 overriding the rule'
    """
    return (
        f"{counts['rule_passes']:,} rule passes, {counts['judge_asked']:,} rows to the judge: "
        f"{counts['judge_passes']:,} passed, {counts['judge_overrides']:,} overriding the rule"
    )


def _select(m: dict, folder: str) -> str:
    line = f"select: {m['num_selected']:,} completions selected, mean reward {_num(m.get('mean_selected_reward'))}"
    if m.get("num_pairs") is not None:
        line += f", {m['num_pairs']:,} pairs"
    kept_out = [
        f"{m[k]:,} {label}"
        for k, label in (
            ("contaminated_prompts", "contaminated prompts"),
            ("contaminated_completions", "contaminated completions"),
            ("near_duplicates_removed", "near-duplicates"),
        )
        if m.get(k) is not None
    ]
    if kept_out:  # the first matches are in the manifest and the report
        line += f" (left out: {', '.join(kept_out)})"
    return f"{line} -> {folder}/selected.jsonl"


def _trained(name: str):
    def line(m: dict, folder: str) -> str:
        rows = f"{m['num_pairs']:,} pairs" if "num_pairs" in m else f"{m.get('num_rows', 0):,} rows"
        if "eval_rows" in m:  # an eval split: say how many were held out, and their final loss
            total = m.get("num_pairs", m.get("num_rows", 0))
            rows = (
                f"{total - m['eval_rows']:,} of {rows} ({m['eval_rows']:,} held out, eval loss {_num(m['eval_loss'])})"
            )
        return f"{name}: trained on {rows}, final loss {_num(m.get('train_loss'))} -> {m['checkpoint']}"

    return line


def _import(m: dict, folder: str) -> str:
    """An import is a generate stage: it is written to RUN_DIR/generate."""
    return (
        f"import: {m['num_completions']:,} completions, {m['num_prompts']:,} prompts x up to "
        f"{m['num_columns']:,} samples from {m['source']['path']}{_errors(m, folder.rsplit('/', 1)[0] + '/generate')}"
        + (f", API {usage_text(m['usage'])}" if m.get("usage") else "")
        + f" -> {folder.rsplit('/', 1)[0]}/generate"
    )


STAGE_LINES = {
    "generate": _generate,
    "score": _score,
    "select": _select,
    "sft": _trained("sft"),
    "dpo": _trained("dpo"),
    "import": _import,
}
"""Stage -> its summary line (one table: a stage missing here prints nothing)."""


def print_stages(summary: dict, run_dir: str, *, as_json: bool) -> None:
    """The stages' lines on stdout, or with ``as_json`` their manifests (as before)."""
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print("\n".join([*stage_lines(summary, run_dir), "(the manifests: --json, or each stage's manifest.json)"]))


def warn_unscored(scored: int, total: int, folder: str, share: float = 0.5) -> str | None:
    """The warning the score stage prints on stderr when at least ``share`` of the rows were
    left unscored (a judge whose replies hold no number, a reward returning None): an exit
    code of 0 alone would hide it.

    >>> print(warn_unscored(1, 10, "run/score"))
    winnow: warning: 9 of 10 completions (90%) are unscored: the reward returned None, or a judge's reply held no score (each row of run/score/shard-*.jsonl keeps it as judge_reply)
    >>> warn_unscored(9, 10, "run/score") is None
    True
    """
    unscored = total - scored
    if total == 0 or unscored / total < share:
        return None
    return (
        f"winnow: warning: {unscored:,} of {total:,} completions ({unscored / total:.0%}) are unscored: the reward "
        f"returned None, or a judge's reply held no score (each row of {folder}/shard-*.jsonl keeps it as judge_reply)"
    )


def warn_unscored_stages(manifests: dict, run_dir: str) -> None:
    """``warn_unscored`` on stderr for each score stage among the manifests (a rounds run's
    too), and ``warn_failed`` for each generate or score stage."""
    for name, m in manifests.items():
        if name.startswith("round-"):
            warn_unscored_stages(m, f"{run_dir}/{name}")
            continue
        if name in ("generate", "score"):
            err(warn_failed(m, f"{run_dir}/{name}"))
        if name == "score":
            err(warn_unscored(m["scored"], m["num_completions"], f"{run_dir}/score"))


def warn_failed(m: dict, folder: str) -> str | None:
    """The line a stage prints on stderr when rows failed and were skipped (``on_error:
    skip``), so that no command (``bon`` prints only its table) keeps quiet about them.

    >>> print(warn_failed({"errors": 2}, "run/score"))
    winnow: warning: 2 rows failed and were skipped (--on-error skip); each is in run/score/errors.jsonl with its reason
    >>> warn_failed({"errors": 0}, "run/score") is None
    True
    """
    if not m.get("errors"):
        return None
    return (
        f"winnow: warning: {m['errors']:,} rows failed and were skipped (--on-error skip); each is in "
        f"{folder}/errors.jsonl with its reason"
    )


def errors_line(r: dict) -> str | None:
    """The rows that failed and were skipped, by stage; None when none did.

    >>> errors_line({"errors": {"generate": 1, "score": 2}})
    'failed and skipped (on_error: skip): 1 in generate (generate/errors.jsonl), 2 in score (score/errors.jsonl)'
    >>> errors_line({"errors": {"generate": 0, "score": 0}}) is None
    True
    """
    counts = {stage: n for stage, n in (r.get("errors") or {}).items() if n}
    if not counts:
        return None
    parts = ", ".join(f"{n} in {stage} ({stage}/errors.jsonl)" for stage, n in counts.items())
    return f"failed and skipped (on_error: skip): {parts}"


def usage_line(r: dict) -> str | None:
    """What the API requests used, by stage, with the cost where a price was given; None
    when no stage went through an API.

    >>> usage = {"requests": 4, "prompt_tokens": 120, "completion_tokens": 64}
    >>> usage_line({"api_usage": {"generate": {**usage, "price_per_mtok": [0.15, 0.6], "cost": 5.64e-05}}})
    'API usage: generate 4 requests, 120 prompt + 64 completion tokens, cost 0.0000564 (0.15, 0.6 per million)'
    >>> usage_line({"api_usage": {"judge": {**usage, "requests_without_usage": 1}}})
    'API usage: judge 4 requests, 120 prompt + 64 completion tokens (1 reply gave no usage)'
    """
    parts = [f"{stage} {usage_text(u)}" for stage, u in (r.get("api_usage") or {}).items()]
    return f"API usage: {'; '.join(parts)}" if parts else None


def usage_text(u: dict) -> str:
    """A manifest's ``usage`` (``winnow.budget.Usage.record``) in words."""
    return f"{u['requests']:,} requests, {tokens_text(u)}"


def tokens_text(u: dict) -> str:
    """``usage_text`` less the requests: the tokens, the cost, the replies without usage."""
    text = f"{u['prompt_tokens']:,} prompt + {u['completion_tokens']:,} completion tokens"
    if "cost" in u:
        price = f" ({u['price_per_mtok'][0]:g}, {u['price_per_mtok'][1]:g} per million)"
        text += f", cost {u['cost']:.7f}".rstrip("0").rstrip(".") + price
    if u.get("requests_without_usage"):
        n = u["requests_without_usage"]
        text += f" ({n} {'reply gave' if n == 1 else 'replies gave'} no usage)"
    return text


def report_lines(result: dict) -> list[str]:
    """``winnow report``'s terminal lines (besides the best-of-n table)."""
    lines = [line] if (line := errors_line(result)) else []
    lines += [line] if (line := usage_line(result)) else []
    for name in ("all", "selected"):
        part = result[name]
        lines.append(
            f"{name}: {part['count']} completions, mean reward {_num(part['mean_reward'])}, "
            f"mean length {_num(part['mean_tokens'])} tokens"
        )
    if result.get("pass"):
        p = result["pass"]
        pak, solved = p["pass_at_k"], p["solved"]
        head = ", ".join(
            f"pass@{k} {v:.3f}"
            for k, v in zip(pak["k"], pak["mean"], strict=True)
            if v is not None and k in (1, pak["k"][-1])
        )
        shares = "/".join(_num(solved[key], ".2f") for key in ("none", "some", "all"))
        lines.append(
            f"pass (reward >= {p['threshold']}): {head or 'no prompt fully scored'}; solved by none/some/all: {shares}"
        )
    if result.get("rule_then_judge"):
        lines.append(f"rule then judge: {_judged(result['rule_then_judge'])}")
    if result.get("judge_pick"):
        lines.append(pick_line(result["judge_pick"]))
    return lines


def pick_line(p: dict) -> str:
    """How often the judge's pick was the reward's (``winnow.report.judges.pick_agreement``).

    >>> line = pick_line({"agree": 3, "as_good": 4, "compared": 4, "agreement": 0.75, "judge_calls": 12, "fallbacks": 1})
    >>> line == ("judge: picked the reward's pick on 3 of 4 prompts (75%), one of the highest reward on 4; "
    ...          "12 judge calls, 1 reply naming no candidate")
    True
    >>> used = {"requests": 12, "prompt_tokens": 3000, "completion_tokens": 48, "price_per_mtok": [0.5, 1.5], "cost": 0.001572}
    >>> pick_line({"agree": 3, "as_good": 4, "compared": 4, "agreement": 0.75, "judge_calls": 12, "fallbacks": 0,
    ...            "judge_usage": used}).split("; ")[-1]
    '12 judge calls, 0 replies naming no candidate, 3,000 prompt + 48 completion tokens, cost 0.001572 (0.5, 1.5 per million)'
    """
    used = p.get("judge_usage")
    return (
        f"judge: picked the reward's pick on {p['agree']:,} of {p['compared']:,} prompts ({_num(p['agreement'], '.0%')}), "
        f"one of the highest reward on {p['as_good']:,}; "
        f"{p['judge_calls']:,} judge calls, {p['fallbacks']:,} {'reply' if p['fallbacks'] == 1 else 'replies'} "
        "naming no candidate" + (f", {tokens_text(used)}" if used else "")
    )


def print_report(result: dict, out: str) -> None:
    """A short table of the report on the terminal; the files hold everything."""
    from rich.console import Console
    from rich.table import Table

    bon = result["best_of_n"]
    console = Console()
    if bon["rows"]:
        table = Table(title=f"best-of-n ({bon['rows']} prompts, {bon.get('source', 'all samples')})")
        for col in ("n", "reward", "95% band", "KL bound"):
            table.add_column(col, justify="right")
        for n in bon["n"]:
            if n & (n - 1) == 0 or n == bon["n"][-1]:
                band = f"[{_num(bon['low'][n - 1])}, {_num(bon['high'][n - 1])}]"
                table.add_row(str(n), _num(bon["mean"][n - 1]), band, f"{bon['kl_upper_bound'][n - 1]:.3f}")
        console.print(table)
    else:  # unscored rows are routine (None from a reward, unparseable judge answers, long prompts)
        console.print(f"No prompt has all {len(bon['n'])} samples scored, so there is no best-of-n curve.")
    print("\n".join([*report_lines(result), f"report: {out}/report.md, {out}/report.json"]))  # never folded


def err(line: str | None) -> None:
    if line:
        print(line, file=sys.stderr)


def export_lines(result: dict) -> list[str]:
    """``winnow export``'s lines: what was written where, and the URL when it was uploaded.

    >>> export_lines({"folder": "out", "configs": {"selected": 6, "pairs": 2}, "report": "none"})
    ['export: selected 6 rows, pairs 2 rows -> out (datasets.load_dataset("out"); the card: out/README.md)']
    >>> export_lines({"folder": "m", "stage": "sft", "files": 6, "url": "https://huggingface.co/o/m"})
    ['export: the sft checkpoint (6 files) with its model card -> m', 'uploaded: https://huggingface.co/o/m']
    """
    if "configs" in result:
        rows = ", ".join(f"{name} {count:,} rows" for name, count in result["configs"].items())
        folder = result["folder"]
        lines = [f'export: {rows} -> {folder} (datasets.load_dataset("{folder}"); the card: {folder}/README.md)']
        if result["report"] != "none":
            lines.append(f"report: {result['report']}")
    else:
        lines = [
            f"export: the {result['stage']} checkpoint ({result['files']} files) with its model card -> {result['folder']}"
        ]
    return lines + ([f"uploaded: {result['url']}"] if result.get("url") else [])


def print_export(result: dict) -> None:
    print("\n".join(export_lines(result)))
