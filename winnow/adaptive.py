"""Adaptive sampling: sample in steps and stop sampling a prompt once its rule is met.

A fixed N spends most samples where they change nothing: an easy prompt passes on its first
sample, a hopeless one never does. Here every open prompt gets ``step`` more completions at a
time, they are scored, and prompts whose rule is met close; this repeats until none is open
or ``generate.n`` (MAX) have been sampled. Rules (``AdaptiveConfig.stop_when``):

    pass            one completion with reward >= score.pass_threshold (SFT data)
    pass-and-fail   one passing and one failing completion (a DPO pair)
    passing:K       K passing completions with distinct texts
    consensus:F     the most common extracted answer holds a share >= F of the prompt's
                    samples (Adaptive-Consistency, Aggarwal et al. 2023); unextractable
                    answers count in the share's denominator
    confident-consensus:F
                    after the first step (a warm-up: no prompt closes on it), the answer
                    with the most summed confidence holds a share >= F of the confidence
                    of all the prompt's samples (DeepConf's online stop, Fu et al. 2025;
                    each sample weighs its lowest group confidence, ``winnow.confidence``)

Layout: each step is an ordinary generate + score run directory, so each resumes as a stage
does (a kill mid-step, then a rerun, ends with the same files)::

    RUN_DIR/adaptive/step-1/generate, score   columns 0 .. S-1 of every prompt
    RUN_DIR/adaptive/step-2/generate, score   columns S .. 2S-1 of the prompts still open
    ...
    RUN_DIR/generate, RUN_DIR/score           the steps put together: one (M, MAX) reward
                                              matrix, NaN where a prompt had stopped

so select, sft, pairs and the report read RUN_DIR as after a fixed-N run. Step s samples with
a seed of its own, derived from generate.seed; which prompts are open at a step follows from
the earlier steps' files alone, so a resumed run samples what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from winnow import images, stages
from winnow import select as sel
from winnow.confidence import WEIGHT
from winnow.config import AdaptiveConfig, ExecutorConfig, GenerateConfig, ScoreConfig
from winnow.errors import WinnowError
from winnow.executors import write_shard
from winnow.generate import kept_backends
from winnow.records import Prompt, atomic_write_jsonl, atomic_write_npy, config_hash, parse_jsonl
from winnow.rundir import ERRORS, Stage, completed_manifest, load_generations, load_scored, read_shards, verified_bytes
from winnow.stream import load_prompts, text_hash


def step_dir(run_dir: str | Path, s: int) -> Path:
    return Path(run_dir) / "adaptive" / f"step-{s}"


def step_seed(seed: int, s: int) -> int:
    """Step s's sampling seed, derived from the configured one (0xADA keeps it apart from rounds')."""
    return int(np.random.SeedSequence([seed, 0xADA, s]).generate_state(1)[0])


CONSENSUS_RULES = ("consensus", "confident-consensus")
"""The rules that read extracted answers (``adaptive.answer``)."""
WARM_UP = "confident-consensus"
"""The rule under which no prompt closes on the first step (DeepConf's warm-up)."""


def is_closed(
    rule: tuple[str, float],
    rewards: np.ndarray,
    texts: list,
    answers: list[str | None] | None,
    threshold: float | None,
    equal=None,
    confidence: np.ndarray | None = None,
) -> bool:
    """Whether one prompt's samples so far meet the rule.

    rewards: float (n,) of the samples drawn so far (NaN = unscored, neither passes nor
    fails); texts: (n,) their texts, or stand-ins equal exactly when the texts are (the step
    loop keeps 64-bit text hashes, not texts; None: no completion); answers: (n,) extracted answers,
    for the consensus rules, grouped by ``equal`` (default ``==``); confidence: float (n,) each
    sample's lowest group confidence, for confident-consensus. Every sample drawn so far counts
    in a consensus's denominator. (The warm-up is the step loop's: see ``Drawn.meets``.)

    >>> r = np.array([0.0, 1.0, np.nan])
    >>> is_closed(("pass", 0), r, ["a", "b", "c"], None, 0.5), is_closed(("passing", 2), r, ["a", "b", "c"], None, 0.5)
    (True, False)
    >>> is_closed(("consensus", 0.6), r, ["a", "b", "c"], ["4", "4", None], None)
    True
    >>> is_closed(("confident-consensus", 0.6), r, ["a", "b", "c"], ["4", "5", "5"], None, confidence=np.array([6.0, 1.0, 2.0]))
    True
    """
    name, param = rule
    if name == "consensus":
        assert answers is not None
        return sel.consensus_share(answers, equal) >= param
    if name == "confident-consensus":
        assert answers is not None and confidence is not None
        return sel.confident_share(answers, confidence, equal) >= param
    assert threshold is not None
    with np.errstate(invalid="ignore"):
        passed, failed = rewards >= threshold, rewards < threshold
    match name:
        case "pass":
            return bool(passed.any())
        case "pass-and-fail":
            return bool(passed.any() and failed.any())
        case "passing":
            return len({texts[j] for j in np.flatnonzero(passed)}) >= param
    raise WinnowError(f"adaptive.stop_when: unknown rule {name!r}")


def check_adaptive(generate: GenerateConfig, score: ScoreConfig, adaptive: AdaptiveConfig) -> tuple[str, float]:
    """Refuse sections adaptive sampling cannot run under; returns the stop rule."""
    generate.validate()
    score.validate()
    adaptive.validate()
    if adaptive.step is None:
        raise WinnowError("adaptive.step: set it (--adaptive-step) to sample adaptively")
    if len(generate.models) != 1:
        raise WinnowError("adaptive sampling takes one model (generate.models); run one adaptive run per model")
    rule = adaptive.rule()
    if rule[0] not in CONSENSUS_RULES and score.pass_threshold is None:
        raise WinnowError(f"adaptive.stop_when {adaptive.stop_when} needs score.pass_threshold (--pass-threshold)")
    if rule[0] == "confident-consensus" and not generate.top_logprobs:
        raise WinnowError(
            f"adaptive.stop_when {adaptive.stop_when} weighs each sample's confidence: sample with --top-logprobs K (e.g. 20)"
        )
    return rule


def sample_adaptive(
    run_dir: str | Path,
    prompts: list[Prompt],
    generate: GenerateConfig,
    score: ScoreConfig,
    adaptive: AdaptiveConfig,
    *,
    executor: ExecutorConfig | None = None,
    reward=None,
    step_hook=None,
) -> dict:
    """The steps, then RUN_DIR/generate put together from them (``winnow generate
    --adaptive-step``); returns its manifest. The steps are scored as they go, under
    ``score``, which the generate stage records: which prompts stayed open depends on it.
    RUN_DIR/score is then ``score_adaptive``'s (``winnow score`` with the same options).
    """
    rule = check_adaptive(generate, score, adaptive)
    assert adaptive.step is not None  # check_adaptive saw to it
    threshold = score.pass_threshold
    extract = equal = None
    if rule[0] in CONSENSUS_RULES:
        from winnow.answers import answer_tools

        extract, equal = answer_tools(adaptive.answer)
    maximum = generate.n
    drawn = Drawn.empty(prompts, maximum)
    open_rows = list(range(len(prompts)))
    steps: list[dict] = []
    start, s = 0, 0
    # one policy load for every step (each step is a generate stage of its own)
    with kept_backends():
        while open_rows and start < maximum:
            s += 1
            size = min(adaptive.step, maximum - start)
            folder = step_dir(run_dir, s)
            chunk = [prompts[i] for i in open_rows]
            config = replace(generate, n=size, seed=step_seed(generate.seed, s))
            # the steps' images are hard links to RUN_DIR/images, which the assembled stage keeps
            gen_manifest = stages.generate(folder, chunk, config, executor, first_column=start, image_store=run_dir)
            score_manifest = stages.score(folder, score, reward=reward, executor=executor)
            drawn.take(folder, range(start, start + size), extract)
            start += size
            open_rows = [i for i in open_rows if not drawn.meets(i, rule, start, threshold, equal, step=s)]
            steps.append(
                {
                    "step": s,
                    "prompts": len(chunk),
                    "columns": [start - size, start],
                    "generate_hash": gen_manifest["config_hash"],
                    "score_hash": score_manifest["config_hash"],
                }
            )
            if step_hook is not None:
                step_hook(s)
    summary = _summary(adaptive, rule, maximum, drawn.sampled, drawn.rewards, open_rows, steps, threshold)
    return _assemble_generate(run_dir, prompts, generate, score, adaptive, rule, steps, summary, executor)


@dataclass
class Drawn:
    """What the steps drew so far, per prompt row i and column j: all a rule looks at.

    rewards: float (M, MAX), NaN where nothing was drawn or scored; texts: (M, MAX) 64-bit
    text hashes, not texts (passing:K compares them, and a million prompts' texts need not
    stay), None where nothing was drawn; answers: (M, MAX) extracted answers for consensus
    (None: none, or another rule); sampled: int (M,) columns drawn per prompt (a skipped
    prompt draws none); confidence: float (M, MAX) each sample's lowest group confidence
    when the rows hold it (``generate.top_logprobs``), else NaN.
    """

    row_of: dict[str, int]
    rewards: np.ndarray
    texts: list[list[int | None]]
    answers: list[list[str | None]]
    sampled: np.ndarray
    confidence: np.ndarray

    @classmethod
    def empty(cls, prompts: list[Prompt], maximum: int) -> Drawn:
        """Nothing drawn yet for any of ``prompts``, room for ``maximum`` columns each."""
        m = len(prompts)
        return cls(
            row_of={p.id: i for i, p in enumerate(prompts)},
            rewards=np.full((m, maximum), np.nan),
            texts=[[None] * maximum for _ in prompts],
            answers=[[None] * maximum for _ in prompts],
            sampled=np.zeros(m, dtype=np.int64),
            confidence=np.full((m, maximum), np.nan),
        )

    def take(self, folder: Path, columns: range, extract) -> None:
        """Take in a scored step's completions in ``columns`` (its prompts are a subset)."""
        step_prompts, by_key, step_rewards, _ = load_scored(folder)
        lo, hi = columns.start, columns.stop
        for k, p in enumerate(step_prompts):
            i = self.row_of[p.id]
            self.rewards[i, lo:hi] = step_rewards[k, lo:hi]
            for j in columns:
                c = by_key.get((p.id, j))
                if c is not None:
                    self.texts[i][j] = text_hash(c["text"])
                    self.answers[i][j] = extract(c["text"]) if extract else None
                    self.confidence[i, j] = _confidence_of(c)
                    self.sampled[i] += 1

    def meets(self, i: int, rule: tuple[str, float], start: int, threshold: float | None, equal, *, step: int) -> bool:
        """Whether prompt row i's first ``start`` columns, after step ``step`` (1, 2, ...), meet
        the rule (``is_closed``); under ``WARM_UP``'s rule the first step never closes a prompt."""
        if rule[0] == WARM_UP and step == 1:
            return False
        confidence = self.confidence[i, :start]
        return is_closed(
            rule, self.rewards[i, :start], self.texts[i][:start], self.answers[i][:start], threshold, equal, confidence
        )


def _confidence_of(row: dict) -> float:
    """A row's lowest group confidence; NaN when it has none (no tokens, or not recorded)."""
    value = row.get(WEIGHT)
    return np.nan if value is None else float(value)


def scored_under(gen_manifest: dict) -> dict | None:
    """The score config an adaptive generate stage's steps were scored under; None when
    the stage was not sampled adaptively."""
    if not gen_manifest.get("adaptive"):
        return None
    return gen_manifest["config"].get("score")


def _summary(adaptive, rule, maximum, sampled, rewards, open_rows, steps, threshold) -> dict:
    """What adaptive sampling spent and reached; the manifest's and the report's ``adaptive``."""
    m = len(sampled)
    out = {
        "stop_when": adaptive.stop_when,
        "step": adaptive.step,
        "max": maximum,
        "steps": len(steps),
        "prompts": m,
        "closed": m - len(open_rows),
        "samples": int(sampled.sum()),
        "fixed_samples": m * maximum,
        "saved_share": 1 - float(sampled.sum()) / (m * maximum) if m else 0.0,
        "samples_per_prompt": sampled.tolist(),
        "tokens": 0,  # filled in by _assemble, which reads every completion
    }
    if threshold is not None:
        with np.errstate(invalid="ignore"):
            out["passing_prompts"] = int((rewards >= threshold).any(axis=1).sum())
    return out


def assembled_generate_config(prompts, generate, score, adaptive, step_hashes) -> dict:
    """RUN_DIR/generate's ``config.json`` after adaptive steps: the options of the three
    sections, the prompts' hash and each step's generate hash (``step_hashes``)."""
    rule = adaptive.rule()
    return {
        "generate": generate.stage_config(),
        # the extractor decides only consensus's samples: other rules leave it out
        "adaptive": {k: v for k, v in asdict(adaptive).items() if k != "answer" or rule[0] in CONSENSUS_RULES},
        "score": score.stage_config(),  # which prompts stayed open follows from these scores
        "prompts_hash": config_hash([p.to_row() for p in prompts]),
        "steps": step_hashes,
    }


def assembled_score_config(score: ScoreConfig, generate_hash, step_hashes) -> dict:
    """RUN_DIR/score's ``config.json`` after adaptive steps: the options, the assembled
    generate stage's hash and each step's score hash (``step_hashes``)."""
    return {"score": score.stage_config(), "generate_hash": generate_hash, "steps": step_hashes}


def _assemble_generate(run_dir, prompts, generate, score, adaptive, rule, steps, summary, executor) -> dict:
    """RUN_DIR/generate from the steps: a shard per step (columns kept), one manifest."""
    run_dir = Path(run_dir)
    rows_per_step = []
    for step in steps:
        folder = step_dir(run_dir, step["step"])
        _, step_rows, _ = load_generations(folder)
        lo, hi = step["columns"]
        rows_per_step.append(sorted((c for c in step_rows if lo <= c["sample_index"] < hi), key=_key))
    completions = [c for rows in rows_per_step for c in rows]
    summary["tokens"] = int(sum(c["num_tokens"] for c in completions))
    tokens = {p.id: 0 for p in prompts}
    for c in completions:
        tokens[c["prompt_id"]] += c["num_tokens"]
    summary["tokens_per_prompt"] = [tokens[p.id] for p in prompts]
    prompt_rows = [p.to_row() for p in prompts]
    step_hashes = [st["generate_hash"] for st in steps]
    gen = Stage(run_dir, "generate", assembled_generate_config(prompts, generate, score, adaptive, step_hashes))
    names = [f"s{st['step']:05d}" for st in steps]
    with gen:
        gen.claim()
        for name, rows in zip(names, rows_per_step, strict=True):
            _write_recorded(gen, name, rows)
        images.store(run_dir, prompts)
        atomic_write_jsonl(gen.dir / "prompts.jsonl", prompt_rows)
        skipped = sum(1 for p in prompts if not any(c["prompt_id"] == p.id for c in completions))
        errors = _step_errors(run_dir, steps, "generate")
        return gen.finish(
            shards=names,
            outputs=["prompts.jsonl", *gen.write_errors(errors)],
            errors=len(errors),
            num_prompts=len(prompts),
            num_columns=generate.n,
            num_completions=len(completions),
            skipped_prompts=skipped,
            adaptive=summary,
            adaptive_steps=steps,
            executor={"name": (executor or ExecutorConfig()).name},
        )


def score_or_assemble(
    run_dir: str | Path, config: ScoreConfig, *, reward=None, executor: ExecutorConfig | None = None
) -> dict:
    """RUN_DIR/score: put together from the adaptive steps' scores when the run was sampled
    adaptively under this very score config (its steps scored every completion already),
    else scored by the score stage. The one way a pipeline or the API scores a run dir."""
    if reward is None:
        config.validate()
        if scored_under(completed_manifest(run_dir, "generate")) == config.stage_config():
            return score_adaptive(run_dir, config, executor=executor)
    return stages.score(run_dir, config, reward=reward, executor=executor)


def score_adaptive(run_dir: str | Path, score: ScoreConfig, *, executor: ExecutorConfig | None = None) -> dict:
    """RUN_DIR/score from the steps' score stages: a shard per step, then the (M, MAX)
    matrix, NaN where a prompt had stopped. Nothing is scored again. ``score`` must be the
    config the steps were scored under (``score_or_assemble`` sends a run here only then)."""
    run_dir = Path(run_dir)
    gen_manifest = completed_manifest(run_dir, "generate")
    if scored_under(gen_manifest) != score.stage_config():
        raise WinnowError(f"{run_dir}/generate: its adaptive steps were scored under another score config")
    steps = gen_manifest["adaptive_steps"]
    prompts = load_prompts(run_dir, gen_manifest)
    n = gen_manifest["num_columns"]
    step_hashes = [st["score_hash"] for st in steps]
    sc = Stage(run_dir, "score", assembled_score_config(score, gen_manifest["config_hash"], step_hashes))
    with sc:
        stored = sc.stored_manifest()
        if stored and all(sc.matches(f) for f in stored["files"]):
            return stored
        sc.claim()
        names = [f"s{st['step']:05d}" for st in steps]
        reward_rows = []
        for step, name in zip(steps, names, strict=True):
            step_rows = _step_reward_rows(step_dir(run_dir, step["step"]), *step["columns"])
            _write_recorded(sc, name, step_rows)
            reward_rows += step_rows
        matrix = stages.reward_matrix(prompts, reward_rows, n)
        atomic_write_npy(sc.dir / "rewards.npy", matrix)
        outputs, extra = ["rewards.npy"], {}
        components = completed_manifest(step_dir(run_dir, 1), "score").get("components") if steps else None
        if components:  # several rewards: each as its own matrix too, as the score stage writes them
            for k, part in enumerate(components):
                values = stages.reward_matrix(prompts, reward_rows, n, component=k)
                atomic_write_npy(sc.dir / part["file"], values)
                outputs.append(part["file"])
            extra["components"] = [
                {k: v for k, v in c.items() if k in ("reward", "weight", "file")} for c in components
            ]
        errors = _step_errors(run_dir, steps, "score")
        return sc.finish(
            shards=names,
            outputs=outputs + sc.write_errors(errors),
            errors=len(errors),
            **stages.summarize(matrix, num_completions=gen_manifest["num_completions"]),
            **extra,
            adaptive=gen_manifest["adaptive"],
            executor={"name": (executor or ExecutorConfig()).name},
        )


def _step_errors(run_dir: Path, steps: list[dict], stage: str) -> list[dict]:
    """The rows that failed and were skipped in the steps' ``stage`` stages (``on_error:
    skip``), step by step: the assembled stage records them as its own."""
    rows: list[dict] = []
    for step in steps:
        folder = step_dir(run_dir, step["step"])
        record = completed_manifest(folder, stage)["files"].get(ERRORS)
        if record is not None:
            path = folder / stage / ERRORS
            data = verified_bytes(path, record, stage=stage)
            rows += [row for _, row in parse_jsonl(data.splitlines(keepends=True), path)]
    return rows


def _key(row: dict):
    return (row["prompt_id"], row["sample_index"])


def _step_reward_rows(folder: Path, lo: int, hi: int) -> list[dict]:
    """The reward rows of a step's score stage in columns [lo, hi), in key order."""
    manifest = completed_manifest(folder, "score")
    rows = read_shards(folder / "score", manifest["shards"], manifest["files"], stage="score")
    # the rows as the step's score stage wrote them (components, no_answer and all)
    keep = [r for r in rows if lo <= r["sample_index"] < hi]
    return sorted(keep, key=_key)


def _write_recorded(stage: Stage, name: str, rows: list[dict]) -> None:
    """Write a shard of rows the driver already holds and record it (keys as written)."""
    write_shard(stage.dir, name, rows, config_hash=stage.hash)
    stage.record_shard(name, {_key(r) for r in rows}, exact=True)
