"""Fault injection: ``winnow run`` killed with SIGKILL at random moments in every stage, then
rerun, ends with exactly the files of a run that was never interrupted (weights included).

The kills are chained on one run dir: each restart resumes from what the previous killed
process left (temp files, a held lock, shards written but not yet recorded). A kill aimed at
stage S waits until the restarted process has finished the stages before S (their manifests
exist), then a random fraction of S's duration in the uninterrupted reference run. Where it
lands is read from the manifests at the moment of the kill and reported.

The default suite runs 4 kills (one aimed at each stage); ``pytest -m faults`` runs 20.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_jsonl

STAGES = ("generate", "score", "select", "sft")
SEED = int(os.environ.get("WINNOW_FAULT_SEED", "20261125"))


def run_argv(workdir: Path, run: Path, model: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "winnow",
        "run",
        "--config",
        str(workdir / "cfg.yaml"),
        "--prompts",
        str(workdir / "prompts.jsonl"),
        "--run-dir",
        str(run),
        "--model",
        str(model),
        "--n",
        "4",
        "--max-new-tokens",
        "24",
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
        "24",
        "--epochs",
        "2",
        "--sft-batch-size",
        "2",
    ]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def finished(run: Path) -> list[str]:
    return [s for s in STAGES if (run / s / "manifest.json").exists()]


def reference_run(argv: list[str], run: Path) -> dict[str, tuple[float, float]]:
    """Run uninterrupted; (start, end) seconds of each stage, from its manifests appearing."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ends: dict[str, float] = {}
    while proc.poll() is None:
        for s in finished(run):
            ends.setdefault(s, time.monotonic() - t0)
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    end = time.monotonic() - t0
    for s in STAGES:
        ends.setdefault(s, end)
    starts = [0.0] + [ends[s] for s in STAGES[:-1]]
    return {s: (start, ends[s]) for s, start in zip(STAGES, starts, strict=True)}


def kill_in(argv: list[str], run: Path, stage: str, fraction: float, duration: float) -> str:
    """Start the run, SIGKILL it ``fraction`` of ``duration`` into ``stage``; where it landed."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = STAGES[: STAGES.index(stage)]
    deadline = time.monotonic() + 600
    while not set(before) <= set(finished(run)):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    time.sleep(fraction * duration)
    done = finished(run)
    if proc.poll() is not None:
        return f"aimed at {stage}: the run ended first (exit {proc.returncode})"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    landed = next((s for s in STAGES if s not in done), "after sft")
    return f"aimed at {stage} (+{fraction * duration:.2f}s): killed in {landed}"


def check_kills(tmp_path: Path, model: Path, kills: int) -> list[str]:
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"write about item {i}"} for i in range(24)])
    (tmp_path / "cfg.yaml").write_text("score: {shard_size: 8, fn_batch_size: 8}\n")
    reference = tmp_path / "reference"
    windows = reference_run(run_argv(tmp_path, reference, model), reference)
    run = tmp_path / "run"
    argv = run_argv(tmp_path, run, model)
    rng = random.Random(SEED)
    log = []
    for i in range(kills):
        stage = STAGES[i % len(STAGES)]
        start, end = windows[stage]
        log.append(kill_in(argv, run, stage, rng.random(), max(end - start, 0.05)))
    final = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr
    got, want = tree_digest(run), tree_digest(reference)
    assert sorted(got) == sorted(want), "\n".join(log)
    assert got == want, "\n".join(log)
    print("\n".join(log))
    return log


def test_four_kills_one_per_stage_then_identical_files(tmp_path, tiny_policy):
    log = check_kills(tmp_path, tiny_policy, kills=4)
    assert sum("killed in" in line for line in log) >= 3


@pytest.mark.faults
def test_twenty_kills_across_all_stages_then_identical_files(tmp_path, tiny_policy):
    log = check_kills(tmp_path, tiny_policy, kills=20)
    landed = {line.rsplit(" ", 1)[-1] for line in log if "killed in" in line}
    assert sum("killed in" in line for line in log) >= 16
    assert {"generate", "score", "sft"} <= landed, "\n".join(log)
