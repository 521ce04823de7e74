"""Fault injection: ``winnow run`` killed with SIGKILL at random moments in every stage, then
rerun, ends with exactly the files of a run that was never interrupted (weights included).

The kills are chained on one run dir: each restart resumes from what the previous killed
process left (temp files, a held lock, shards written but not yet recorded). The kills are
aimed at the stages in order; a kill aimed at stage S waits until the
restarted process holds S's lock, then a random fraction of S's duration in the
uninterrupted reference run (a stage's duration is the time its lock is held: the lock
file names the holder's pid). Where each kill landed is read the same way just before it,
and reported. Generate and score keep their finished shards, so a kill waits a random
fraction of what is left of them; a kill aimed at a stage that a previous run finished
goes to the first unfinished one.

The default suite runs 2 kills (in score and sft; test_resume.py kills generate);
``pytest -m faults`` runs 20, 5 aimed at each stage (``WINNOW_FAULT_SEED`` picks the moments).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import flags, tree_digest, write_jsonl

STAGES = ("generate", "score", "select", "sft")
SEED = int(os.environ.get("WINNOW_FAULT_SEED", "20261125"))


def run_argv(workdir: Path, run: Path, model: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "winnow", "run", "--config", str(workdir / "cfg.yaml")),
        *flags(prompts=workdir / "prompts.jsonl", run_dir=run, model=model, n=4, max_new_tokens=24, shard_size=1),
        *flags(batch_size=1, device="cpu", reward_fn="length", strategy="top_k_overall", k=24, epochs=2),
        *flags(sft_batch_size=2),
    ]


def holder(run: Path, stage: str) -> int | None:
    """The pid holding ``stage``'s lock now (the lock file names it while held), or None."""
    try:
        return json.loads((run / stage / "lock").read_text()).get("pid")
    except (OSError, ValueError):
        return None


def reference_run(argv: list[str], run: Path) -> dict[str, float]:
    """Run uninterrupted; how long each stage held its lock, in seconds."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    began: dict[str, float] = {}
    ended: dict[str, float] = {}
    while proc.poll() is None:
        now = time.monotonic()
        for s in STAGES:
            held = holder(run, s) == proc.pid
            if held and s not in began:
                began[s] = now
            if not held and s in began and s not in ended:
                ended[s] = now
        time.sleep(0.002)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    end = time.monotonic()
    return {s: max(ended.get(s, end) - began.get(s, end), 0.01) for s in STAGES}


def remaining(run: Path, stage: str, num_prompts: int) -> float:
    """Share of ``stage`` still to do: generate and score keep their finished shards; select
    and sft start again from the beginning."""
    total = {"generate": num_prompts, "score": math.ceil(num_prompts * 4 / 8)}.get(stage)
    if total is None:
        return 1.0
    done = len(list((run / stage).glob("shard-*.jsonl")))
    return max(total - done, 1) / total


def kill_in(argv: list[str], run: Path, stage: str, fraction: float, duration: float, num_prompts: int) -> str:
    """Start the run, wait until it holds ``stage``'s lock, SIGKILL it ``fraction`` of what is
    left of the stage's reference ``duration`` later; returns where the kill landed."""
    share = remaining(run, stage, num_prompts)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while holder(run, stage) != proc.pid and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    wait = fraction * duration * share
    time.sleep(wait)
    if proc.poll() is not None:
        return f"aimed at {stage}: the run ended first (exit {proc.returncode})"
    landed = [s for s in STAGES if holder(run, s) == proc.pid]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    where = f"killed in {landed[0]}" if landed else "killed between stages"
    return f"aimed at {stage} (+{wait:.3f}s, stage takes {duration:.3f}s): {where}"


def unfinished(run: Path) -> str | None:
    return next((s for s in STAGES if not (run / s / "manifest.json").exists()), None)


def check_kills(tmp_path: Path, model: Path, aims: list[str], num_prompts: int = 24) -> list[str]:
    rows = [{"id": f"q{i}", "prompt": f"write about item {i}"} for i in range(num_prompts)]
    write_jsonl(tmp_path / "prompts.jsonl", rows)
    (tmp_path / "cfg.yaml").write_text("score: {shard_size: 8, fn_batch_size: 8}\n")
    reference = tmp_path / "reference"
    durations = reference_run(run_argv(tmp_path, reference, model), reference)
    run = tmp_path / "run"
    argv = run_argv(tmp_path, run, model)
    rng = random.Random(SEED)
    log = []
    for aim in aims:
        stage = aim if not (run / aim / "manifest.json").exists() else unfinished(run)
        if stage is None:
            log.append(f"aimed at {aim}: every stage had finished")
            continue
        log.append(kill_in(argv, run, stage, rng.random(), durations[stage], num_prompts))
    final = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr
    got, want = tree_digest(run), tree_digest(reference)
    assert sorted(got) == sorted(want), "\n".join(log)
    assert got == want, "\n".join(log)
    print("\n".join(log))
    return log


def test_kills_in_score_and_sft_then_identical_files(tmp_path, tiny_policy):
    """The default suite's share (a kill in generate is in test_resume.py)."""
    log = check_kills(tmp_path, tiny_policy, aims=["score", "sft"], num_prompts=6)
    assert sum("killed in" in line for line in log) >= 1, "\n".join(log)


@pytest.mark.faults
def test_twenty_kills_across_all_stages_then_identical_files(tmp_path, tiny_policy):
    log = check_kills(tmp_path, tiny_policy, aims=[s for s in STAGES for _ in range(5)])
    landed = {line.rsplit(" ", 1)[-1] for line in log if "killed in" in line}
    assert sum("killed in" in line for line in log) >= 16, "\n".join(log)
    assert {"generate", "score", "sft"} <= landed, "\n".join(log)
