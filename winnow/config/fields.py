"""What a config field may hold, said once, next to the field: choices as ``Literal``
annotations (``noun`` in the metadata names them in messages), numeric bounds in the
field's metadata (``bounded``), device names as a pattern (``device_field``); ``check_fields`` validates every field from these alone, so only the
rules that tie several fields together are written by hand in a section's ``validate``.

This module imports nothing of winnow but ``winnow.errors``: configuration is the bottom
layer, and the modules that dispatch on these names (select's strategies, generate's
backends, models' dtypes, the executors) check their tables against the ``Literal``.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import typing
from dataclasses import Field, field, fields
from typing import Any, Literal

from winnow.errors import WinnowError

Backend = Literal["hf", "openai", "vllm"]
"""Generation engines (``winnow.generate.contract.BACKENDS`` holds what each honours)."""
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
"""Weight and activation precisions (``winnow.models.torch_dtype`` maps them)."""
LongPrompts = Literal["error", "skip"]
OnError = Literal["fail", "skip"]
"""What a row that fails does: stop the stage (exit 2, naming the row) or be recorded in the
stage's ``errors.jsonl`` and left without completions or reward (``winnow.executors.shards``)."""
Endpoint = Literal["auto", "chat", "completions"]
PrefixSharing = Literal["auto", "on", "off", "packed"]
IfevalMode = Literal["strict", "loose"]
PrmShape = Literal["auto", "math-shepherd", "token-class"]
"""Process reward model shapes (``winnow.rewards.prm.SHAPES`` holds how each is read)."""
PrmAggregate = Literal["min", "last", "prod", "mean"]
"""How a process reward model's step scores make one reward (``winnow.rewards.prm.AGGREGATES``)."""
Strategy = Literal[
    "top_per_prompt",
    "top_k_overall",
    "top_k_per_prompt",
    "threshold",
    "random_per_prompt",
    "random_k_overall",
    "rso",
    "passing",
]
"""Selection strategies (``winnow.select.STRATEGIES`` holds how each runs)."""
Pairing = Literal["best-worst", "all", "rso", "pass-fail"]
"""Ways to build preference pairs (``winnow.select.PAIRINGS``)."""
Pool = Literal["all", "latest"]
SftFrom = Literal["start", "previous"]
StopRule = Literal["pass", "pass-and-fail", "passing", "consensus", "confident-consensus"]
"""Names of adaptive sampling's stop rules (``passing`` takes ``:K``, the consensus rules ``:F``)."""
Executor = Literal["local", "ray"]
"""Executors (``winnow.executors.run_shards`` dispatches on them)."""
Scheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
]
"""Learning-rate schedules: transformers' ``SchedulerType`` values, TRL's ``lr_scheduler_type``."""
ReportTo = Literal["none", "tensorboard", "wandb"]
"""Where training also logs its losses (the stage manifest always holds them)."""
ReasoningFormat = Literal["think"]
"""Named reasoning formats (``winnow.verifiers.reasoning.FORMATS`` holds their tags)."""

DTYPES = typing.get_args(Dtype)
ENDPOINTS = typing.get_args(Endpoint)
REWARD_PREFIX_SHARING = typing.get_args(PrefixSharing)
"""The names above as tuples, for the modules that check or list them."""

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = ("auto", "cpu", "mps", "cuda", "cuda:N")
"""What ``DEVICE`` accepts, as help and error messages show it."""
MAX_SEED = 2**63 - 1
"""The largest seed: a signed 64-bit integer, which numpy, torch and every backend take."""


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = False,
    zero: str | None = None,
    unit: str | None = None,
    note: str | None = None,
    interval: bool = False,
) -> Any:
    """A numeric field and its range, kept in the field's metadata for ``check_fields``
    (and for ``winnow serve``'s request bodies, which take the same bounds).

    ``finite``: inf refused too; ``zero``: 0 also accepted, and what it means (``greedy``);
    ``unit``, ``note`` and ``interval`` only shape the message. None (for an optional field)
    is always accepted.
    """
    given = {"ge": ge, "gt": gt, "le": le, "lt": lt, "zero": zero, "unit": unit, "note": note}
    meta: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    meta |= {k: True for k, on in (("finite", finite), ("interval", interval)) if on}
    return field(default=default, metadata=meta)


def seed_field(default: int = 0) -> Any:
    """A seed: any unsigned 64-bit integer numpy and torch both take."""
    return bounded(default, ge=0, le=MAX_SEED)


def device_field(default: str = "auto") -> Any:
    """A device: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (a pattern, not a closed list)."""
    return field(default=default, metadata={"pattern": DEVICE, "shown": DEVICES})


def bounds(cls: type, name: str, *, sides: tuple[str, ...] = ("ge", "gt", "le", "lt")) -> dict[str, float]:
    """A field's numeric bounds as keyword arguments (pydantic's ``Field`` takes them).

    >>> from winnow.config import GenerateConfig
    >>> bounds(GenerateConfig, "top_p"), bounds(GenerateConfig, "n", sides=("ge",))
    ({'gt': 0, 'le': 1}, {'ge': 1})
    """
    meta = next(f.metadata for f in fields(cls) if f.name == name)
    return {k: meta[k] for k in sides if k in meta}


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved annotation of each field of a config dataclass."""
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def literal_of(annotation: Any) -> tuple[str, ...]:
    """The values of the ``Literal`` in an annotation (``Pairing | None`` too); () if none.

    >>> literal_of(Pool | None), literal_of(int)
    (('all', 'latest'), ())
    """
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return next((v for a in typing.get_args(annotation) if (v := literal_of(a))), ())


def check_fields(config: Any) -> None:
    """Every field of ``config`` against its annotation's ``Literal`` and its metadata; the
    first bad one raises ``WinnowError("section.field: ...")``."""
    cls = type(config)
    for spec in fields(config):
        problem = problem_of(cls, spec.name, getattr(config, spec.name))
        if problem:
            raise WinnowError(f"{cls.section}.{spec.name}: {problem}")


def problem_of(cls: type, name: str, value: Any) -> str | None:
    """What ``check_fields`` would say of ``value`` in field ``name`` of ``cls`` (None: fine),
    without the ``section.field:`` prefix: ``winnow serve`` refuses a request's field with it.

    >>> from winnow.config import GenerateConfig
    >>> problem_of(GenerateConfig, "temperature", 1e-6), problem_of(GenerateConfig, "temperature", 0.0)
    ('must be 0 (greedy) or a number between 1e-05 and 100, got 1e-06', None)
    """
    spec = next(f for f in fields(cls) if f.name == name)
    return None if value is None else _problem(value, spec, literal_of(hints(cls)[name]))


def _problem(value: Any, spec: Field, values: tuple[str, ...]) -> str | None:
    """What is wrong with one value, as the message says it; None if nothing."""
    meta = spec.metadata
    if values and value not in values:
        if "noun" in meta:
            return f"unknown {meta['noun']} {value!r} (choose from {', '.join(values)})"
        return f"must be one of {', '.join(values)}, got {value!r}"
    if "pattern" in meta and not meta["pattern"].fullmatch(value):
        shown = meta["shown"]
        return f"must be {', '.join(shown[:-1])} or {shown[-1]}, got {value!r}"
    ok = (
        ("ge" not in meta or value >= meta["ge"])
        and ("gt" not in meta or value > meta["gt"])
        and ("le" not in meta or value <= meta["le"])
        and ("lt" not in meta or value < meta["lt"])
        and (not meta.get("finite") or math.isfinite(value))
    )
    if ok or (meta.get("zero") and value == 0):
        return None
    return f"must be {rule(meta)}, got {value}"


def rule(meta: Any) -> str:
    """The range a field's metadata allows, in words.

    >>> rule({"gt": 0, "le": 1}), rule({"ge": 1, "le": 10_000}), rule({"gt": 0, "finite": True})
    ('in (0, 1]', 'between 1 and 10000', 'finite and > 0')
    >>> rule({"ge": 1e-5, "le": 100, "zero": "greedy"}), rule({"ge": 0, "le": 2**63 - 1})
    ('0 (greedy) or a number between 1e-05 and 100', 'between 0 and 2**63 - 1')
    >>> rule({"ge": 0, "lt": 1}), rule({"ge": 0, "le": 1, "interval": True}), rule({"lt": 1}), rule({"le": 1})
    ('in [0, 1)', 'in [0, 1]', '< 1', '<= 1')
    >>> rule({"gt": 0, "finite": True, "unit": "seconds"}), rule({"finite": True}), rule({"ge": 1, "note": "1 = off"})
    ('a finite number of seconds > 0', 'finite', '>= 1 (1 = off)')
    """
    low = next(((op, meta[k]) for k, op in (("ge", ">="), ("gt", ">")) if k in meta), None)
    high = next(((op, meta[k]) for k, op in (("le", "<="), ("lt", "<")) if k in meta), None)
    if low and high and low[0] == ">=" and high[0] == "<=" and not meta.get("interval"):
        text = f"between {_num(low[1])} and {_num(high[1])}"
    elif low and high:
        opening, closing = "[" if low[0] == ">=" else "(", "]" if high[0] == "<=" else ")"
        text = f"in {opening}{_num(low[1])}, {_num(high[1])}{closing}"
    elif low or high:
        op, bound = low or high  # type: ignore[misc]
        text = f"{op} {_num(bound)}"
        if meta.get("unit"):
            text = f"a finite number of {meta['unit']} {text}"
        elif meta.get("finite"):
            text = f"finite and {text}"
    else:
        text = "finite"
    if meta.get("zero"):
        text = f"0 ({meta['zero']}) or a number {text}"
    return f"{text} ({meta['note']})" if meta.get("note") else text


def check_price(name: str, price: list[float] | None) -> None:
    """A ``price_per_mtok`` field: None, or ``[IN, OUT]``, two finite prices >= 0 (per million
    prompt and completion tokens).

    >>> check_price("generate.price_per_mtok", [0.15, 0.6])
    >>> check_price("generate.price_per_mtok", [0.15])
    Traceback (most recent call last):
    winnow.errors.WinnowError: generate.price_per_mtok: expected IN,OUT (two prices per million tokens), got [0.15]
    """
    if price is None:
        return
    ok = isinstance(price, list) and len(price) == 2
    if not ok or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in price):
        raise WinnowError(f"{name}: expected IN,OUT (two prices per million tokens), got {price!r}")
    if not all(math.isfinite(x) and x >= 0 for x in price):
        raise WinnowError(f"{name}: prices must be finite and >= 0, got {price!r}")


def _num(x: float) -> str:
    """A bound as a reader writes it, and the seed limit as 2**63 - 1.

    >>> _num(10_000), _num(0.01), _num(1e-5), _num(100.0), _num(2**63 - 1)
    ('10000', '0.01', '1e-05', '100', '2**63 - 1')
    """
    if x == MAX_SEED:
        return "2**63 - 1"
    return str(x) if isinstance(x, int) else f"{x:g}"
