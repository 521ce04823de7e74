"""One reward contract: ``f(prompts, completions, **kw) -> list[float | None]``.

``prompts[i]`` is the prompt text (or its chat messages) and ``completions[i]`` the
completion text; keyword arguments carry ``prompt_ids`` and ``sample_indices``. ``None``
or NaN means "unscored": it stays NaN in the reward matrix and selection skips it.
A sequence-classification reward model is wrapped to the same contract
(``winnow.rewards.classifier``), as in TRL.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from winnow.errors import WinnowError, install_hint
from winnow.loader import ExitCalled, Watch, contained, did_you_mean, exit_call, load, resolve
from winnow.verifiers import Scores

RewardFn = Callable[..., list]
MAX_REWARD = 1e100
"""Largest reward magnitude accepted: margins, means and variances of rewards near 1e308
overflow to inf (an infinite margin in pairs.jsonl, a histogram with 'too many bins')."""


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

    reads: tuple[str, ...] = ()
    """Score config fields that name a prompts column the reward reads (math reads the one
    ``score.reference_column`` names)."""
    columns: tuple[str, ...] = ()
    """Prompts columns the reward always reads, by these names (code's ``test`` and
    ``entry_point``); ``winnow.plan`` checks both kinds against the prompts before sampling."""

    @property
    def verifier(self) -> bool:
        """A verifier: it reports ``no_answer`` counts."""
        return self.target.startswith("winnow.verifiers.")


BUILTINS: dict[str, Builtin] = {
    "vader": Builtin("winnow.rewards.builtins:vader"),
    "length": Builtin("winnow.rewards.builtins:length"),
    "math": Builtin(
        "winnow.verifiers.math:math",
        {"reference_column": "reference_column"},
        cpu_bound=True,
        reads=("reference_column",),
    ),
    "choice": Builtin(
        "winnow.verifiers.choice:choice", {"reference_column": "reference_column"}, reads=("reference_column",)
    ),
    "exact": Builtin(
        "winnow.verifiers.exact:exact", {"reference_column": "reference_column"}, reads=("reference_column",)
    ),
    "ifeval": Builtin("winnow.verifiers.ifeval:ifeval", {"mode": "ifeval_mode"}),
    # code runs its own pool of sandboxed processes, one per CPU: not cpu_bound, or the two pools multiply
    "code": Builtin(
        "winnow.verifiers.code:code",
        {"timeout_s": "code_timeout_s", "memory_mb": "code_memory_mb", "strict_results": "code_strict_results"},
        columns=("test", "entry_point"),
    ),
}
"""The one table of built-in rewards and verifiers; CLI help and errors list its names."""


class RewardTimeout(WinnowError):
    """A reward call outlasted ``score.reward_timeout`` (``winnow serve`` answers it with 504)."""


class RewardRaised(WinnowError):
    """The reward itself raised on a call (not a wrong return value, a timeout or an exit):
    ``score.on_error: fail`` finds the row it raised on to name it."""


def builtin_options(spec: str, config) -> dict:
    """The keyword options a built-in gets from the score config (none for other specs)."""
    entry = BUILTINS.get(spec)
    return {kw: getattr(config, name) for kw, name in entry.options.items()} if entry else {}


def load_reward_fn(spec: str) -> RewardFn:
    """Resolve a built-in name, ``module:function`` or ``path/to/file.py:function``."""
    if ":" not in spec:
        if spec not in BUILTINS:
            raise WinnowError(
                f"unknown reward function {spec!r}{did_you_mean(spec, BUILTINS)}: use a built-in "
                f"({', '.join(BUILTINS)}), 'module:function' or 'path/to/file.py:function'"
            )
        try:
            return resolve(BUILTINS[spec].target)
        except ImportError as e:
            raise WinnowError(f"reward function {spec!r} needs {e.name}: {install_hint('verifiers')}") from None
    return load(spec)


def call_reward(
    fn: RewardFn, name: str, prompts: list, completions: list[str], *, timeout: float | None = None, **kw
) -> Scores:
    """Call a reward and check what it returns: floats of the right length, NaN for unscored.

    Returns list[float] of len(completions), as ``Scores`` with the verifier's ``no_answer``
    count (0 for a plain list); raises WinnowError naming the function and the offending row
    on an exception, a wrong length, a non-number or an infinity, and naming the batch when
    the reward exits the process or outlasts ``timeout`` seconds (``RewardTimeout``). The reward gets copies of
    its list arguments, so appending to them changes nothing here.
    """
    first = kw.get("prompt_ids", ["?"])[0] if kw.get("prompt_ids") else "?"
    sample = f" sample_index {kw['sample_indices'][0]}" if kw.get("sample_indices") else ""
    batch = f"the batch of {len(completions)} rows starting at prompt_id {first!r}{sample}"
    copies = {key: list(value) if isinstance(value, list) else value for key, value in kw.items()}
    try:
        values = _with_timeout(
            lambda watch: _contained_call(fn, list(prompts), list(completions), copies, watch), timeout
        )
    except _Overran:
        raise RewardTimeout(
            f"reward function {name!r} took longer than --reward-timeout {timeout:g} s on {batch}"
        ) from None
    except (SystemExit, ExitCalled) as e:
        raise WinnowError(f"reward function {name!r} called {exit_call(e)} on {batch}") from None
    except WinnowError as e:  # a verifier's own refusal of a row: its message already names the row
        raise WinnowError(f"reward function {name!r}: {e}") from None
    except Exception as e:
        raise RewardRaised(
            f"reward function {name!r} raised {type(e).__name__}: {e} (batch starting at prompt_id {first!r})"
        ) from e
    return _checked(values, name, len(completions), kw)


def _checked(values, name: str, count: int, kw: dict) -> Scores:
    """What a reward returned, as ``Scores`` of ``count`` floats (None becomes NaN) with the
    verifier's ``no_answer`` count or positions; raises WinnowError unless it is a list (or
    array) of ``count`` numbers or None, each finite and at most ``MAX_REWARD`` in magnitude."""
    no_answer = getattr(values, "no_answer", 0)
    no_answer_at = getattr(values, "no_answer_at", None)
    if hasattr(values, "tolist"):  # a numpy array or torch tensor
        values = values.tolist()
    if not isinstance(values, list | tuple):  # a dict would give its keys, a str its characters
        raise WinnowError(f"reward function {name!r} returned {type(values).__name__}, expected a list of numbers")
    if len(values) != count:
        raise WinnowError(f"reward function {name!r} returned {len(values)} values for {count} completions")
    out = [_checked_value(v, i, name, kw) for i, v in enumerate(values)]
    if no_answer_at is not None:
        return Scores(out, no_answer_at=no_answer_at)
    return Scores(out, no_answer=no_answer if isinstance(no_answer, int) else 0)


def _checked_value(v, i: int, name: str, kw: dict) -> float:
    """The reward at position i as a float (None: NaN, unscored); raises WinnowError naming
    the position (and its keys, when given) for a non-number, an overflow or an infinity."""
    if v is None:
        return math.nan
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
        raise WinnowError(f"reward function {name!r} returned a number too large for a float at position {i}") from None
    if abs(v) > MAX_REWARD:  # inf too; NaN (unscored) compares False and passes
        raise WinnowError(
            f"reward function {name!r} returned {v:g} at position {i}: rewards must be finite and at most "
            f"{MAX_REWARD:g} in magnitude"
        )
    return v


# A reward's call runs contained as its module's import did (``winnow.loader.contained``: os._exit
# raises, the working folder is put back); a time limit runs it in a thread it may be abandoned in.


def _contained_call(fn: RewardFn, prompts: list, completions: list, kw: dict, watch: Watch | None):
    with contained(watch):
        return fn(prompts, completions, **kw)


class _Overran(Exception):
    """The call outlasted its time limit (not a TimeoutError: a reward may raise one of its own)."""


def _with_timeout(call: Callable[[Watch | None], list], timeout: float | None):
    """``call(watch)``, or ``_Overran`` once ``timeout`` seconds pass (None: wait for ever).
    The watch is given up on then; the call keeps running in its thread."""
    if timeout is None:
        return call(None)
    box: dict = {}
    watch = Watch()

    def target() -> None:
        try:
            box["value"] = call(watch)
        except BaseException as e:  # noqa: BLE001 -- handed to the waiting thread as is
            box["error"] = e

    thread = threading.Thread(target=target, name="winnow-reward", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        watch.give_up()  # os._exit is the real one again, though the abandoned call runs on
        raise _Overran
    if "error" in box:
        raise box["error"]
    return box["value"]
