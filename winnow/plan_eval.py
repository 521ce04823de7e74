"""The held-out evaluation's part of a plan (``winnow run --eval-prompts``): checked and
listed by ``--dry-run`` as the other stages are, reading only.

After training, ``winnow.evaluation`` samples and scores the held-out prompts with the
starting model and each round's checkpoint, one run dir each under ``RUN_DIR/eval``
(``start``, ``round-1``...). Here each of those folders is compared with the config it
would be written under (``plan.stage_plan``). A checkpoint is made by the run itself, so
its identity, and the hashes that follow from it, are ``UNKNOWN`` until then; a folder of
one model never refuses because of another's (the models are sampled independently).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from winnow.plan import (
    UNKNOWN,
    StagePlan,
    check_models,
    check_rewards,
    follow_refusals,
    generate_shards,
    known_hash,
    refusal,
    stage_plan,
    token_lines,
)
from winnow.records import Prompt
from winnow.report.evals import FOLDER, model_dir


@dataclass
class EvalPlan:
    """What the evaluation will do: its models by name, and each model's two folders."""

    source: str
    """The held-out prompts file (``eval.prompts``)."""
    prompts: int
    models: dict[str, str]
    stages: list[StagePlan]
    samples: int
    """Completions per prompt and model (generate's n)."""
    max_new_tokens: int
    price_per_mtok: list[float] | None = None

    def lines(self) -> list[str]:
        """What ``--dry-run`` prints of it, after the run's own stages."""
        named = ", ".join(f"{name} ({model})" for name, model in self.models.items())
        out = [
            f"held-out eval: {self.prompts} prompt{'s' if self.prompts != 1 else ''} from {self.source}, "
            f"{self.samples} samples per prompt and model, at most {self.max_new_tokens} tokens each",
            f"  models: {named}",
        ]
        out += [f"  {s.action:<7} {s.folder}" + (f"  ({s.note})" if s.note else "") for s in self.stages]
        left = sum(
            self.prompts * self.samples if s.pending is None else s.pending
            for s in self.stages
            if s.folder.name == "generate"
        )
        label = "tokens to sample for it"
        return out + token_lines(left, self.max_new_tokens, self.price_per_mtok, label=label, indent="  ")


def eval_models(run_dir: str | Path, configs: dict[str, Any]) -> dict[str, str]:
    """The models ``pipeline.evaluate_run`` will evaluate, in order: ``start`` (sft.model),
    then each round's checkpoint where sft writes it (``RUN_DIR/sft/checkpoint``, or
    ``RUN_DIR/round-<r>/sft/checkpoint`` of a --rounds run)."""
    rounds = configs.get("rounds")
    count = rounds.count if rounds is not None and rounds.count is not None else None
    folders = [Path(run_dir)] if count is None else [Path(run_dir) / f"round-{r}" for r in range(1, count + 1)]
    checkpoints = {f"round {r}": str(folder / "sft" / "checkpoint") for r, folder in enumerate(folders, start=1)}
    return {"start": configs["sft"].model, **checkpoints}


def check_eval(run_dir: str | Path, held_out: list[Prompt], configs: dict[str, Any], *, reward=None) -> EvalPlan:
    """Check the evaluation ``run_stages`` will make after training; raise WinnowError (one
    line) on a bad part (the reward cannot read the held-out prompts, a model is missing, a
    folder under RUN_DIR/eval would refuse its config)."""
    models = eval_models(run_dir, configs)
    check_models(replace(configs["generate"], models=[models["start"]]))  # the checkpoints do not exist yet
    trained = set(models) - {"start"}  # made by the run: their identity is UNKNOWN until then
    source = str(configs["eval"].prompts)
    return plan_models(Path(run_dir) / FOLDER, held_out, source, models, configs, trained=trained, reward=reward)


def plan_models(
    out: Path,
    held_out: list[Prompt],
    source: str,
    models: dict[str, str],
    configs: dict[str, Any],
    *,
    trained=(),
    reward=None,
) -> EvalPlan:
    """The evaluation of ``models`` (name -> model) on ``held_out`` (read from the file
    ``source``) into ``out``/<name>: the reward against the
    held-out columns and each model's two folders against the configs they would be written
    under (``trained``: names of checkpoints not made yet). ``winnow eval --dry-run`` and
    ``check_eval`` share it; raises WinnowError on the first folder that would refuse."""
    from winnow.stages.generate import folder_config as generate_config
    from winnow.stages.score import column_names
    from winnow.stages.score import folder_config as score_config

    generate, score = configs["generate"], configs["score"]
    check_rewards(score, column_names(held_out), reward)
    stages: list[StagePlan] = []
    for name, model in models.items():
        folder, sampled = model_dir(out, name), replace(generate, models=[model])
        expected = generate_config(held_out, sampled)
        if name in trained:
            expected["provenance"] = UNKNOWN
        pair = [
            stage_plan(folder / "generate", expected, shards=generate_shards(held_out, sampled)),
            stage_plan(folder / "score", score_config(score, known_hash(expected), reward)),
        ]
        if refused := follow_refusals(pair):
            raise refusal(refused)
        stages += pair
    return EvalPlan(
        source=source,
        prompts=len(held_out),
        models=models,
        stages=stages,
        samples=generate.n,
        max_new_tokens=generate.max_new_tokens,
        price_per_mtok=generate.price_per_mtok,
    )
