"""Library noise off unless verbose: the one place that knows how each library is quieted.

Two scopes, one list of what is quieted:

- ``quiet_process``, for the rest of a process (the CLI, at its start): the variables the
  libraries read once, at import (a value the user set is kept), and warning filters.
- ``quiet_libraries``, for the length of one call (the Python API), undone after it: each
  library switched through its own functions and put back as it was. Environment variables
  are not used for the bars there: huggingface_hub and datasets read theirs once, at
  import, and a bar switched off that way could never be switched on again. So a library
  must be imported to be quieted: huggingface_hub always is (it is small; transformers
  takes its bar setting from it when imported later), datasets when the call names it
  (``imports``: the training calls, whose TRL maps datasets).

Quieted: warnings (FutureWarning from any library, UserWarning from transformers, TRL, peft
and torch), the progress bars of huggingface_hub (downloads), transformers (the weights
bar) and datasets (TRL's dataset bars), and transformers' log lines below ERROR (and
datasets' within a call).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from importlib import import_module
from typing import ParamSpec, TypeVar

VERBOSITY_ENV = {"transformers": "TRANSFORMERS_VERBOSITY", "datasets": "DATASETS_VERBOSITY"}
"""The variable each library reads (when it sets up its logger) for its log level."""
BARS_ENV = {"huggingface_hub": "HF_HUB_DISABLE_PROGRESS_BARS", "datasets": "HF_DATASETS_DISABLE_PROGRESS_BARS"}
"""The variable each library reads, once at import, to switch its bars off (transformers
takes huggingface_hub's)."""
LIBRARIES = ("huggingface_hub", "transformers", "datasets")
"""The libraries whose bars and logs are switched off (``_state`` / ``_set`` know each)."""


def quiet_process(verbose: bool = False) -> None:
    """Library warnings, bars and logs off for the rest of the process, unless ``verbose``;
    called before any library is imported. A variable the user set keeps its value.
    Tokenizers' parallelism goes off too: after a fork (a worker process) it would warn."""
    if verbose:
        return
    for variable in BARS_ENV.values():
        os.environ.setdefault(variable, "1")
    os.environ.setdefault(VERBOSITY_ENV["transformers"], "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _ignore_library_warnings()


def _ignore_library_warnings() -> None:
    """The warning filters of both scopes: FutureWarning from anywhere, and UserWarning from
    the libraries whose warnings are about their own internals."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|trl|peft|torch)\.")


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False, imports: tuple[str, ...] = ()) -> Iterator[None]:
    """Library warnings, bars and logs off inside the block, unless ``verbose``.
    ``imports``: libraries the block will import, imported first so they can be quieted."""
    if verbose:
        yield
        return
    for name in ("huggingface_hub", *imports):
        import_module(name)
    before = {name: _state(name) for name in LIBRARIES if name in sys.modules}
    saved_env = {v: os.environ.get(v) for v in VERBOSITY_ENV.values()}
    os.environ.update(dict.fromkeys(VERBOSITY_ENV.values(), "error"))  # for transformers imported inside
    for name in before:
        _set(name, bars=False, level=logging.ERROR)
    try:
        with warnings.catch_warnings():
            _ignore_library_warnings()
            yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for name in LIBRARIES:
            if name in before:
                _set(name, *before[name])
            elif name in sys.modules:  # imported inside: as its import would have left it
                _set(name, bars=before["huggingface_hub"][0], level=_default_level(name, saved_env))


P = ParamSpec("P")
R = TypeVar("R")


def quiet_unless_verbose(*imports: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated function inside ``quiet_libraries(verbose, imports)``, ``verbose``
    being its own keyword argument."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            with quiet_libraries(bool(kwargs.get("verbose", False)), imports):
                return fn(*args, **kwargs)

        return call

    return decorate


def _default_level(name: str, env: dict[str, str | None]) -> int:
    """The log level importing ``name`` under ``env`` sets (its variable, else WARNING).

    >>> _default_level("transformers", {"TRANSFORMERS_VERBOSITY": "info"}), _default_level("datasets", {})
    (20, 30)
    """
    level = logging.getLevelName((env.get(VERBOSITY_ENV.get(name, "")) or "warning").upper())
    return level if isinstance(level, int) else logging.WARNING


def _state(name: str) -> tuple[bool, int]:
    """(progress bars on, log level) of an imported library."""
    if name == "huggingface_hub":
        hub = import_module("huggingface_hub.utils")
        return not hub.are_progress_bars_disabled(), logging.WARNING
    module = import_module(f"{name}.utils.logging")
    return module.is_progress_bar_enabled(), module.get_verbosity()


def _set(name: str, bars: bool, level: int) -> None:
    if name == "huggingface_hub":
        hub = import_module("huggingface_hub.utils")
        hub.enable_progress_bars() if bars else hub.disable_progress_bars()
        return
    module = import_module(f"{name}.utils.logging")  # transformers and datasets: the same functions
    module.enable_progress_bar() if bars else module.disable_progress_bar()
    module.set_verbosity(level)
