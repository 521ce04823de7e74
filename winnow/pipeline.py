"""Stages in sequence, and Best-of-N on top of generate + score."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow import stages
from winnow.adaptive import sample_adaptive, score_or_assemble
from winnow.config import GenerateConfig, PickConfig
from winnow.errors import WinnowError
from winnow.records import read_json
from winnow.rundir import check_format


def run_stages(
    run_dir: str | Path, prompts, configs: dict, only: tuple[str, ...] | None = None, *, reward=None, held_out=None
) -> dict:
    """Run the configured stages in order; returns each stage's manifest summary.

    With ``configs["rounds"].count`` set, the four stages run that many rounds, each in
    ``RUN_DIR/round-<r>/`` (``winnow.rounds``); the summary is then keyed by round.
    ``only`` names the stages to run when ``configs`` holds more (``winnow generate
    --adaptive-step`` holds a score config for its steps but writes RUN_DIR/generate alone).
    ``reward``: a reward callable that overrides the score config's (library use, as in ``stages.score``).
    With ``configs["eval"].prompts`` (``--eval-prompts``), the starting model and each round's
    checkpoint are then evaluated on those prompts in ``RUN_DIR/eval/`` (``evaluate_run``):
    ``held_out``, the file read as the command reads its prompts (the same column and image
    options), or when None, read here with the default ones.
    """
    from winnow.sft import sft

    held_out = _held_out(configs.get("eval"), held_out)  # a bad file fails before any work
    rounds = configs.get("rounds")
    multi_round = rounds is not None and rounds.count is not None
    if any(name in configs and (only is None or name in only) for name in ("generate", "score")):
        from winnow.plan import check

        check(
            run_dir, prompts, configs, only=only, reward=reward
        )  # every part, before any model loads or sample is drawn
    if held_out is not None:  # the evaluation after training too: its reward, its folders
        from winnow.plan_eval import check_eval

        check_eval(run_dir, held_out, configs, reward=reward)
    if multi_round:
        from winnow.rounds import run_rounds

        assert rounds is not None
        by_round = run_rounds(run_dir, prompts, configs, rounds, reward=reward)
        if held_out is not None:
            evaluate_run(run_dir, held_out, configs, [m["sft"]["checkpoint"] for m in by_round.values()], reward=reward)
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
    if held_out is not None and "sft" in summary:
        evaluate_run(run_dir, held_out, configs, [summary["sft"]["checkpoint"]], reward=reward)
    return _brief(summary)


def _held_out(config, read: list | None) -> list | None:
    """The held-out prompts of ``eval.prompts`` (None: no evaluation): ``read`` when the
    caller read the file; a baseline is ``winnow eval``'s."""
    if config is None:
        return None
    if config.baseline is not None:
        raise WinnowError("eval.baseline: for winnow eval; winnow run evaluates its starting model and checkpoints")
    if config.prompts is None:
        return None
    if read is not None:
        return read
    from winnow.prompts import load_prompts

    return load_prompts(config.prompts)


def evaluate_run(run_dir: str | Path, prompts, configs: dict, checkpoints: list[str], *, reward=None) -> dict:
    """The starting model (sft.model) and each round's checkpoint, in order, evaluated on the
    held-out ``prompts`` with the generate config, seed included, in ``RUN_DIR/eval/``
    (``winnow.evaluation``); returns eval.json's dict."""
    from winnow.evaluation import evaluate
    from winnow.report.evals import FOLDER

    models = {"start": configs["sft"].model, **{f"round {r}": c for r, c in enumerate(checkpoints, start=1)}}
    return evaluate(
        Path(run_dir) / FOLDER,
        prompts,
        models,
        configs["generate"],
        configs["score"],
        configs["eval"],
        reward=reward,
        executor=configs.get("executor"),
    )


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


def check_pick(pick: PickConfig, aggregate: str, keep_confident: float | None = None) -> None:
    """A judge picks in place of the highest reward: refuse it beside a vote (``--aggregate``)
    or a confidence filter (``--keep-confident``)."""
    if pick.select_by != "judge":
        return
    if aggregate != "best":
        raise WinnowError(
            f"pick.select_by: a judge picks in place of --aggregate best; --aggregate {aggregate} votes instead"
        )
    if keep_confident is not None:
        raise WinnowError("pick.select_by: a judge picks among every candidate; --keep-confident filters a vote")


PREVIEW = 20
"""Rows of Best-of-N that ``best_of_n`` hands back for the terminal; the file holds all."""


def best_of_n(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    aggregate: str = "best",
    answer: str = "auto",
    keep_confident: float | None = None,
    pick: PickConfig | None = None,
) -> tuple[int, list[dict]]:
    """The chosen completion per prompt with its reward (M rows; the earliest sample wins a tie), written to
    ``out`` (default ``RUN_DIR/best.jsonl``). Returns (rows written, the first ``PREVIEW`` rows).

    aggregate: ``best`` (highest reward), ``majority``, ``weighted``, ``prm-weighted`` (the process reward model's
    own scores) or ``confidence`` (votes over the answers ``answer`` extracts: ``select.aggregate``); a row then also
    holds its answer. keep_confident: P, each prompt's most confident P% alone vote (``generate.top_logprobs``).
    pick: a judge picks instead (``judge_picks``). Streamed as select is: the reward matrix and where each
    completion lies, then one prompt's completions at a time (memory does not grow with texts).
    """
    from winnow.answers import answer_tools
    from winnow.confidence import WEIGHT
    from winnow.stream import load_scored_index, write_rows

    index, rewards, manifest = load_scored_index(run_dir)
    votes = prm_matrix(run_dir, manifest, rewards) if aggregate == "prm-weighted" else rewards
    extract, equal = answer_tools(answer) if aggregate != "best" else (None, None)
    confident = aggregate == "confidence" or keep_confident is not None
    best = sel.top_per_prompt(rewards) if aggregate == "best" and not confident else None
    best, picks = judge_picks(index, rewards, best, pick, aggregate=aggregate, keep_confident=keep_confident)
    tools = (extract, equal)
    head: list[dict] = []

    def rows():
        for i, prompt in enumerate(index.prompts):
            j = int(best[i]) if best is not None else _vote(index, votes, i, aggregate, tools, keep_confident, run_dir)
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
            if prompt.images:  # paths relative to the run dir, which holds the files
                row["images"] = [image.path for image in prompt.images]
            if extract is not None:
                row["aggregate"] = aggregate
                row["answer"] = extract(c["text"]) if c else None
            if confident:
                row[WEIGHT] = c.get(WEIGHT) if c else None
            if len(head) < PREVIEW:
                head.append(row)
            yield row

    try:
        count = write_rows(Path(out or Path(run_dir) / "best.jsonl"), judged_rows(rows(), picks, rewards, pick))
    finally:
        index.close()
    return count, head


def prm_matrix(run_dir: str | Path, manifest: dict, rewards: np.ndarray) -> np.ndarray:
    """The process reward model's own scores (M, C) in a scored run: ``rewards`` where it is
    the only reward, else its own matrix beside the weighted sum (``rewards-<k>.npy``, k its
    place in ``ScoreConfig.rewards()``)."""
    from winnow.stream import verified_shard

    stored = manifest["config"]["score"]
    if not stored.get("prm_model"):
        raise WinnowError("--aggregate prm-weighted: the run was not scored with a process reward model (--prm-model)")
    components = manifest.get("components")
    if not components:
        return rewards
    k = len(components) - 1 - (1 if stored.get("reward_judge") else 0)  # in weight order, only a judge follows it
    path = Path(run_dir) / "score" / components[k]["file"]
    verified_shard(path, manifest["files"].get(components[k]["file"]), stage="score")
    return np.load(path)


def _vote(index, votes: np.ndarray, i: int, how: str, tools: tuple, keep: float | None, run_dir) -> int:
    """Prompt row i's chosen column (-1: none) by ``select.aggregate`` over ``votes`` (M, C)
    (the rewards, or the process reward model's scores), its candidates read from ``index``:
    their texts, and their confidence when ``how`` or ``keep`` needs it. tools: (extract, equal)."""
    from winnow.confidence import weights_of

    candidates = [index.row(i, k) for k in range(votes.shape[1])]
    texts = [(c or {}).get("text") for c in candidates]
    confident = how == "confidence" or keep is not None
    weights = weights_of(candidates, f"{Path(run_dir) / 'generate'}") if confident else None
    extract, equal = tools
    return sel.aggregate(texts, votes[i], how, extract=extract, equal=equal, confidence=weights, keep_confident=keep)


PICK_CHUNK = 64
"""Prompts whose tournaments run together (their texts in memory at once)."""


def judge_picks(
    index, rewards: np.ndarray, best: np.ndarray | None, pick: PickConfig | None, *, aggregate: str, keep_confident
) -> tuple[np.ndarray | None, list | None]:
    """(chosen column per prompt, the ``Pick`` of each): the judge's with ``pick.select_by: judge``
    (``winnow.rewards.pick``; ``PICK_CHUNK`` prompts' tournaments at a time, their texts read from
    ``index``), else ``best`` as it is and None. A judge beside a vote or a confidence filter is refused."""
    if pick is None or pick.select_by != "judge":
        return best, None
    check_pick(pick, aggregate, keep_confident)
    from winnow.rewards.pick import judge_of, pick_best

    judge = judge_of(pick)
    prompts, picks = index.prompts, []
    for start in range(0, len(prompts), PICK_CHUNK):
        chunk = range(start, min(len(prompts), start + PICK_CHUNK))
        texts = [[(index.row(i, k) or {}).get("text") for k in range(rewards.shape[1])] for i in chunk]
        questions = [prompts[i].content for i in chunk]
        picks += pick_best(judge, questions, texts, [rewards[i] for i in chunk], [prompts[i].id for i in chunk])
    return np.array([p.index for p in picks], dtype=np.int64), picks


def judged_rows(
    rows: Iterator[dict], picks: list | None, rewards: np.ndarray, pick: PickConfig | None = None
) -> Iterator[dict]:
    """Best-of-N's rows, each picked by the judge given the fields of ``judged_fields`` (the
    same dicts, so the rows kept for the terminal have them too; its tokens priced at
    ``pick.price_per_mtok``); as they are without a judge."""
    if picks is None:
        yield from rows
        return
    price = pick.price_per_mtok if pick is not None else None
    for row, chosen, values in zip(rows, picks, rewards, strict=True):
        row.update(judged_fields(chosen, values, price))
        yield row


def judged_fields(chosen, rewards: np.ndarray, price: list[float] | None = None) -> dict:
    """What a row picked by the judge adds: the reward's own pick (the highest reward, the
    earliest of a tie; None when none is scored) and its reward, the calls and fallbacks,
    and the tokens the calls used (``judge_usage``: ``winnow.budget.Usage.record``, its cost
    at ``price``, ``pick.price_per_mtok``, when one is given). rewards: float (C,), the prompt's row."""
    best = int(sel.top_per_prompt(rewards[None, :])[0])
    return {
        "selected_by": "judge",
        "reward_pick": best if best >= 0 else None,
        "best_reward": float(rewards[best]) if best >= 0 else None,
        "judge_calls": chosen.calls,
        "judge_fallbacks": chosen.fallbacks,
        "judge_usage": chosen.usage.record(price),
    }
