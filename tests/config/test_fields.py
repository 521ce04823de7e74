"""winnow.config.fields: every field checked from its annotation and metadata alone, each
name list a ``Literal`` that the dispatching modules' tables follow, and ``winnow serve``
refusing a request's sampling field exactly where ``winnow generate`` refuses the value."""

from __future__ import annotations

import ast
import inspect
import math
from dataclasses import fields
from typing import get_args

import pytest
from pydantic import ValidationError

from winnow.config import SECTIONS, GenerateConfig
from winnow.config.fields import Backend, Executor, Pairing, ReasoningFormat, Strategy, bounds, problem_of
from winnow.errors import WinnowError
from winnow.serve.schema import ChatCompletionRequest, CompletionRequest

NUMERIC = [
    (section, f.name)
    for section, cls in SECTIONS.items()
    for f in fields(cls)
    if {"ge", "gt", "le", "lt"} & set(f.metadata)
]


BESIDE = {
    # vllm: the only backend taking the engine fields; top_logprobs: the confidence fields need it
    "generate": {"models": ["m"], "backend": "vllm", "top_logprobs": 20},
    "adaptive": {"step": 1},
    "serve": {"best_of": 1, "max_best_of": 1024, "default_max_tokens": 1, "max_tokens": 1 << 20},
    "sft": {"lora": True},  # the LoRA options apply with LoRA only
    "dpo": {"lora": True},
}
"""Values that keep a section's rules between fields out of the way."""
SERVER = {"backend": "openai", "base_url": "http://127.0.0.1:1/v1"}
JUDGE = {"reward_judge": "http://127.0.0.1:1/v1", "judge_model": "j"}
ONLY_WITH = {
    ("generate", "max_requests_per_minute"): SERVER,
    ("generate", "max_tokens_per_minute"): SERVER,
    ("score", "judge_max_requests_per_minute"): JUDGE,
    ("score", "judge_max_tokens_per_minute"): JUDGE,
}
"""Fields that one backend or reward alone takes: the values that name it."""


def _valid(cls: type, **values):
    """A config of ``cls`` that passes its cross-field rules, with ``values`` set."""
    return cls(**{**BESIDE.get(cls.section, {}), **values})


def _outside(meta) -> list[float]:
    """Values just past each bound the metadata sets."""
    out = []
    for side, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
        if side in meta:
            bound = meta[side]
            if isinstance(bound, int) and step:
                out.append(bound + step)
            else:
                out.append(math.nextafter(bound, -math.inf if side in ("ge", "gt") else math.inf))
    return [v for v in out if not (meta.get("zero") and v == 0)]


@pytest.mark.parametrize(("section", "name"), NUMERIC)
def test_every_bounded_field_takes_its_bounds_and_refuses_past_them(section, name):
    cls = SECTIONS[section]
    spec = next(f for f in fields(cls) if f.name == name)
    meta = spec.metadata
    beside = ONLY_WITH.get((section, name), {})
    for side in ("ge", "le"):  # a closed bound is itself accepted
        if side in meta and not (spec.type.startswith("int") and isinstance(meta[side], float)):
            _valid(cls, **beside, **{name: meta[side]}).validate()
    for bad in _outside(meta):
        with pytest.raises(WinnowError) as caught:
            _valid(cls, **beside, **{name: bad}).validate()
        assert str(caught.value) == f"{section}.{name}: {problem_of(cls, name, bad)}"
        assert str(caught.value).endswith(f", got {bad}")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0.0, None),
        (1e-5, None),
        (100, None),
        (9e-6, "must be 0 (greedy) or a number between 1e-05 and 100, got 9e-06"),
        (100.5, "must be 0 (greedy) or a number between 1e-05 and 100, got 100.5"),
        (math.nan, "must be 0 (greedy) or a number between 1e-05 and 100, got nan"),
    ],
)
def test_the_temperature_rule(value, problem):
    assert problem_of(GenerateConfig, "temperature", value) == problem


def test_the_dispatch_tables_follow_their_literals():
    from winnow import executors, models, select
    from winnow.generate.contract import BACKENDS
    from winnow.verifiers.reasoning import FORMATS

    assert tuple(select.STRATEGIES) == get_args(Strategy)
    assert tuple(select.PAIRINGS) == get_args(Pairing)
    assert tuple(BACKENDS) == get_args(Backend)
    assert tuple(FORMATS) == get_args(ReasoningFormat)
    assert models.DTYPES == ("auto", "float32", "bfloat16", "float16")
    # run_shards dispatches with a match on the executor's name: one case per name
    tree = ast.parse(inspect.getsource(executors.run_shards))
    matches = [m for m in ast.walk(tree) if isinstance(m, ast.Match)]
    cases = [c.pattern.value.value for m in matches for c in m.cases if isinstance(c.pattern, ast.MatchValue)]
    assert tuple(cases) == get_args(Executor) == executors.EXECUTORS


# request field -> the generate field whose range it takes, and the sides it takes (n,
# best_of and max_tokens take only the floor: their most is the server's own setting)
SHARED = {
    "temperature": ("temperature", ("ge", "gt", "le", "lt")),
    "top_p": ("top_p", ("ge", "gt", "le", "lt")),
    "top_k": ("top_k", ("ge", "gt", "le", "lt")),
    "min_p": ("min_p", ("ge", "gt", "le", "lt")),
    "repetition_penalty": ("repetition_penalty", ("ge", "gt", "le", "lt")),
    "seed": ("seed", ("ge", "gt", "le", "lt")),
    "n": ("n", ("ge",)),
    "best_of": ("n", ("ge",)),
    "max_tokens": ("max_new_tokens", ("ge",)),
}


def _probes(kind: type, meta: dict) -> list:
    """Each bound, its neighbours on both sides, and values any range might get wrong."""
    near = [0, 1, -1, 2, 10**6, 2**63, 2**64]
    for bound in meta.values():
        if kind is int:
            near += [int(bound) - 1, int(bound), int(bound) + 1]
        else:
            near += [bound, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)]
    if kind is float:
        near += [0.5, 1e-300, 1e-6, 99.9, 100.5, 1e300, -0.0]
        return [float(v) for v in near if abs(v) < 1e308] + [math.inf, -math.inf, math.nan]
    return [int(v) for v in near]


@pytest.mark.parametrize("request_field", sorted(SHARED))
@pytest.mark.parametrize("body", [CompletionRequest, ChatCompletionRequest])
def test_serve_refuses_a_sampling_field_exactly_where_generate_does(body, request_field):
    name, sides = SHARED[request_field]
    kind = int if next(f for f in fields(GenerateConfig) if f.name == name).type == "int" else float
    meta = bounds(GenerateConfig, name, sides=sides)
    extra = {"prompt": "x"} if body is CompletionRequest else {"messages": [{"role": "user", "content": "x"}]}
    for value in _probes(kind, bounds(GenerateConfig, name)):
        try:
            body.model_validate({"model": "m", **extra, request_field: value})
            server_refuses = False
        except ValidationError:
            server_refuses = True
        problem = problem_of(GenerateConfig, name, value)
        if sides == ("ge",):  # only the floor is shared
            problem = problem if value < meta["ge"] else None
        assert server_refuses == (problem is not None), (request_field, value, problem)


def test_a_tiny_temperature_is_refused_with_generates_words():
    with pytest.raises(ValidationError) as caught:
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "temperature": 1e-6})
    assert "must be 0 (greedy) or a number between 1e-05 and 100, got 1e-06" in str(caught.value)


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_report_seed_is_refused_as_every_seed_field_is(tmp_path, capsys, seed):
    from winnow.cli import main

    assert main(["report", str(tmp_path), "--seed", seed]) == 2
    assert capsys.readouterr().err == f"winnow: error: --seed must be between 0 and 2**63 - 1, got {seed}\n"


def test_the_field_helpers_write_their_metadata():
    from winnow.config.fields import DEVICE, DEVICES, MAX_SEED, bounded, device_field, seed_field

    spec = bounded(3, ge=1, gt=0, le=9, lt=10, finite=True, zero="off", unit="s", note="n", interval=True)
    assert spec.default == 3
    assert dict(spec.metadata) == {
        "ge": 1,
        "gt": 0,
        "le": 9,
        "lt": 10,
        "zero": "off",
        "unit": "s",
        "note": "n",
        "finite": True,
        "interval": True,
    }
    assert dict(bounded(None).metadata) == {} and bounded(None).default is None
    assert (seed_field().default, dict(seed_field(7).metadata), seed_field(7).default) == (
        0,
        {"ge": 0, "le": MAX_SEED},
        7,
    )
    assert (device_field().default, dict(device_field("cpu").metadata), device_field("cpu").default) == (
        "auto",
        {"pattern": DEVICE, "shown": DEVICES},
        "cpu",
    )
