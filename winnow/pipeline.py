"""Stages in sequence, and Best-of-N on top of generate + score."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow import stages
from winnow.adaptive import sample_adaptive, score_or_assemble
from winnow.config import GenerateConfig
from winnow.errors import WinnowError
from winnow.records import read_json
from winnow.rundir import check_format


def run_stages(
    run_dir: str | Path, prompts, configs: dict, only: tuple[str, ...] | None = None, *, reward=None
) -> dict:
    """Run the configured stages in order; returns each stage's manifest summary.

    With ``configs["rounds"].count`` set, the four stages run that many rounds, each in
    ``RUN_DIR/round-<r>/`` (``winnow.rounds``); the summary is then keyed by round.
    ``only`` names the stages to run when ``configs`` holds more (``winnow generate
    --adaptive-step`` holds a score config for its steps but writes RUN_DIR/generate alone).
    ``reward``: a reward callable that overrides the score config's (library use, as in ``stages.score``).
    """
    from winnow.sft import sft

    rounds = configs.get("rounds")
    multi_round = rounds is not None and rounds.count is not None
    if any(name in configs and (only is None or name in only) for name in ("generate", "score")):
        from winnow.plan import check

        check(
            run_dir, prompts, configs, only=only, reward=reward
        )  # every part, before any model loads or sample is drawn
    if multi_round:
        from winnow.rounds import run_rounds

        assert rounds is not None
        by_round = run_rounds(run_dir, prompts, configs, rounds, reward=reward)
        return {f"round-{r}": _brief(summary) for r, summary in by_round.items()}
    summary = {}
    executor = configs.get("executor")  # where generate and score make shards, never what
    adaptive = configs.get("adaptive")

    def wanted(name: str) -> bool:
        return name in configs and (only is None or name in only)

    if adaptive is not None and adaptive.step is not None:
        if "score" not in configs:
            raise WinnowError("adaptive.step: adaptive sampling scores as it samples; give a reward (--reward-fn, ...)")
        summary["generate"] = sample_adaptive(
            run_dir, prompts, configs["generate"], configs["score"], adaptive, executor=executor, reward=reward
        )
    if wanted("generate") and "generate" not in summary:
        summary["generate"] = stages.generate(run_dir, prompts, configs["generate"], executor=executor)
    if wanted("score"):  # after adaptive steps under this config: put together from them
        summary["score"] = score_or_assemble(run_dir, configs["score"], reward=reward, executor=executor)
    if wanted("select"):
        summary["select"] = stages.select(run_dir, configs["select"])
    if wanted("sft"):
        summary["sft"] = sft(run_dir, configs["sft"])
    if wanted("dpo"):
        from winnow.dpo import dpo

        summary["dpo"] = dpo(run_dir, configs["dpo"])
    return _brief(summary)


def _brief(summary: dict) -> dict:
    """Stage manifests without their (long) configs."""
    return {name: {k: v for k, v in m.items() if k != "config"} for name, m in summary.items()}


def default_sft_model(run_dir: str | Path, generate: GenerateConfig | None, file_config: dict) -> str:
    """Rejection sampling fine-tunes the starting checkpoint: the (first) model that generated."""
    if generate is not None:
        return generate.models[0]
    path = Path(run_dir) / "generate" / "manifest.json"
    if path.exists():
        manifest = read_json(path)
        check_format(path.parent, manifest)
        try:
            model = manifest["config"]["generate"]["models"][0]
        except (KeyError, IndexError, TypeError):
            model = None
        if not isinstance(model, str):
            raise WinnowError(
                f"{path}: damaged (no generate model recorded); pass --sft-model, or rerun `winnow generate`"
            )
        return model
    return GenerateConfig().models[0]


PREVIEW = 20
"""Rows of Best-of-N that ``best_of_n`` hands back for the terminal; the file holds all."""


def best_of_n(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    aggregate: str = "best",
    answer: str = "auto",
    keep_confident: float | None = None,
) -> tuple[int, list[dict]]:
    """The chosen completion per prompt with its reward (M rows; the earliest sample wins a
    tie), written to ``out`` (default ``RUN_DIR/best.jsonl``). Returns (rows written, the
    first ``PREVIEW`` rows).

    aggregate: ``best`` (highest reward), ``majority``, ``weighted`` or ``confidence`` (votes over
    the answers ``answer`` extracts: ``select.aggregate``); a row then also holds its answer.
    keep_confident: P, each prompt's most confident P% alone take part (``generate.top_logprobs``).
    Streamed as select is: the reward matrix and an index of where each completion lies,
    then one prompt's completions at a time, so memory does not grow with their texts.
    """
    from winnow.answers import answer_tools
    from winnow.confidence import WEIGHT
    from winnow.stream import load_scored_index, write_rows

    index, rewards, _ = load_scored_index(run_dir)
    extract, equal = answer_tools(answer) if aggregate != "best" else (None, None)
    confident = aggregate == "confidence" or keep_confident is not None
    best = sel.top_per_prompt(rewards) if aggregate == "best" and not confident else None
    tools = (extract, equal)
    head: list[dict] = []

    def rows():
        for i, prompt in enumerate(index.prompts):
            j = (
                int(best[i])
                if best is not None
                else _vote(index, rewards, i, aggregate, tools, keep_confident, run_dir)
            )
            c = index.row(i, j) if j >= 0 else None
            row = {
                "prompt_id": prompt.id,
                "prompt": prompt.content,
                "sample_index": j if c else None,
                "model": c["model"] if c else None,
                "completion": c["text"] if c else None,
                "reward": float(rewards[i, j]) if c else None,
                "mean_reward": float(np.nanmean(rewards[i])) if c else None,
            }
            if extract is not None:
                row["aggregate"] = aggregate
                row["answer"] = extract(c["text"]) if c else None
            if confident:
                row[WEIGHT] = c.get(WEIGHT) if c else None
            if len(head) < PREVIEW:
                head.append(row)
            yield row

    try:
        count = write_rows(Path(out) if out else Path(run_dir) / "best.jsonl", rows())
    finally:
        index.close()
    return count, head


def _vote(index, rewards: np.ndarray, i: int, how: str, tools: tuple, keep: float | None, run_dir) -> int:
    """Prompt row i's chosen column (-1: none) by ``select.aggregate``, its candidates read
    from ``index``: their texts, and their confidence when ``how`` or ``keep`` needs it.
    tools: (extract, equal) for the vote."""
    from winnow.confidence import weights_of

    candidates = [index.row(i, k) for k in range(rewards.shape[1])]
    texts = [(c or {}).get("text") for c in candidates]
    confident = how == "confidence" or keep is not None
    weights = weights_of(candidates, f"{Path(run_dir) / 'generate'}") if confident else None
    extract, equal = tools
    return sel.aggregate(texts, rewards[i], how, extract=extract, equal=equal, confidence=weights, keep_confident=keep)
