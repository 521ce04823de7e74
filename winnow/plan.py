"""The plan of a command, checked whole before anything costly runs.

A run that fails after hours of sampling, on a typo in a reward's name or on a stage folder
that refuses the new config, has wasted the hours. ``check`` runs first
(``pipeline.run_stages`` calls it; ``--dry-run`` prints what it returns) and only reads,
never loads a model or samples:

- each section's config, and the rules between sections (adaptive sampling, the pass
  threshold select needs);
- each model path (a folder holding config.json; nothing is loaded);
- each reward: loaded by name (a missing file, function or built-in fails here), its
  signature bound to the call the score stage makes, and every prompts column it reads
  present in the prompts;
- each stage folder already in the run dir: its ``config.json`` against the one this run
  would write there. Every folder that would refuse is named in one error, later stages
  too (a stage made from an upstream stage that changes is refused as well).

What only the run itself will know (which prompts an adaptive step samples, the checkpoint
a later round trains) is ``UNKNOWN`` and left out of the comparison.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from winnow import images
from winnow.budget import cost
from winnow.errors import WinnowError
from winnow.lock import check_free
from winnow.records import Prompt, config_hash, read_json
from winnow.rundir import Stage, check_format, completed_manifest, reward_change_note, stored_config

UNKNOWN = "\x00known once the run gets there"
"""A config value only the run can know; a hash of a config holding one is UNKNOWN too."""
UPSTREAM_FIELDS = {
    "generate_hash": "generate",
    "score_hash": "score",
    "score_hashes": "score",
    "select_hash": "select",
    "steps": "adaptive step",
}
"""Config fields holding an upstream stage's hash -> that stage (for the refusal's words)."""


@dataclass
class StagePlan:
    """One stage folder: what the command will do there."""

    folder: Path
    action: str
    """run (no config.json yet) | resume (same config, not finished) | skip (finished) | refuse."""
    note: str = ""
    changes: list[str] = field(default_factory=list)
    """For refuse: what differs, 'field: old -> new'."""
    pending: int | None = None
    """generate only: completions still to sample (None where the run decides, as adaptive)."""


@dataclass
class Plan:
    """What a command will do, each part checked. ``lines`` is what ``--dry-run`` prints."""

    run_dir: Path
    stages: list[StagePlan]
    prompts: int | None = None
    samples: int | None = None
    """Completions per prompt and round: N x models (the most, for adaptive sampling)."""
    max_new_tokens: int | None = None
    price_per_mtok: list[float] | None = None
    """The openai backend's price (``IN,OUT`` per million tokens), for the most the completions cost."""
    rounds: int = 1
    adaptive: bool = False
    rewards: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    images: dict | None = None
    """The prompts' images (``images.stored_summary``): distinct files, bytes, prompts holding any."""
    more: list[str] = field(default_factory=list)
    """Lines of a step after the stages, printed before the outputs (``plan_eval``)."""

    def completions(self) -> tuple[int, int] | None:
        """(completions still to sample at most, completions already made); None where
        the command samples nothing. Adaptive sampling counts the most it may sample."""
        if self.prompts is None or self.samples is None:
            return None
        per_round = self.prompts * self.samples
        if self.adaptive:  # nothing left once the steps are put together in RUN_DIR/generate
            done = any(s.folder == self.run_dir / "generate" and s.action == "skip" for s in self.stages)
            return (0 if done else per_round), 0
        gen = {s.folder.parent: s.pending for s in self.stages if s.folder.name == "generate"}
        left = sum(per_round if pending is None else pending for pending in gen.values())
        left += (self.rounds - len(gen)) * per_round  # rounds not planned
        return left, per_round * self.rounds - left

    def lines(self) -> list[str]:
        out = []
        if self.prompts is not None:
            out.append(f"prompts: {self.prompts}")
        if self.images:
            i = self.images
            out.append(f"images: {i['files']} distinct ({i['bytes']:,} bytes) in {i['prompts']} prompts, stored once")
        if self.samples is not None:
            per = "at most " if self.adaptive else ""
            rounds = f", in each of {self.rounds} rounds" if self.rounds > 1 else ""
            out.append(f"samples: {per}{self.samples} per prompt{rounds}, at most {self.max_new_tokens} tokens each")
        if self.rewards:
            out.append(f"reward: {' + '.join(self.rewards)}")
        out.append("stages:")
        for s in self.stages:
            note = f"  ({s.note})" if s.note else ""
            out.append(f"  {s.action:<7} {s.folder}{note}")
        if self.adaptive:
            out.append("  (adaptive steps not listed are made as the run goes)")
        counts = self.completions()
        if counts is not None and self.max_new_tokens is not None:
            left, made = counts
            out += token_lines(left, self.max_new_tokens, self.price_per_mtok, made=made)
        out += self.more
        if self.outputs:
            out.append("outputs: " + ", ".join(map(str, self.outputs)))
        return out


def token_lines(
    left: int, max_new_tokens: int, price_per_mtok, *, made: int = 0, label: str = "tokens to sample", indent: str = ""
) -> list[str]:
    """The most tokens ``left`` completions can sample and, with a price, the most they cost
    (a dry run's lines; the prompts' tokens are not counted, only said)."""
    done = f"; {made:,} completions already made" if made else ""
    out = [
        f"{indent}{label}: at most {left * max_new_tokens:,} "
        f"({left:,} completions x max_new_tokens {max_new_tokens}{done})"
    ]
    if price_per_mtok is not None:
        most = cost(0, left * max_new_tokens, price_per_mtok)
        out.append(f"{indent}their price: at most {most:g} for those tokens, plus the prompts' tokens")
    return out


def check(
    run_dir: str | Path,
    prompts: list[Prompt] | None,
    configs: dict[str, Any],
    *,
    only: tuple[str, ...] | None = None,
    reward: Callable | None = None,
) -> Plan:
    """Check what ``pipeline.run_stages(run_dir, prompts, configs, only)`` will do; raise
    WinnowError (one line) on the first bad part, or naming every folder that would refuse.

    ``reward``: a callable used instead of the score config's reward (library use).
    """
    run_dir = Path(run_dir)

    def wanted(name: str) -> bool:
        return name in configs and (only is None or name in only)

    for section in configs.values():
        section.validate()
    if wanted("sft"):  # a misspelt TRL option is refused before anything is sampled
        from winnow.training import check_trl_options

        check_trl_options(configs["sft"])

    adaptive: Any = configs.get("adaptive")
    adaptive = adaptive if adaptive is not None and adaptive.step is not None else None
    rounds: Any = configs.get("rounds")
    count = rounds.count if rounds is not None and rounds.count is not None else None
    generate: Any = configs.get("generate")
    score: Any = configs.get("score")
    _check_sampling_and_models(configs, wanted, adaptive, rounds=count)
    plan = Plan(run_dir, [], rounds=count or 1, adaptive=adaptive is not None)
    if wanted("generate"):
        check_reads_images(generate, prompts or [])
        plan.images = images.stored_summary(prompts or []).get("images")
        plan.prompts = len(prompts or [])
        plan.samples = generate.n * len(generate.models)
        plan.max_new_tokens = generate.max_new_tokens
        plan.price_per_mtok = generate.price_per_mtok
    if score is not None and (wanted("score") or adaptive is not None):
        plan.rewards = check_rewards(score, _columns(run_dir, prompts, wanted("generate")), reward)
    if wanted("select") and configs.get("select") is not None:
        _check_select(configs["select"], score)
    if count is not None:
        for r in range(1, count + 1):
            plan.stages += _round_stages(run_dir, r, prompts or [], configs, rounds)
    else:
        plan.stages = _stages(run_dir, prompts, configs, wanted, adaptive, reward)
    plan.outputs = [s.folder for s in plan.stages]
    refused = follow_refusals(plan.stages)
    if refused:
        raise refusal(refused)
    return plan


def _check_select(select, score) -> None:
    """What the select stage reads besides the run: each eval file of ``--decontaminate``
    (readable), datasketch for ``--near-dedup``, and the pass threshold its strategy needs."""
    if select.decontaminate:
        from winnow.decontaminate import file_sha256

        for path in select.decontaminate:  # each eval file readable before any work
            file_sha256(path)
    if select.near_dedup:
        from winnow.decontaminate import load_datasketch

        load_datasketch()
    if score is not None:
        from winnow.stages.select import check_pass_threshold

        check_pass_threshold(
            select, select.pass_threshold if select.pass_threshold is not None else score.pass_threshold
        )


def _check_sampling_and_models(configs: dict[str, Any], wanted: Callable[[str], bool], adaptive, *, rounds) -> None:
    """What can be checked before any folder is looked at: adaptive sampling's sections
    (a single round, a stop rule it can test) and that every model a wanted stage loads exists.
    adaptive: the adaptive section when it samples in steps, else None; rounds: the count or None."""
    generate: Any = configs.get("generate")
    score: Any = configs.get("score")
    if adaptive is not None and rounds is not None:
        raise WinnowError("adaptive.step: adaptive sampling runs a single round; leave out --rounds")
    if adaptive is not None and score is not None:  # without a score config run_stages says what is missing
        from winnow.adaptive import check_adaptive

        check_adaptive(generate, score, adaptive)
    if wanted("generate"):
        check_models(generate)
    for name in ("sft", "dpo"):
        if wanted(name) and configs[name].model:
            from winnow.models import check_model

            check_model(configs[name].model)


def follow_refusals(stages: list[StagePlan]) -> list[StagePlan]:
    """The folders to redo: each refused one, and every later one already there (``stages``
    in run order): a stage redone under a new config gets a new hash, which each stage made
    after it recorded or sampled from (the next round's model is this round's checkpoint)."""
    upstream = None
    for s in stages:
        if s.action == "refuse":
            upstream = upstream or s.folder
        elif upstream is not None and s.action != "run":
            s.action, s.changes = "refuse", [f"made after {upstream}, which must be redone"]
    return [s for s in stages if s.action == "refuse"]


def refusal(refused: list[StagePlan]) -> WinnowError:
    """One error naming every folder that would refuse, and what changed in each."""
    parts = "; ".join(f"{s.folder}: {', '.join(s.changes)}" for s in refused)
    folders = " and ".join(str(s.folder) for s in refused)
    them = "these stages" if len(refused) > 1 else "this stage"
    return WinnowError(
        f"refusing to resume under a changed config (checked before any work): {parts}. "
        f"Use a new --run-dir, or delete {folders} to redo {them}."
    )


# ---- models and rewards -------------------------------------------------------------------


def check_models(generate) -> None:
    """Each generate model is a folder holding config.json, or smollm2 (a server's models
    are names the server knows: they are not checked here); the backend honours every
    sampling field asked of it."""
    from winnow.generate.contract import sampling_of

    sampling_of(generate)
    if generate.backend == "openai":
        return
    from winnow.models import check_model

    for spec in generate.models:
        check_model(spec)


def check_reads_images(generate, prompts: list[Prompt]) -> None:
    """With prompts that hold images, each model a local backend loads must be a
    vision-language model (a server's models are the server's to judge)."""
    first = next((p for p in prompts if p.images), None)
    if first is None or generate.backend == "openai":
        return
    from winnow.models import SMOLLM2, is_vision_language, resolve_model

    for spec in generate.models:  # smollm2 (a text model) is not converted just to be told so
        if spec == SMOLLM2 or not is_vision_language(resolve_model(spec)):
            raise WinnowError(
                f"prompt {first.id!r} has images, but model {spec} is not a vision-language model "
                "(its config has no vision_config)"
            )


def check_rewards(config, columns: tuple[str, ...] | None, reward: Callable | None = None) -> list[str]:
    """Load each reward of ``config.rewards()`` and check it can take the score stage's
    call; returns their names. ``columns``: the prompts columns (None: not known here)."""
    from winnow.rewards import BUILTINS, builtin_options, load_reward_fn
    from winnow.rewards.apply import refuse_option_columns

    if reward is not None:
        name = getattr(reward, "__qualname__", None) or type(reward).__name__
        check_call(reward, name, {}, columns)
        return [name]
    from winnow.rewards.fallback import check_fallback, fallback_note

    check_fallback(config)
    names = []
    for kind, spec in config.rewards():
        if kind == "model":
            from winnow.models import check_model

            check_model(spec)
            names.append(f"reward model {spec}")
            continue
        if kind == "prm":
            from winnow.rewards.prm import check_prm

            shape = check_prm(
                spec,
                shape=config.prm_shape,
                tag=config.prm_step_tag,
                labels=config.prm_labels,
                system=config.prm_system,
            )
            names.append(f"process reward model {spec} ({shape}, {config.prm_aggregate} of its steps)")
            continue
        if kind == "judge":
            if config.judge_rubric and not Path(config.judge_rubric).is_file():
                raise WinnowError(f"score.judge_rubric: file does not exist: {config.judge_rubric}")
            names.append(f"judge {config.judge_model} at {spec}")
            continue
        entry = BUILTINS.get(spec)
        for option in entry.reads if entry else ():
            _need_column(spec, getattr(config, option), columns, f"--{option.replace('_', '-')}")
        for column in entry.columns if entry else ():
            _need_column(spec, column, columns, "")
        options = builtin_options(spec, config)
        refuse_option_columns(spec, options, columns or ())
        check_call(load_reward_fn(spec), spec, options, columns)
        names.append(spec + fallback_note(config, spec))
    return names


def check_call(fn: Callable, name: str, options: dict, columns: tuple[str, ...] | None) -> None:
    """Bind ``fn``'s signature to the call the score stage makes: ``fn(prompts, completions,
    prompt_ids=..., sample_indices=..., <one keyword per prompts column>, **options)``.

    A parameter without a default beyond the first two is a prompts column the reward
    needs (code's ``test``): it must be among ``columns``. Nothing is called.

    >>> check_call(lambda prompts, completions, **kw: [], "ok", {}, ("answer",))
    >>> check_call(lambda prompts, completions: [], "bare", {}, ())
    Traceback (most recent call last):
    ...
    winnow.errors.WinnowError: reward function 'bare' cannot take the call the score stage makes, f(prompts, completions, prompt_ids=..., sample_indices=..., **columns): got an unexpected keyword argument 'prompt_ids'
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to read
    keywords = {"prompt_ids": [], "sample_indices": [], **{c: [] for c in columns or ()}, **options}
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:2]
    for p in params:
        needed = p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        if needed and p not in positional and p.name not in keywords:
            _need_column(name, p.name, columns, "")
            keywords[p.name] = []  # columns not known here
    try:
        signature.bind([], [], **keywords)
    except TypeError as e:
        raise WinnowError(
            f"reward function {name!r} cannot take the call the score stage makes, "
            f"f(prompts, completions, prompt_ids=..., sample_indices=..., **columns): {e}"
        ) from None


def _need_column(reward: str, column: str, columns: tuple[str, ...] | None, flag: str) -> None:
    if columns is None or column in columns:
        return
    hint = f"; set {flag}" if flag else ""
    raise WinnowError(
        f"reward {reward!r} reads the prompts column {column!r}, which the prompts do not have "
        f"(columns: {', '.join(columns) or 'none'}){hint}"
    )


def _columns(run_dir: Path, prompts: list[Prompt] | None, generating: bool) -> tuple[str, ...] | None:
    """The prompts columns the rewards will get: the prompts', or (``winnow score``) those
    of the generate stage's prompts; None when neither is there (the stage says so)."""
    from winnow.stages.score import column_names

    if prompts is not None and generating:
        return column_names(prompts)
    if (run_dir / "generate" / "manifest.json").is_file():
        from winnow.stream import load_prompts

        return column_names(load_prompts(run_dir, completed_manifest(run_dir, "generate")))
    return None


# ---- stage folders ------------------------------------------------------------------------


def _stages(run_dir: Path, prompts, configs: dict, wanted, adaptive, reward) -> list[StagePlan]:
    """The folders of a single-round run, each against the config it would be written under."""
    from winnow import adaptive as ad
    from winnow.sft import folder_config as sft_config
    from winnow.stages.generate import folder_config as generate_config
    from winnow.stages.score import folder_config as score_config
    from winnow.stages.select import folder_config as select_config

    out: list[StagePlan] = []
    generate: Any = configs.get("generate")
    score: Any = configs.get("score")
    gen_hash = UNKNOWN
    if wanted("generate") and adaptive is not None:
        out += _step_stages(run_dir, prompts, generate, score, adaptive, reward)
        out.append(
            stage_plan(run_dir / "generate", ad.assembled_generate_config(prompts, generate, score, adaptive, UNKNOWN))
        )
    elif wanted("generate"):
        expected = generate_config(prompts, generate)
        gen_hash = known_hash(expected)
        out.append(stage_plan(run_dir / "generate", expected, shards=generate_shards(prompts, generate)))
    elif wanted("score"):
        gen_manifest = completed_manifest(run_dir, "generate")
        gen_hash = gen_manifest["config_hash"]
    if wanted("score"):
        if adaptive is not None:
            expected = ad.assembled_score_config(score, UNKNOWN, UNKNOWN)
        elif not wanted("generate") and reward is None and ad.scored_under(gen_manifest) == score.stage_config():
            steps = [st["score_hash"] for st in gen_manifest["adaptive_steps"]]
            expected = ad.assembled_score_config(score, gen_hash, steps)
        else:
            expected = score_config(score, gen_hash, reward)
        out.append(stage_plan(run_dir / "score", expected))
    if wanted("select") and wanted("score"):  # `winnow run`: select and sft follow from score
        expected = select_config(configs["select"], {"score_hash": known_hash(expected)})
        out.append(stage_plan(run_dir / "select", expected))
        if wanted("sft"):
            out.append(stage_plan(run_dir / "sft", sft_config(configs["sft"], known_hash(expected))))
    return out


def _step_stages(run_dir: Path, prompts, generate, score, adaptive, reward) -> list[StagePlan]:
    """The adaptive steps already in the run dir (later ones are made as the run goes):
    step s samples columns (s-1) x step on; from step 2 on, of the prompts still open."""
    from winnow import adaptive as ad
    from winnow.stages.generate import folder_config as generate_config
    from winnow.stages.score import folder_config as score_config

    out = []
    for s in range(1, math.ceil(generate.n / adaptive.step) + 1):
        folder = ad.step_dir(run_dir, s)
        if not folder.is_dir():
            break
        start = (s - 1) * adaptive.step
        config = replace(generate, n=min(adaptive.step, generate.n - start), seed=ad.step_seed(generate.seed, s))
        expected = generate_config(prompts, config, first_column=start)
        if s > 1:
            expected["prompts_hash"] = UNKNOWN  # the prompts still open after step s-1
        out.append(stage_plan(folder / "generate", expected))
        out.append(stage_plan(folder / "score", score_config(score, known_hash(expected), reward)))
    return out


def _round_stages(run_dir: Path, r: int, prompts: list[Prompt], configs: dict, rounds) -> list[StagePlan]:
    """Round r's folders (``winnow.rounds``): from round 2 on, the model sampled is the
    checkpoint round r-1 trains, so its identity and the hashes that follow from it are
    UNKNOWN here (as are earlier rounds' score hashes in select's pool)."""
    from winnow import rounds as ro
    from winnow.sft import folder_config as sft_config
    from winnow.stages.generate import folder_config as generate_config
    from winnow.stages.score import folder_config as score_config
    from winnow.stages.select import folder_config as select_config

    folder = ro.round_dir(run_dir, r)
    generate = configs["generate"]
    previous = str(ro.round_dir(run_dir, r - 1) / "sft" / "checkpoint")  # as sft names it
    config = replace(generate, models=generate.models if r == 1 else [previous], seed=ro.round_seed(generate.seed, r))
    expected = generate_config(prompts, config)
    if r > 1:
        expected["provenance"] = UNKNOWN  # the checkpoint round r-1 trains
    gen_plan = stage_plan(folder / "generate", expected, shards=generate_shards(prompts, config))
    score_expected = score_config(configs["score"], known_hash(expected))
    pool = range(1, r + 1) if rounds.pool == "all" else [r]
    score_hashes = {str(s): known_hash(score_expected) if s == r else UNKNOWN for s in pool}
    select_expected = select_config(configs["select"], {"score_hashes": score_hashes})
    start = configs["sft"]
    base = previous if rounds.sft_from == "previous" and r > 1 else start.model
    sft_expected = sft_config(replace(start, model=base), known_hash(select_expected))
    if base == previous:
        sft_expected["provenance"] = UNKNOWN
    return [
        gen_plan,
        stage_plan(folder / "score", score_expected),
        stage_plan(folder / "select", select_expected),
        stage_plan(folder / "sft", sft_expected),
    ]


def generate_shards(prompts, generate) -> dict[str, int]:
    """Shard file name -> completions it holds, as ``stages.generate`` names the shards."""
    from winnow.executors import shard_file
    from winnow.stages.generate import shard_name

    size, m = generate.shard_size, len(prompts or [])
    return {
        shard_file(Path("."), shard_name(k, i)).name: min(size, m - i * size) * generate.n
        for k in range(len(generate.models))
        for i in range(math.ceil(m / size))
    }


def known_hash(config: dict) -> str:
    """The config's hash, as a Stage computes it; UNKNOWN if any part of it is."""
    return UNKNOWN if unknown(config) else config_hash(stored_config(config))


def unknown(value) -> bool:
    """Whether any part of a config value is UNKNOWN.

    >>> unknown({"a": [1, UNKNOWN]}), unknown({"a": [1, 2]})
    (True, False)
    """
    if isinstance(value, dict):
        return any(unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(unknown(v) for v in value)
    return value == UNKNOWN


def stage_plan(folder: Path, expected: dict, *, shards: dict[str, int] | None = None) -> StagePlan:
    """What the run will do in ``folder``, given the config it would write there.

    shards: for generate, shard file -> completions, to count what is left to sample."""
    check_free(folder / "lock")
    pending = sum(shards.values()) if shards is not None else None
    path = folder / "config.json"
    if not path.is_file():
        return StagePlan(folder, "run", pending=pending)
    stored = read_json(path)
    check_format(folder, stored)  # another format is refused whole, not compared field by field
    expected = stored_config(expected)
    changes = _changes(stored, expected)
    if changes:
        changes[-1] += reward_change_note(stored, expected)  # a changed hash alone says nothing of its cause
        return StagePlan(folder, "refuse", changes=changes)
    stage = Stage(folder.parent, folder.name, stored)  # reads only: no lock, no folder made
    if stage.is_complete():
        return StagePlan(folder, "skip", "complete", pending=0 if shards is not None else None)
    recorded = stage.records()  # the shards its ledger records
    if shards is not None:
        made = [name for name in shards if name in recorded]
        pending = sum(n for name, n in shards.items() if name not in recorded)
        return StagePlan(folder, "resume", f"{len(made)} of {len(shards)} shards made", pending=pending)
    made_note = f"{len(recorded)} shard{'s' if len(recorded) != 1 else ''} made" if recorded else ""
    return StagePlan(folder, "resume", made_note)


def _changes(stored, expected, prefix: str = "") -> list[str]:
    """'field: old -> new' for each known value that differs (UNKNOWN ones are skipped);
    a changed upstream hash reads 'made from another <stage> stage'."""
    if expected == UNKNOWN:
        return []
    top = prefix.split(".")[0]
    if top in UPSTREAM_FIELDS and stored != expected and not unknown(expected):
        return [f"made from another {UPSTREAM_FIELDS[top]} stage ({top})"]
    if isinstance(stored, dict) and isinstance(expected, dict):
        out = []
        for key in sorted(set(stored) | set(expected)):
            out += _changes(stored.get(key), expected.get(key), f"{prefix}{key}.")
        return out
    if isinstance(stored, list) and isinstance(expected, list) and len(stored) == len(expected):
        return [
            c for i, (a, b) in enumerate(zip(stored, expected, strict=True)) for c in _changes(a, b, f"{prefix}{i}.")
        ]
    if stored != expected:
        return [f"{prefix.rstrip('.')}: {_short(stored)} -> {_short(expected)}"]
    return []


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
