"""One reward contract: ``f(prompts, completions, **kw) -> list[float | None]``.

``prompts[i]`` is the prompt text (or its chat messages) and ``completions[i]`` the
completion text; keyword arguments carry ``prompt_ids`` and ``sample_indices``. ``None``
or NaN means "unscored": it stays NaN in the reward matrix and selection skips it.
A sequence-classification reward model is wrapped to the same contract
(``winnow.rewards.classifier``), as in TRL.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import math
import numbers
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from winnow.errors import WinnowError, install_hint
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


def builtin_options(spec: str, config) -> dict:
    """The keyword options a built-in gets from the score config (none for other specs)."""
    entry = BUILTINS.get(spec)
    return {kw: getattr(config, name) for kw, name in entry.options.items()} if entry else {}


def load_reward_fn(spec: str) -> RewardFn:
    """Resolve a built-in name, ``module:function`` or ``path/to/file.py:function``."""
    if ":" not in spec:
        if spec not in BUILTINS:
            raise WinnowError(
                f"unknown reward function {spec!r}{_did_you_mean(spec, BUILTINS)}: use a built-in "
                f"({', '.join(BUILTINS)}), 'module:function' or 'path/to/file.py:function'"
            )
        module_name, _, fn_name = BUILTINS[spec].target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), fn_name)
        except ImportError as e:
            raise WinnowError(f"reward function {spec!r} needs {e.name}: {install_hint('verifiers')}") from None
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
            with contained():
                module_spec.loader.exec_module(module)
        except (SystemExit, ExitCalled) as e:
            raise WinnowError(f"{path}: importing the reward module failed: it called {_exit_call(e)}") from None
        except Exception as e:
            raise WinnowError(f"{path}: importing the reward module failed: {type(e).__name__}: {e}") from e
    else:
        try:
            with contained():
                module = importlib.import_module(target)
        except (SystemExit, ExitCalled) as e:
            raise WinnowError(
                f"reward function {spec!r}: importing {target!r} failed: it called {_exit_call(e)}"
            ) from None
        except Exception as e:  # an ImportError, or whatever the module's body raised
            raise WinnowError(
                f"reward function {spec!r}: cannot import module {target!r}: {type(e).__name__}: {e}"
            ) from e
    fn = getattr(module, name, None)
    if not callable(fn):
        functions = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise WinnowError(
            f"reward function {spec!r}: {target} has no callable {name!r}{_did_you_mean(name, functions)}"
        )
    return fn


def _did_you_mean(name: str, names) -> str:
    """`` (did you mean 'vader'?)`` for a near miss among ``names``, else ''.

    >>> _did_you_mean("vadr", BUILTINS), _did_you_mean("zzz", BUILTINS)
    (" (did you mean 'vader'?)", '')
    """
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
        raise WinnowError(f"reward function {name!r} called {_exit_call(e)} on {batch}") from None
    except WinnowError as e:  # a verifier's own refusal of a row: its message already names the row
        raise WinnowError(f"reward function {name!r}: {e}") from None
    except Exception as e:
        raise WinnowError(
            f"reward function {name!r} raised {type(e).__name__}: {e} (batch starting at prompt_id {first!r})"
        ) from e
    no_answer = getattr(values, "no_answer", 0)
    no_answer_at = getattr(values, "no_answer_at", None)
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
        if abs(v) > MAX_REWARD:  # inf too; NaN (unscored) compares False and passes
            raise WinnowError(
                f"reward function {name!r} returned {v:g} at position {i}: rewards must be finite and at most "
                f"{MAX_REWARD:g} in magnitude"
            )
        out.append(v)
    if no_answer_at is not None:
        return Scores(out, no_answer_at=no_answer_at)
    return Scores(out, no_answer=no_answer if isinstance(no_answer, int) else 0)


# ---- isolation: what a reward may do to the process ------------------------------------------
#
# Rewards run in this process: a worker process per batch would cost a fork and a pickle of
# every row (about a millisecond per batch, and rewards holding models or clients cannot be
# shipped). Instead the three ways a reward can end or redirect the run are contained cheaply:
# sys.exit raises SystemExit (caught like any error); os._exit is swapped, for the duration
# of the call, for a function that raises (a C extension calling _exit(2) directly is not
# caught); and the working folder is put back if the reward changed it. A time limit runs
# the call in a daemon thread and stops waiting after ``timeout``: Python cannot kill a
# thread, so a reward that hangs is abandoned, and the error that follows ends the command
# (the CLI exits 2; the thread dies with the process). Without a limit no thread is started:
# the default path costs two attribute swaps and one getcwd per batch.


class ExitCalled(BaseException):
    """Raised in place of ``os._exit(code)`` while a reward runs."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _raise_exit(code: int = 0) -> None:
    raise ExitCalled(code)


class Watch:
    """One reward call run in a thread (``_with_timeout``) and the waiter that may give up on it.

    The call holds os._exit swapped (``_hold_exit``) until it ends; a waiter that gives up
    releases that hold for it, so the process has the real os._exit back at once. Exactly
    one of the two releases it, decided under ``_EXIT_LOCK``."""

    def __init__(self) -> None:
        self.given_up = False
        self.ended = False

    def give_up(self) -> None:
        with _EXIT_LOCK:
            if not self.ended:
                self.given_up = True
                _release_exit()


_EXIT_LOCK = threading.Lock()
_holders = 0
"""Reward calls under way in this process: os._exit raises while any is. Counted, not saved
and put back per call, because calls overlap (a server scores in several threads): a call
that saved another's swapped-in function would put it back for good."""
_saved_exit = os._exit


def _hold_exit() -> None:
    global _holders, _saved_exit
    with _EXIT_LOCK:
        if _holders == 0:
            _saved_exit = os._exit
            os._exit = _raise_exit  # type: ignore[assignment]
        _holders += 1


def _release_exit() -> None:
    """Drop one hold (the caller holds ``_EXIT_LOCK``); the last one puts os._exit back."""
    global _holders
    _holders -= 1
    if _holders == 0:
        os._exit = _saved_exit


@contextlib.contextmanager
def contained(watch: Watch | None = None) -> Iterator[None]:
    """While a reward's code runs: os._exit raises ExitCalled, and the working folder is restored.

    watch: set for a call a waiter may give up on (``_with_timeout``). The process has moved
    on by the time such a call ends, so it restores nothing then: the folder it saw at the
    start is no longer the one to go back to, and its hold on os._exit was released for it.
    """
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    _hold_exit()
    try:
        yield
    finally:
        with _EXIT_LOCK:
            given_up = watch is not None and watch.given_up
            if not given_up:
                if watch is not None:
                    watch.ended = True
                _release_exit()
        if not given_up and cwd is not None:
            with contextlib.suppress(OSError):
                if os.getcwd() != cwd:
                    os.chdir(cwd)


def _contained_call(fn: RewardFn, prompts: list, completions: list, kw: dict, watch: Watch | None):
    with contained(watch):
        return fn(prompts, completions, **kw)


def _exit_call(e: BaseException) -> str:
    return f"os._exit({e.code})" if isinstance(e, ExitCalled) else f"sys.exit({e.code})"  # type: ignore[attr-defined]


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
