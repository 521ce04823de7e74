"""Fixtures shared by every test folder: the tiny models (built by ``tiny_models.py``), a
work folder of input files, one torch thread, and a Ray instance of the test's own.

Plain helpers are modules beside this file, imported by name from any test folder
(``pythonpath = ["tests"]`` in pyproject.toml): ``helpers`` (argument lists, refusals, digests,
waiting, hand-made run dirs), ``tiny_models``, ``tiny_archs``, ``tiny_vlm`` (vision-language) and ``serving`` (local servers).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import write_jsonl
from tiny_models import build_policy, build_prm, build_reward_model, make_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    return build_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="session")
def tiny_policy_b(tmp_path_factory) -> Path:
    return build_policy(tmp_path_factory.mktemp("policy_b"), seed=1)


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="session")
def tiny_prm(tmp_path_factory) -> Path:
    return build_prm(tmp_path_factory.mktemp("prm"))


@pytest.fixture(scope="session")
def tiny_rwkv(tmp_path_factory) -> Path:
    """A saved RWKV model with the chat tokenizer: an architecture only ``generate()`` runs
    (``tiny_archs.GENERATE_PATH``), so the transformers backend takes its fallback."""
    from tiny_archs import build

    folder = tmp_path_factory.mktemp("rwkv")
    build("rwkv").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


# What a test module's `workdir` holds unless it says otherwise (WORKDIR_PROMPTS, WORKDIR_FILES).
DEFAULT_PROMPTS = [{"id": f"p{i}", "prompt": f"prompt number {i}"} for i in range(5)]


@pytest.fixture()
def workdir(tmp_path, request) -> Path:
    """``tmp_path`` holding ``prompts.jsonl`` and the test module's other input files.

    The module sets ``WORKDIR_PROMPTS`` (rows; default ``DEFAULT_PROMPTS``: ids p0..p4) and
    ``WORKDIR_FILES`` (file name -> text, written as given; default none).
    """
    write_jsonl(tmp_path / "prompts.jsonl", getattr(request.module, "WORKDIR_PROMPTS", DEFAULT_PROMPTS))
    for name, text in getattr(request.module, "WORKDIR_FILES", {}).items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: they gain nothing from a second one,
    and on a busy machine the idle thread spin-waits made each tiny op ~30x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def own_ray(monkeypatch):
    """No Ray running in this process: the executor starts its own local instance; shut down
    after, and any process it started that the shutdown missed is killed, by pid."""
    ray = pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ours_before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        yield
    finally:
        ours = [p for p in psutil.Process().children(recursive=True) if p.pid not in ours_before]
        ray.shutdown()
        for p in ours:
            if p.is_running():
                p.kill()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """pytest-randomly shuffles the tests (when installed, as in the test extra): after a
    failure, say how to rerun in the same order, since `-q` hides the header that says it."""
    seed = getattr(config.option, "randomly_seed", None)
    if exitstatus != 0 and isinstance(seed, int) and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(
            f"tests ran in random order: rerun the same order with --randomly-seed={seed}, "
            "or in file order with -p no:randomly"
        )
