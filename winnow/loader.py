"""One loader of ``module:function`` and ``path/to/file.py:function`` specs, and the
containment of the code they name while it runs in this process.

A spec is split at its LAST colon, so a Windows-style or odd path keeps its own colons:
the part before is a dotted module or a ``.py`` file, the part after a name in it. Rewards,
answer extractors and the provenance hash all read a spec here, so they cannot disagree on
what it names. Winnow's own targets (the built-in table, bounded workers) are resolved
plainly (``resolve``); a user's are loaded contained (``load``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from winnow.errors import WinnowError


def split(spec: str) -> tuple[str, str]:
    """``(target, name)`` of a spec: the module or file, and the name in it.

    >>> split("pkg.mod:score"), split("C:/r/f.py:score"), split("vader")
    (('pkg.mod', 'score'), ('C:/r/f.py', 'score'), ('', 'vader'))
    """
    target, _, name = spec.rpartition(":")
    return target, name


def module_file(spec: str) -> Path | None:
    """The file a spec's module lives in, found without running it: a ``.py`` target as
    written (it may not exist), a module's origin, or None when no file can be found."""
    target, _ = split(spec)
    if target.endswith(".py"):
        return Path(target)
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin or not Path(found.origin).is_file():
        return None
    return Path(found.origin)


def resolve(spec: str) -> Callable:
    """Winnow's own ``module:function``, imported as is (an ImportError passes up)."""
    module, name = split(spec)
    return getattr(importlib.import_module(module), name)


def load(spec: str) -> Callable:
    """The callable a user's ``module:function`` or ``path/to/file.py:function`` names; its
    module's body runs ``contained``. Any failure is one WinnowError naming the spec."""
    target, name = split(spec)
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
            raise WinnowError(f"{path}: importing the reward module failed: it called {exit_call(e)}") from None
        except Exception as e:
            raise WinnowError(f"{path}: importing the reward module failed: {type(e).__name__}: {e}") from e
    else:
        try:
            with contained():
                module = importlib.import_module(target)
        except (SystemExit, ExitCalled) as e:
            raise WinnowError(
                f"reward function {spec!r}: importing {target!r} failed: it called {exit_call(e)}"
            ) from None
        except Exception as e:  # an ImportError, or whatever the module's body raised
            raise WinnowError(
                f"reward function {spec!r}: cannot import module {target!r}: {type(e).__name__}: {e}"
            ) from e
    fn = getattr(module, name, None)
    if not callable(fn):
        functions = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise WinnowError(f"reward function {spec!r}: {target} has no callable {name!r}{did_you_mean(name, functions)}")
    return fn


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """`` (did you mean 'vader'?)`` for a near miss among ``names``, else ''.

    >>> did_you_mean("vadr", ["vader", "length"]), did_you_mean("zzz", ["vader"])
    (" (did you mean 'vader'?)", '')
    """
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    """One reward call run in a thread (``winnow.rewards._with_timeout``) and the waiter that may give up on it.

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

    watch: set for a call a waiter may give up on (``winnow.rewards._with_timeout``). The process has moved
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


def exit_call(e: BaseException) -> str:
    """How code ended the process: ``os._exit(3)`` or ``sys.exit(3)``."""
    return f"os._exit({e.code})" if isinstance(e, ExitCalled) else f"sys.exit({e.code})"  # type: ignore[attr-defined]
