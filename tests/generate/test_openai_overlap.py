"""Overlapping shards with the openai backend: the server stays ``--concurrency`` deep across
shard boundaries, the rows are those of shards made one after another, and a process killed
at random moments resumes to the same files (a real server, real processes, SIGKILL)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import wait_for
from serving import FakeServer

from winnow.cli import main
from winnow.stages.generate import GenerateWorker


class Gauge:
    """Counts the requests the server is answering at once; each takes ``delay(count)`` s."""

    def __init__(self, delay):
        self.delay, self.now, self.most = delay, 0, 0
        self.lock = threading.Lock()

    def __call__(self, count, body):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.delay(count))
        with self.lock:
            self.now -= 1
        return None


def argv(workdir: Path, url: str, run: str, *extra) -> list[str]:
    return [
        "generate", "--prompts", str(workdir / "prompts.jsonl"), "--run-dir", str(workdir / run),
        "--backend", "openai", "--base-url", url, "--model", "fake-model", "--n", "2",
        "--max-new-tokens", "4", "--shard-size", "2", "--seed", "3", "--concurrency", "8", *extra,
    ]  # fmt: skip


def shards(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "generate").glob("shard-*.jsonl"))}


WORKDIR_PROMPTS = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(24)]


def test_requests_stay_concurrency_deep_across_shards_with_the_same_rows(workdir, monkeypatch):
    gauge = Gauge(lambda count: 0.4)
    with FakeServer(fault=gauge) as server:
        assert main(argv(workdir, server.url, "overlapped")) == 0
        overlapped = gauge.most
        # shards one after another: a shard of 2 prompts never has more than 2 requests out
        monkeypatch.setattr(GenerateWorker, "pipelined", property(lambda self: False))
        gauge.most = 0
        assert main(argv(workdir, server.url, "sequential")) == 0
        sequential = gauge.most
    assert (overlapped, sequential) == (8, 2)
    assert shards(workdir / "overlapped") == shards(workdir / "sequential")
    assert len(shards(workdir / "overlapped")) == 12


class Gate:
    """Answers ``allow`` more requests, then holds the rest until released, so a kill lands
    while the run is mid-way whatever the machine's speed (each answer takes 20-100 ms)."""

    def __init__(self, seed: int):
        self.delays = random.Random(seed)
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.released.set()
        self.budget: int | None = None
        self.held = 0

    def arm(self, allow: int) -> None:
        with self.lock:
            self.budget, self.held = allow, 0
            self.released.clear()

    def release(self) -> None:
        with self.lock:
            self.budget = None
        self.released.set()

    def __call__(self, count, body):
        with self.lock:
            hold = self.budget is not None and self.budget <= 0
            if self.budget is not None and self.budget > 0:
                self.budget -= 1
            self.held += hold
            delay = self.delays.uniform(0.02, 0.1)
        if hold:
            self.released.wait(120)
        return delay


def test_killed_overlapping_generate_resumes_to_identical_files(workdir):
    rng = random.Random(20261201)
    gate = Gate(seed=7)
    with FakeServer(fault=gate) as server:
        assert main(argv(workdir, server.url, "reference")) == 0
        run = workdir / "killed"
        for _ in range(3):
            gate.arm(allow=rng.randint(2, 6))  # a few answers, then the rest wait: mid-run
            proc = subprocess.Popen(
                [sys.executable, "-m", "winnow", *argv(workdir, server.url, "killed")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_for(lambda: gate.held, 120, "the run's requests to be held", proc=proc)
            time.sleep(rng.uniform(0.0, 0.3))  # the answers let through may still be landing
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            gate.release()
        partial = len(shards(run))
        assert main(argv(workdir, server.url, "killed")) == 0
    assert partial < 12  # some shards were still to make when the last kill landed
    assert shards(run) == shards(workdir / "reference")
    assert (run / "generate" / "verified.jsonl").read_bytes() == (
        workdir / "reference" / "generate" / "verified.jsonl"
    ).read_bytes()
