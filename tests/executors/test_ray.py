"""The Ray executor on a real local Ray cluster (two simulated nodes): the same files as the
local executor, whatever happens to its workers.

The byte-identity test runs in the default suite; the fault tests are marked ``ray``:
``.venv/bin/python -m pytest -m ray tests/executors/test_ray.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import flags, tree_digest, wait_for, write_jsonl

from winnow.cli import main

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

NUM_PROMPTS = 12
REWARDS = """
import os, time
from pathlib import Path

HERE = Path(__file__).parent


def poison(prompts, completions, prompt_ids, **kw):
    # Raises on the batch holding p5 while the file 'poison' exists; notes the pid of each try.
    if "p5" in prompt_ids and (HERE / "poison").exists():
        with open(HERE / "poison-tries", "a") as f:
            f.write(f"{os.getpid()}\\n")
        raise RuntimeError("poisoned batch")
    return [float(len(c)) for c in completions]


def by_answer(prompts, completions, answer, sample_indices, **kw):
    # a reference column, as a keyword argument aligned with completions
    return [float(a) + j / 10 for a, j in zip(answer, sample_indices, strict=True)]


def stall(prompts, completions, prompt_ids, **kw):
    # While 'armed' exists, the first worker to reach p2 writes its pid to 'stalled' and
    # waits there to be killed; the retry finds 'stalled' and goes on.
    if "p2" in prompt_ids and (HERE / "armed").exists():
        try:
            os.close(os.open(HERE / "stall-taken", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            (HERE / "stalled.tmp").write_text(str(os.getpid()))
            os.rename(HERE / "stalled.tmp", HERE / "stalled")
            time.sleep(120)
    return [float(len(c)) for c in completions]
"""


WORKDIR_PROMPTS = [{"id": f"p{i}", "prompt": f"write two sentences about item {i}"} for i in range(NUM_PROMPTS)]
WORKDIR_FILES = {"rewards.py": REWARDS, "score.yaml": "score:\n  shard_size: 8\n"}  # 2 prompts x n=4 a shard


@pytest.fixture()
def cluster(monkeypatch):
    """Two simulated nodes of one CPU each, so two 1-CPU workers land on different nodes."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, logging_level=logging.WARNING)
    try:
        yield c
    finally:
        ours = psutil.Process().children(recursive=True)
        ray.shutdown()
        c.shutdown()
        for p in ours:  # a raylet or worker the shutdown missed: ours, by pid
            if p.is_running():
                p.kill()


def bon_args(d: Path, run: str, model: Path, *extra) -> list[str]:
    return [
        *("bon", "--config", str(d / "score.yaml")),
        *flags(prompts=d / "prompts.jsonl", run_dir=d / run, model=model, n=4, max_new_tokens=24, shard_size=1),
        *flags(device="cpu"),
        *extra,
    ]


RAY = ["--executor", "ray", "--workers", "2", "--cpus-per-worker", "1"]


def executor_record(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())["executor"]


def shard_actors(title: str = "ray::ShardActor") -> list:
    """This test's Ray worker processes whose title (set by Ray) starts with ``title``:
    ``ray::ShardActor.run`` for those in the middle of a shard."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith(title):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def busy_workers() -> list:
    """This test's Ray worker processes in the middle of a shard."""
    return shard_actors("ray::ShardActor.run")


def hold_a_busy_worker(node) -> psutil.Process | None:
    """Suspend ``node``'s Ray worker if it is in the middle of a shard; the process once held."""
    raylets = [p for kind, p in node.live_processes() if kind == "raylet"]
    for raylet in raylets:
        for p in psutil.Process(raylet.pid).children(recursive=True):
            try:
                if not " ".join(p.cmdline()).startswith("ray::ShardActor.run"):
                    continue
                p.suspend()
                if " ".join(p.cmdline()).startswith("ray::ShardActor.run"):
                    return p
                p.resume()  # it finished the shard before it was held
            except psutil.NoSuchProcess:
                pass
    return None


def score_locally_then_on_ray(workdir: Path, tiny_policy: Path, fn: list[str]) -> None:
    """A local bon run, then its generate stage scored again through the Ray instance the
    executor starts itself: the same files."""
    assert main(bon_args(workdir, "local", tiny_policy, *fn)) == 0
    shutil.copytree(workdir / "local", workdir / "ray")
    shutil.rmtree(workdir / "ray" / "score")
    (workdir / "ray" / "best.jsonl").unlink()
    assert main(bon_args(workdir, "ray", tiny_policy, *fn, "--executor", "ray", "--cpus-per-worker", "0.5")) == 0
    assert tree_digest(workdir / "ray", hidden=False, executor=False) == tree_digest(
        workdir / "local", hidden=False, executor=False
    )


@pytest.mark.timeout(90)
def test_score_on_a_local_ray_instance_matches_local(workdir, tiny_policy, own_ray):
    """The default suite's check: score through a Ray instance the executor starts itself."""
    fn = ["--reward-fn", f"{workdir}/rewards.py:poison"]
    score_locally_then_on_ray(workdir, tiny_policy, fn)
    assert executor_record(workdir / "ray", "score") == {"name": "ray", "workers": 2, "retries": 0}


@pytest.mark.timeout(90)
def test_reference_columns_reach_rewards_on_ray_as_locally(workdir, tiny_policy, own_ray):
    """The prompts' other columns travel to Ray workers: the same rewards and files as locally."""
    write_jsonl(
        workdir / "prompts.jsonl",
        [{"id": f"p{i}", "prompt": f"write about item {i}", "answer": str(i)} for i in range(NUM_PROMPTS)],
    )
    fn = ["--reward-fn", f"{workdir}/rewards.py:by_answer"]
    score_locally_then_on_ray(workdir, tiny_policy, fn)
    rewards = np.load(workdir / "ray" / "score" / "rewards.npy")
    assert rewards.tolist() == [[i + j / 10 for j in range(4)] for i in range(NUM_PROMPTS)]
    assert executor_record(workdir / "ray", "score") == {"name": "ray", "workers": 2, "retries": 0}


@pytest.mark.ray
@pytest.mark.timeout(150)
def test_ray_run_matches_local_run_byte_for_byte(workdir, tiny_policy, cluster):
    """Every file equal; each manifest equal once its executor record is left out."""
    fn = ["--reward-fn", f"{workdir}/rewards.py:poison"]
    assert main(bon_args(workdir, "local", tiny_policy, *fn)) == 0
    assert main(bon_args(workdir, "ray", tiny_policy, *fn, *RAY)) == 0
    local, distributed = workdir / "local", workdir / "ray"
    assert tree_digest(distributed, hidden=False, executor=False) == tree_digest(local, hidden=False, executor=False)
    assert len(list((local / "generate").glob("shard-*.jsonl"))) == NUM_PROMPTS
    assert len(list((local / "score").glob("shard-*.jsonl"))) == NUM_PROMPTS * 4 // 8
    for stage in ("generate", "score"):
        assert executor_record(local, stage) == {"name": "local", "workers": 1, "retries": 0}
        assert executor_record(distributed, stage) == {"name": "ray", "workers": 2, "retries": 0}
        assert (local / stage / "config.json").read_bytes() == (distributed / stage / "config.json").read_bytes()


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_worker_killed_mid_shard_is_retried_and_run_identical(workdir, tiny_policy, cluster):
    fn = ["--reward-fn", f"{workdir}/rewards.py:stall"]
    assert main(bon_args(workdir, "local", tiny_policy, *fn)) == 0
    (workdir / "armed").touch()
    killed = []

    def kill_the_stalled_worker():
        pid = int(wait_for(lambda: (workdir / "stalled").exists() and (workdir / "stalled").read_text(), what="stall"))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    watcher = threading.Thread(target=kill_the_stalled_worker, daemon=True)
    watcher.start()
    assert main(bon_args(workdir, "ray", tiny_policy, *fn, *RAY)) == 0
    watcher.join(timeout=5)
    assert killed and not psutil.pid_exists(killed[0])
    assert tree_digest(workdir / "ray", hidden=False, executor=False) == tree_digest(
        workdir / "local", hidden=False, executor=False
    )
    assert executor_record(workdir / "ray", "score") == {"name": "ray", "workers": 2, "retries": 1}


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_node_lost_mid_generation_run_identical(workdir, tiny_policy, cluster):
    """The second node goes away while both workers are in a shard; the head's worker ends the stage."""
    fn = ["--reward-fn", "length"]
    assert main(bon_args(workdir, "local", tiny_policy, *fn, "--max-new-tokens", "48")) == 0
    node = cluster.list_all_nodes()[1]
    removed: list[str] = []
    # A shard of this tiny model takes milliseconds, so the watcher may not see the second
    # node's worker inside one before the run ends; then the run had no fault, and it is
    # run again, in a new folder, until one lands (the node is removed once, at most).
    for attempt in range(5):
        run = f"ray-{attempt}"
        done = threading.Event()

        def remove_the_second_node(run=run, done=done):
            # hold the node's worker inside its shard (SIGSTOP) so it cannot finish it in
            # the instant before the node goes; checked again once held
            generated = workdir / run / "generate" / "manifest.json"
            while not done.is_set() and not generated.exists():
                held = hold_a_busy_worker(node)
                if held is None:
                    time.sleep(0.002)
                elif generated.exists():  # a score shard: generation ended in between
                    held.resume()
                else:  # a generate shard, which the stage cannot finish without
                    cluster.remove_node(node, allow_graceful=False)
                    removed.append(run)
                    return

        watcher = threading.Thread(target=remove_the_second_node, daemon=True)
        watcher.start()
        assert main(bon_args(workdir, run, tiny_policy, *fn, "--max-new-tokens", "48", *RAY)) == 0
        done.set()
        watcher.join(timeout=60)
        if removed:
            break
    assert removed, "the second node's worker was never seen inside a shard"
    assert tree_digest(workdir / removed[0], hidden=False, executor=False) == tree_digest(
        workdir / "local", hidden=False, executor=False
    )
    record = executor_record(workdir / removed[0], "generate")
    assert record["retries"] >= 1, f"the lost node's worker was not inside a shard: {record}"


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_poisoned_shard_is_named_the_rest_finish_and_a_rerun_repairs_only_it(workdir, tiny_policy, cluster, capsys):
    fn = ["--reward-fn", f"{workdir}/rewards.py:poison"]
    assert main(bon_args(workdir, "local", tiny_policy, *fn)) == 0
    (workdir / "poison").touch()
    assert main(bon_args(workdir, "ray", tiny_policy, *fn, *RAY)) == 2
    err = capsys.readouterr().err
    assert "score: 1 of 6 pending shards failed every try (shard-00002.jsonl: " in err
    assert "prompt_id 'p5' sample_index 0: reward function" in err and "raised RuntimeError: poisoned batch" in err
    assert "rerun the same command to retry only these" in err
    score = workdir / "ray" / "score"
    written = {p.name: p.stat().st_mtime_ns for p in score.glob("shard-*.jsonl")}
    assert sorted(written) == [f"shard-{i:05d}.jsonl" for i in (0, 1, 3, 4, 5)]
    assert not (score / "manifest.json").exists() and not (score / "rewards.npy").exists()
    tries = (workdir / "poison-tries").read_text().split()
    # the first try and 2 retries, on both workers; each try calls the reward on the shard's
    # batch, then on the halves holding p5 (4, 2, 1 rows) to name the row it raises on
    assert len(tries) == 3 * 4 and len(set(tries)) == 2

    (workdir / "poison").unlink()
    assert main(bon_args(workdir, "ray", tiny_policy, *fn, *RAY)) == 0
    assert {p.name: p.stat().st_mtime_ns for p in score.glob("shard-*.jsonl") if p.name in written} == written
    assert tree_digest(workdir / "ray", hidden=False, executor=False) == tree_digest(
        workdir / "local", hidden=False, executor=False
    )
    assert len((workdir / "poison-tries").read_text().split()) == 3 * 4  # the rerun made only shard 00002


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_driver_killed_rerun_resumes_under_either_executor(workdir, tiny_policy, cluster):
    fn = ["--reward-fn", "length"]
    assert main(bon_args(workdir, "local", tiny_policy, *fn)) == 0
    argv = bon_args(workdir, "ray", tiny_policy, *fn, *RAY, "--ray-address", cluster.address)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "winnow", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        generate = workdir / "ray" / "generate"
        wait_for(lambda: proc.poll() is not None or len(list(generate.glob("shard-*.jsonl"))) >= 3, what="3 shards")
        assert proc.poll() is None, f"the driver ended before it was killed: {proc.stderr.read()}"
        proc.kill()
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    # the killed driver's actors die with it: none may write a shard after this point
    wait_for(lambda: not shard_actors(), 60, "the killed driver's Ray actors to go")
    # Shards the driver verified and recorded are kept; a file it had not recorded yet is made again.
    recorded = [json.loads(line)["file"] for line in (generate / "verified.jsonl").read_text().splitlines()]
    before = {name: (generate / name).stat().st_mtime_ns for name in recorded}
    assert 2 <= len(before) < NUM_PROMPTS and not (generate / "manifest.json").exists()

    # A resume under another executor is allowed: the executor is not part of the stage config.
    assert main(bon_args(workdir, "ray", tiny_policy, *fn, "--executor", "local")) == 0
    assert {p.name: p.stat().st_mtime_ns for p in generate.glob("shard-*.jsonl") if p.name in before} == before
    assert tree_digest(workdir / "ray", hidden=False, executor=False) == tree_digest(
        workdir / "local", hidden=False, executor=False
    )
    assert executor_record(workdir / "ray", "generate") == {"name": "local", "workers": 1, "retries": 0}
