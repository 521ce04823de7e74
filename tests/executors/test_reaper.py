"""A Ray instance that winnow starts leaves nothing behind, and a lost node is one line.

Each test runs ``winnow bon --executor ray`` as a real process that starts its own local
Ray instance, holds it inside a score shard (a reward that waits while a file exists),
then kills the driver, the GCS or the raylet with SIGKILL. Marked ``ray`` (a minute or so
each on 2 cores): ``.venv/bin/python -m pytest -m ray tests/executors/test_reaper.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_for

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from winnow.executors import reaper  # noqa: E402 -- after the skips

REWARD = """
import time
from pathlib import Path

HERE = Path(__file__).parent


def held(prompts, completions, **kw):
    # Tells the test a score shard is under way, then waits while 'hold' exists.
    (HERE / "holding").touch()
    while (HERE / "hold").exists():
        time.sleep(0.05)
    return [float(len(c)) for c in completions]
"""


WORKDIR_PROMPTS = [{"id": f"p{i}", "prompt": f"item {i}"} for i in range(4)]
WORKDIR_FILES = {"rewards.py": REWARD, "hold": ""}


def start_driver(d: Path, model: Path) -> subprocess.Popen:
    """``winnow bon`` on a Ray instance of its own (no --ray-address), held in its first score shard."""
    argv = ["bon", "--prompts", str(d / "prompts.jsonl"), "--run-dir", str(d / "run"), "--model", str(model)]
    argv += ["--n", "2", "--max-new-tokens", "4", "--device", "cpu", "--reward-fn", f"{d}/rewards.py:held"]
    argv += ["--executor", "ray", "--workers", "1", "--cpus-per-worker", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen([sys.executable, "-m", "winnow", *argv], env=env, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: proc.poll() is not None or (d / "holding").exists(), 180, "a score shard under way", poll_s=0.05)
    assert proc.poll() is None, f"the driver ended first: {proc.stderr.read() if proc.stderr else ''}"
    return proc


def ray_processes(proc: subprocess.Popen) -> list:
    """The driver's descendants (Ray's GCS, raylet, agents, workers), the reaper left out."""
    out = []
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "winnow.executors.reaper" not in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def alive(processes: list) -> list[str]:
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()} {' '.join(p.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return out


def named(processes: list, name: str):
    return next(p for p in processes if p.name().startswith(name) or name in " ".join(p.cmdline()[:1]))


def ended(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_driver_killed_leaves_no_ray_process(workdir, tiny_policy):
    proc = start_driver(workdir, tiny_policy)
    ours = ray_processes(proc)
    names = {p.name() for p in ours}
    assert {"gcs_server", "raylet"} <= names, names
    reapers = [p for p in psutil.Process(proc.pid).children() if "winnow.executors.reaper" in " ".join(p.cmdline())]
    assert len(reapers) == 1
    token = reapers[0].cmdline()[-1]
    proc.kill()
    assert ended(proc, 30) == -signal.SIGKILL
    wait_for(
        lambda: not alive(ours),
        30,
        f"Ray's processes to go: {alive(ours)} {reaper.marked_pids(token)} {alive(reapers)}",
        poll_s=0.05,
    )


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_gcs_killed_mid_run_is_one_line_and_leaves_no_ray_process(workdir, tiny_policy):
    proc = start_driver(workdir, tiny_policy)
    ours = ray_processes(proc)
    named(ours, "gcs_server").kill()
    code = ended(proc, 120)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 2, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "winnow: error: score: the Ray instance's head was lost (its GCS went away); "
        "finished shards are kept, rerun the same command to resume"
    )
    wait_for(lambda: not alive(ours), 30, f"Ray's processes to go: {alive(ours)}", poll_s=0.05)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_raylet_killed_mid_run_is_one_line_and_exit_2(workdir, tiny_policy):
    proc = start_driver(workdir, tiny_policy)
    ours = ray_processes(proc)
    named(ours, "raylet").kill()
    code = ended(proc, 120)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "winnow: error: score: a Ray node was lost (the raylet or its machine went away); "
        "finished shards are kept, rerun the same command to resume"
    )
    generate = workdir / "run" / "generate"
    assert (generate / "manifest.json").exists() and len(list(generate.glob("shard-*.jsonl"))) == 1
    wait_for(lambda: not alive(ours), 30, f"Ray's processes to go: {alive(ours)}", poll_s=0.05)


def test_the_reaper_kills_what_carries_its_mark_when_its_driver_ends(tmp_path):
    """Without Ray: a driver starts a reaper and a marked sleeper, then is killed."""
    script = (
        "import subprocess, sys, time\n"
        "from winnow.executors import reaper\n"
        "with reaper.marked(reaper.start()):\n"
        "    marked = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "plain = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "print(marked.pid, plain.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    marked, plain = (psutil.Process(int(pid)) for pid in driver.stdout.readline().split())  # type: ignore[union-attr]
    try:
        driver.kill()
        driver.wait()
        wait_for(lambda: not alive([marked]), 10, "the marked process to go", poll_s=0.05)
        assert alive([plain]), "an unmarked process was killed"
    finally:
        for p in (marked, plain):
            if alive([p]):
                p.kill()
    assert reaper.MARK not in os.environ
