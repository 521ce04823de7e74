"""Config values from where users write them: a YAML file, layers of dicts (defaults, the
file, flags), and what each field says of itself (its type, choices and docstring) for the
command's help and the docs. The dataclasses themselves are ``winnow.config``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import yaml

from winnow.config import SECTIONS
from winnow.config.fields import hints, literal_of
from winnow.errors import WinnowError
from winnow.records import read_text

TOP_LEVEL = ("prompts", "run_dir", "prompt_column", "id_column")
"""Top-level YAML keys besides the stage sections (all strings)."""
FILE_RELATIVE = ((None, "prompts"), ("eval", "prompts"))
"""(section or None for the top level, key): the prompts files a YAML config names, read
relative to the config file's folder (every other path is read as given, from the current folder)."""


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config: the top-level keys (``TOP_LEVEL``) and the sections (``SECTIONS``)."""
    path = Path(path)
    if not path.is_file():
        raise WinnowError(f"config file does not exist: {path}")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        raise WinnowError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise WinnowError(f"{path}: expected a mapping at the top level")
    known = set(SECTIONS) | set(TOP_LEVEL)
    for key, value in data.items():
        if key not in known:
            raise WinnowError(f"{path}: field '{key}': unknown key (known: {', '.join(sorted(map(str, known)))})")
        if key in SECTIONS and not isinstance(value, dict | None):
            raise WinnowError(f"{path}: field '{key}': expected a mapping of options, got {type(value).__name__}")
        if key in TOP_LEVEL and not isinstance(value, str):
            raise WinnowError(f"{path}: field '{key}': expected a string, got {value!r} ({type(value).__name__})")
    for holder, key in FILE_RELATIVE:  # relative to the file, not the shell
        values = data if holder is None else data.get(holder)
        if isinstance(values, dict) and isinstance(values.get(key), str) and not Path(values[key]).is_absolute():
            values[key] = str(path.parent / values[key])
    return data


def build(cls, *layers: dict, source: str = "config"):
    """Instantiate ``cls`` from layered dicts; later layers win and None means 'not given'."""
    names = {f.name for f in fields(cls)}
    values: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in names:
                raise WinnowError(f"{source}: field '{key}': unknown option for {cls.__name__}")
            if value is not None:
                values[key] = value
    for key, value in values.items():
        values[key] = typed(value, hints(cls)[key], f"{source}: field '{key}'")
    config = cls(**values)
    config.validate()
    return config


def typed(value: Any, annotation: Any, name: str) -> Any:
    """Check a config value against its field's annotation (ints are accepted for floats;
    a ``Literal``'s values are strings, its choices are checked by ``validate``)."""
    parts = type_name(annotation).split(" | ")
    if "list[float]" in parts:
        ok = isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if not ok:
            raise WinnowError(f"{name}: expected a list of numbers, got {value!r}")
        return [float(v) for v in value]
    if "list[str]" in parts and (isinstance(value, list) or "str" not in parts):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise WinnowError(f"{name}: expected a list of strings, got {value!r}")
        return value
    if "dict" in parts:  # a mapping passed on by name (``sft.trl``): its keys are checked where it is used
        if not isinstance(value, dict):
            raise WinnowError(f"{name}: expected a mapping of names to values, got {value!r} ({type(value).__name__})")
        return value
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
    for part in parts:
        allowed = kinds.get(part, ())
        if isinstance(value, allowed) and not (isinstance(value, bool) and part != "bool"):
            if part != "float":
                return value
            try:
                return float(value)
            except OverflowError:
                raise WinnowError(f"{name}: {value} is too large for a float") from None
    raise WinnowError(f"{name}: expected {type_name(annotation)}, got {value!r} ({type(value).__name__})")


def type_name(annotation: Any) -> str:
    """An annotation as the docs and messages write it; a ``Literal`` of names is a ``str``.

    >>> from winnow.config.fields import Pairing
    >>> type_name(Pairing | None), type_name(str | list[str] | None), type_name(list[float] | None)
    ('str | None', 'str | list[str] | None', 'list[float] | None')
    """
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is Literal:
        return "str"
    if typing.get_origin(annotation) is dict:
        return "dict"
    if annotation is type(None):
        return "None"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def choices_of(cls: type, name: str) -> tuple[str, ...]:
    """The values a field accepts, as help and docs list them: its ``Literal``'s, or the
    forms of a pattern (``cuda:N``); () for an open field.

    >>> from winnow.config import SelectConfig, TrainConfig
    >>> choices_of(SelectConfig, "pairs"), choices_of(TrainConfig, "device")[-1], choices_of(SelectConfig, "k")
    (('best-worst', 'all', 'rso', 'pass-fail'), 'cuda:N', ())
    """
    spec = next(f for f in fields(cls) if f.name == name)
    return literal_of(hints(cls)[name]) or tuple(spec.metadata.get("shown", ()))


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    (section, f.name): choices
    for section, cls in SECTIONS.items()
    for f in fields(cls)
    if (choices := choices_of(cls, f.name))
}
"""(section, field) -> the values it accepts, from the fields themselves: help text and docs
list these, and ``validate`` checks against the same annotation, so they cannot drift."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a config dataclass, as one line
    (reStructuredText quotes removed): the help of its CLI flag and its docs entry. Fields a
    class takes from a base dataclass carry the base's docstrings."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    """``field_docs`` of the fields written in ``cls``'s own source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.replace("``", "").split())
    return docs
