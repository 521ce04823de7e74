"""``winnow.quiet``: library noise off for a whole process (the CLI's start) or for one call
(the Python API), both from the one list of what is quieted."""

from __future__ import annotations

import os
import warnings

import pytest

from winnow.quiet import quiet_libraries, quiet_process

QUIETED = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


@pytest.fixture
def bare_process():
    """None of the variables set, and the environment and warning filters put back after."""
    saved = dict(os.environ)
    for variable in QUIETED:
        os.environ.pop(variable, None)
    with warnings.catch_warnings():
        yield
    os.environ.clear()
    os.environ.update(saved)


def shown(category: type[Warning], module: str) -> bool:
    """Whether a warning of ``category`` raised in ``module`` gets through the filters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit("noise", category, "lib.py", 1, module=module)
    return bool(caught)


def test_quiet_process_sets_what_the_libraries_read_at_import(bare_process):
    quiet_process()
    assert {v: os.environ.get(v) for v in QUIETED} == QUIETED


def test_quiet_process_keeps_a_value_the_user_set(bare_process):
    os.environ["TRANSFORMERS_VERBOSITY"] = "info"
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    quiet_process()
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_verbose_leaves_the_process_as_it_was(bare_process):
    warnings.simplefilter("always")
    quiet_process(verbose=True)
    assert not any(v in os.environ for v in QUIETED)
    assert shown(FutureWarning, "transformers.modeling_utils")


def test_both_scopes_let_through_the_same_warnings(bare_process):
    cases = [
        (FutureWarning, "anything"),
        (UserWarning, "transformers.modeling_utils"),
        (UserWarning, "torch.nn.modules"),
        (UserWarning, "trl.trainer"),
        (UserWarning, "my_reward"),
        (DeprecationWarning, "transformers.x"),
    ]
    expected = [False, False, False, False, True, True]
    warnings.simplefilter("always")
    with quiet_libraries():
        assert [shown(c, m) for c, m in cases] == expected
    assert [shown(c, m) for c, m in cases] == [True] * len(cases)  # undone after the call
    quiet_process()
    assert [shown(c, m) for c, m in cases] == expected
