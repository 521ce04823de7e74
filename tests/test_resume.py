"""Resume: a run killed mid-way and rerun ends with the same files as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tree_digest

from winnow.cli import main

NUM_PROMPTS = 8
HELD_AFTER = 3  # shards the killed run finishes before it is held, and killed

# The killed run: the real CLI in a real process, except that the backend's call for shard
# HELD_AFTER + 1 waits there until a signal arrives. The test waits for shard HELD_AFTER to
# appear and then signals, so the kill lands mid-generation however fast the machine is.
HELD_RUN = f"""
import signal
import sys
import time

# Ctrl-C as a shell delivers it: a parent (pytest-xdist's worker) may have left SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

from winnow.generate import hf

real_generate = hf.HFBackend.generate
calls = 0


def held_generate(self, *args, **kwargs):
    global calls
    calls += 1
    while calls > {HELD_AFTER}:
        time.sleep(60)
    return real_generate(self, *args, **kwargs)


hf.HFBackend.generate = held_generate
from winnow.cli import main

sys.exit(main(sys.argv[1:]))
"""


def run_cmd(workdir: Path, run: Path, model: Path, *extra) -> list[str]:
    return [
        "run",
        "--prompts",
        str(workdir / "prompts.jsonl"),
        "--run-dir",
        str(run),
        "--model",
        str(model),
        "--n",
        "4",
        "--max-new-tokens",
        "48",
        "--shard-size",
        "1",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--reward-fn",
        "length",
        "--strategy",
        "top_k_overall",
        "--k",
        "12",
        "--epochs",
        "1",
        "--sft-batch-size",
        "8",
        *extra,
    ]


WORKDIR_PROMPTS = [{"id": f"q{i}", "prompt": f"write two sentences about item {i}"} for i in range(NUM_PROMPTS)]


def start_held(argv: list[str], log: Path) -> subprocess.Popen:
    """`winnow ARGV` in a new process that stops for good in generation of shard HELD_AFTER + 1."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", HELD_RUN, *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),  # a file, not a pipe: a full pipe would block the child
        text=True,
    )


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Return once ``path`` exists; fail if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "exited before being killed"
        assert time.monotonic() < deadline, f"{path.name} did not appear in {timeout} s"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_identical_files(workdir, tiny_policy, sig):
    reference = workdir / "reference"
    assert main(run_cmd(workdir, reference, tiny_policy)) == 0

    run = workdir / "run"
    log = workdir / "stderr.txt"
    proc = start_held(run_cmd(workdir, run, tiny_policy), log)
    wait_for_file(run / f"generate/shard-m0-{HELD_AFTER - 1:05d}.jsonl", proc)  # one prompt a shard
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    assert not (run / "generate/manifest.json").exists()
    assert sorted(p.name for p in (run / "generate").glob("shard-*.jsonl")) == [
        f"shard-m0-{i:05d}.jsonl" for i in range(HELD_AFTER)
    ]
    if sig == signal.SIGINT:
        assert code == 130 and "rerun the same command to resume" in log.read_text()
    else:
        assert code == -signal.SIGKILL
    assert not [p for p in (run / "generate").iterdir() if p.name.endswith(".tmp")] or sig == signal.SIGKILL

    assert main(run_cmd(workdir, run, tiny_policy)) == 0
    got, want = tree_digest(run), tree_digest(reference)
    got = {k: v for k, v in got.items() if not k.startswith("generate/.")}  # a temp file a SIGKILL left behind
    assert got == want


def test_changed_config_is_refused_naming_the_change(workdir, tiny_policy, capsys):
    run = workdir / "run"
    args = [
        "generate",
        "--prompts",
        str(workdir / "prompts.jsonl"),
        "--run-dir",
        str(run),
        "--model",
        str(tiny_policy),
        "--n",
        "2",
        "--max-new-tokens",
        "2",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    before = tree_digest(run)
    assert main(args + ["--temperature", "0.7", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "generate.temperature: 1.0 -> 0.7" in err and "generate.seed: 0 -> 3" in err
    assert tree_digest(run) == before
    assert main(args) == 0  # the unchanged config is still accepted (and finds the stage complete)
