"""One reward contract: ``f(prompts, completions, **kw) -> list[float | None]``.

``prompts[i]`` is the prompt text (or its chat messages) and ``completions[i]`` the
completion text; keyword arguments carry ``prompt_ids`` and ``sample_indices``. ``None``
or NaN means "unscored": it stays NaN in the reward matrix and selection skips it.
A sequence-classification reward model is wrapped to the same contract
(``winnow.rewards.classifier``), as in TRL.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from winnow.errors import WinnowError
from winnow.verifiers import Scores

RewardFn = Callable[..., list]


@dataclass(frozen=True)
class Builtin:
    """A reward winnow ships, named on the command line (``--reward-fn math``)."""

    target: str
    """``module:function``, imported when first used (math-verify loads sympy: ~1 s)."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Keyword option of the function -> the ``score`` config field that sets it."""
    cpu_bound: bool = False
    """Enough Python work per completion (milliseconds) to be scored in parallel processes
    (``score.processes``); for regex-cheap ones a process costs more than it saves."""

    @property
    def verifier(self) -> bool:
        """A verifier: it reports ``no_answer`` counts."""
        return self.target.startswith("winnow.verifiers.")


BUILTINS: dict[str, Builtin] = {
    "vader": Builtin("winnow.rewards.builtins:vader"),
    "length": Builtin("winnow.rewards.builtins:length"),
    "math": Builtin("winnow.verifiers.math:math", {"reference_column": "reference_column"}, cpu_bound=True),
    "choice": Builtin("winnow.verifiers.choice:choice", {"reference_column": "reference_column"}),
    "exact": Builtin("winnow.verifiers.exact:exact", {"reference_column": "reference_column"}),
}
"""The one table of built-in rewards and verifiers; CLI help and errors list its names."""


def builtin_options(spec: str, config) -> dict:
    """The keyword options a built-in gets from the score config (none for other specs)."""
    entry = BUILTINS.get(spec)
    return {kw: getattr(config, name) for kw, name in entry.options.items()} if entry else {}


def load_reward_fn(spec: str) -> RewardFn:
    """Resolve a built-in name, ``module:function`` or ``path/to/file.py:function``."""
    if ":" not in spec:
        if spec not in BUILTINS:
            raise WinnowError(
                f"unknown reward function {spec!r}: use a built-in ({', '.join(BUILTINS)}), "
                "'module:function' or 'path/to/file.py:function'"
            )
        module_name, _, fn_name = BUILTINS[spec].target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), fn_name)
        except ImportError as e:
            raise WinnowError(f"reward function {spec!r} needs {e.name}: pip install 'winnow[verifiers]'") from None
    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise WinnowError(f"reward function file does not exist: {path}")
        module_spec = importlib.util.spec_from_file_location(f"winnow_user_reward_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise WinnowError(f"{path}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            raise WinnowError(f"{path}: importing the reward module failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:  # an ImportError, or whatever the module's body raised
            raise WinnowError(
                f"reward function {spec!r}: cannot import module {target!r}: {type(e).__name__}: {e}"
            ) from e
    fn = getattr(module, name, None)
    if not callable(fn):
        raise WinnowError(f"reward function {spec!r}: {target} has no callable {name!r}")
    return fn


def call_reward(fn: RewardFn, name: str, prompts: list, completions: list[str], **kw) -> Scores:
    """Call a reward and check what it returns: floats of the right length, NaN for unscored.

    Returns list[float] of len(completions), as ``Scores`` with the verifier's ``no_answer``
    count (0 for a plain list); raises WinnowError naming the function and the offending row
    on an exception, a wrong length, a non-number or an infinity.
    """
    try:
        values = fn(prompts, completions, **kw)
    except Exception as e:
        first = kw.get("prompt_ids", ["?"])[0] if kw.get("prompt_ids") else "?"
        raise WinnowError(
            f"reward function {name!r} raised {type(e).__name__}: {e} (batch starting at prompt_id {first!r})"
        ) from e
    no_answer = getattr(values, "no_answer", 0)
    if hasattr(values, "tolist"):  # a numpy array or torch tensor
        values = values.tolist()
    if not isinstance(values, list | tuple):  # a dict would give its keys, a str its characters
        raise WinnowError(f"reward function {name!r} returned {type(values).__name__}, expected a list of numbers")
    if len(values) != len(completions):
        raise WinnowError(f"reward function {name!r} returned {len(values)} values for {len(completions)} completions")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            key = ""
            if kw.get("prompt_ids") and kw.get("sample_indices"):
                key = f" (prompt_id {kw['prompt_ids'][i]!r}, sample_index {kw['sample_indices'][i]})"
            raise WinnowError(
                f"reward function {name!r} returned {v!r} ({type(v).__name__}) at position {i}{key}: "
                "expected a number or None"
            )
        try:
            v = float(v)
        except OverflowError:
            raise WinnowError(
                f"reward function {name!r} returned a number too large for a float at position {i}"
            ) from None
        if math.isinf(v):
            raise WinnowError(f"reward function {name!r} returned {v} at position {i}: rewards must be finite")
        out.append(v)
    return Scores(out, no_answer=no_answer if isinstance(no_answer, int) else 0)
