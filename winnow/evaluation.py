"""Held-out evaluation (``winnow eval``, ``winnow run --eval-prompts``, the demos): each model
samples the same prompts with the same generate config, seed included, and one reward scores
them; each gain gets a paired bootstrap 95% interval, prompts resampled.

Layout (OUT: ``winnow eval``'s run dir, or ``RUN_DIR/eval`` of a run)::

    OUT/<name>/generate, score   one ordinary run dir per model: each stage resumes as in any run
    OUT/eval.json                every number below
    OUT/eval.md                  the same as tables
    OUT/eval_curve.png           each model's mean reward (and pass@1) with its 95% interval

The numbers, for a reward matrix R of shape (P, N) per model (NaN: unscored):

- ``mean_reward``: the mean of R's scored cells; its interval: a percentile bootstrap of the
  mean of per-prompt means (``nanmean(R, axis=1)``, shape (P,)), prompts resampled.
- with ``score.pass_threshold`` t: ``pass_at_1``, the mean over prompts of the share of
  scored samples with reward >= t (``winnow.select.pass_rates``), and pass@k for k = 1..N
  (``winnow.report.passk``, over fully scored prompts).
- a gain of model B over model A: ``mean(m_B - m_A)`` of the per-prompt means (or pass
  rates), with ``winnow.report.stats.paired_bootstrap`` over the two (P,) vectors.

Gains: each model over the one before it, and the last over the first when there are more
than two (start -> round 1 -> round 2, and round 2 over start).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow import stages
from winnow.config import EvalConfig, ExecutorConfig, GenerateConfig, ScoreConfig
from winnow.errors import WinnowError
from winnow.records import Prompt, atomic_write_json, atomic_write_text
from winnow.report import evals
from winnow.report.evals import model_dir
from winnow.report.passk import bootstrap_band, pass_stats
from winnow.report.stats import paired_bootstrap
from winnow.rundir import load_scored

Step = Callable[[str], contextlib.AbstractContextManager]
"""A context manager around each model's generate + score, given a label (the demos time them)."""


def eval_models(generate: GenerateConfig, config: EvalConfig) -> dict[str, str]:
    """``winnow eval``'s models by name: ``model`` (the one ``--model``), after ``baseline``."""
    if len(generate.models) != 1:
        raise WinnowError(
            f"generate.models: winnow eval evaluates one model, got {len(generate.models)}; "
            "give the other as --baseline to compare two"
        )
    if config.prompts is not None:
        raise WinnowError("eval.prompts: for winnow run (--eval-prompts); winnow eval reads --prompts")
    given = {"baseline": config.baseline, "model": generate.models[0]}
    return {name: model for name, model in given.items() if model is not None}


def evaluate(
    out: str | Path,
    prompts: list[Prompt],
    models: dict[str, str],
    generate: GenerateConfig,
    score: ScoreConfig,
    config: EvalConfig | None = None,
    *,
    reward=None,
    executor: ExecutorConfig | None = None,
    step: Step | None = None,
) -> dict:
    """Evaluate ``models`` (name -> model, in the order the curve shows them) on ``prompts``
    into ``out``; returns eval.json's dict. A rerun resumes each model's finished stages.

    ``generate``: the sampling of every model (its ``models`` is replaced by each one);
    ``reward``: a callable that overrides the score config's (library use)."""
    config = config or EvalConfig()
    config.validate()
    if not models:
        raise WinnowError("eval: no model to evaluate")
    from winnow.plan import check

    for name, model in models.items():  # every model and the reward, before any is sampled
        check(
            model_dir(out, name),
            prompts,
            {"generate": replace(generate, models=[model]), "score": score},
            reward=reward,
        )
    step = step or (lambda _: contextlib.nullcontext())
    first = model_dir(out, next(iter(models)))  # keeps the images; the other models' are hard links
    for name, model in models.items():
        folder = model_dir(out, name)
        with step(f"held-out: generate + score ({name})"):
            sampling = replace(generate, models=[model])
            stages.generate(folder, prompts, sampling, executor=executor, image_store=first)
            stages.score(folder, score, reward=reward, executor=executor)
    result = summarize(
        out, models, threshold=score.pass_threshold, iters=config.bootstrap_iters, seed=config.bootstrap_seed
    )
    write(out, result)
    return result


def summarize(out: str | Path, models: dict[str, str], *, threshold: float | None, iters: int, seed: int) -> dict:
    """eval.json's dict from the models' finished score stages under ``out``."""
    loaded = {name: load_scored(model_dir(out, name)) for name in models}
    ids = {name: [p.id for p in prompts] for name, (prompts, *_) in loaded.items()}
    first = next(iter(models))
    for name in models:  # the gains pair prompts by row: every model's rows must be the same prompts
        if ids[name] != ids[first]:
            raise WinnowError(
                f"{model_dir(out, name)}: not the prompts of {model_dir(out, first)}; evaluate into a new folder"
            )
    matrices = {name: rewards for name, (_, _, rewards, _) in loaded.items()}
    prompts, n = matrices[first].shape
    means = {name: _prompt_means(r) for name, r in matrices.items()}
    rates = {name: sel.pass_rates(r, threshold) for name, r in matrices.items()} if threshold is not None else {}
    result = {
        "prompts": int(prompts),
        "samples_per_prompt": int(n),
        "pass_threshold": threshold,
        "bootstrap": {"iters": iters, "seed": seed, "level": 0.95},
        "models": [  # a list: eval.json's keys are sorted, the curve's order is not
            {
                "name": name,
                **_model_entry(model, matrices[name], means[name], rates.get(name), threshold, iters=iters, seed=seed),
            }
            for name, model in models.items()
        ],
        "gains": gains(list(models), means, rates, iters=iters, seed=seed),
    }
    return _json_ready(result)


def _prompt_means(rewards: np.ndarray) -> np.ndarray:
    """Per-prompt mean reward over scored samples, shape (P,); NaN for a prompt with none."""
    with np.errstate(invalid="ignore", divide="ignore"), _no_empty_warning():
        return np.nanmean(rewards, axis=1)


def _model_entry(
    model: str, rewards: np.ndarray, means: np.ndarray, rates, threshold, *, iters: int, seed: int
) -> dict:
    scored = ~np.isnan(rewards)
    entry = {
        "model": model,
        "completions": int(rewards.size),
        "scored": int(scored.sum()),
        "mean_reward": float(np.nanmean(rewards)) if scored.any() else None,
        "mean_reward_ci95": _mean_interval(means, iters=iters, seed=seed),
    }
    if threshold is not None:
        stats = pass_stats(rewards, threshold, iters=iters, seed=seed)
        entry["pass_at_1"] = float(np.mean(rates))
        entry["pass_at_1_ci95"] = _mean_interval(rates, iters=iters, seed=seed)
        entry["pass_at_k"] = {key: stats["pass_at_k"][key] for key in ("k", "mean", "low", "high", "rows")}
        entry["solved"] = stats["solved"]
    return entry


def _mean_interval(values: np.ndarray, *, iters: int, seed: int) -> list[float] | None:
    """Percentile bootstrap 95% interval of the mean of ``values`` (P,) over the prompts that
    have one, prompts resampled; None when none has."""
    kept = values[~np.isnan(values)]
    if kept.size == 0:
        return None
    low, high = bootstrap_band(kept[:, None], iters=iters, seed=seed)
    return [float(low[0]), float(high[0])]


def gains(
    names: list[str], means: dict[str, np.ndarray], rates: dict[str, np.ndarray], *, iters: int, seed: int
) -> list[dict]:
    """Each model over the one before it, and the last over the first when more than two.

    means (and rates, with a threshold): name -> shape (P,), on the same prompts in the same
    order. ``gain`` is mean(after - before); ``ci95`` its ``paired_bootstrap`` interval."""
    pairs = list(itertools.pairwise(names))
    if len(names) > 2:
        pairs.append((names[0], names[-1]))
    out = []
    for before, after in pairs:
        low, high = paired_bootstrap(means[before], means[after], iters=iters, seed=seed)
        gain = {
            "before": before,
            "after": after,
            "gain": float(np.mean(means[after] - means[before])),
            "ci95": [low, high],
        }
        if rates:
            low, high = paired_bootstrap(rates[before], rates[after], iters=iters, seed=seed)
            gain["pass_at_1_gain"] = float(np.mean(rates[after] - rates[before]))
            gain["pass_at_1_ci95"] = [low, high]
        out.append(gain)
    return out


def write(out: str | Path, result: dict) -> None:
    """eval.json, eval.md and the curve, each written whole (temp file and rename)."""
    out = Path(out)
    evals.draw(result, out / evals.CURVE)
    atomic_write_json(out / "eval.json", result)
    atomic_write_text(
        out / "eval.md", "\n".join(["# winnow eval", "", *evals.markdown(result), f"![curve]({evals.CURVE})", ""])
    )


@contextlib.contextmanager
def _no_empty_warning():
    """A prompt with no scored sample has a NaN mean by design: no 'Mean of empty slice' warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _json_ready(obj):
    """NaN becomes null, so eval.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
