"""Resume: a run killed mid-way and rerun ends with the same files as an uninterrupted one."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import flags, start_held, tree_digest, wait_for

from winnow.cli import main

NUM_PROMPTS = 8
HELD_AFTER = 3  # shards the killed run finishes before it is held, and killed


def run_cmd(workdir: Path, run: Path, model: Path, *extra) -> list[str]:
    return [
        "run",
        *flags(prompts=workdir / "prompts.jsonl", run_dir=run, model=model, n=4, max_new_tokens=48, shard_size=1),
        *flags(batch_size=1, device="cpu", reward_fn="length", strategy="top_k_overall", k=12, epochs=1),
        *flags(sft_batch_size=8),
        *extra,
    ]


WORKDIR_PROMPTS = [{"id": f"q{i}", "prompt": f"write two sentences about item {i}"} for i in range(NUM_PROMPTS)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_identical_files(workdir, tiny_policy, sig):
    reference = workdir / "reference"
    assert main(run_cmd(workdir, reference, tiny_policy)) == 0

    run = workdir / "run"
    log = workdir / "stderr.txt"
    # a file, not a pipe: a full pipe would block the child
    proc = start_held(run_cmd(workdir, run, tiny_policy), after=HELD_AFTER, stderr=log.open("w"))
    shard = run / f"generate/shard-m0-{HELD_AFTER - 1:05d}.jsonl"  # one prompt a shard
    wait_for(shard.exists, 120, shard.name, proc=proc)
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
    args = ["generate", *flags(prompts=workdir / "prompts.jsonl", run_dir=run, model=tiny_policy, n=2)]
    args += flags(max_new_tokens=2, device="cpu")
    assert main(args) == 0
    before = tree_digest(run)
    assert main(args + ["--temperature", "0.7", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "generate.temperature: 1.0 -> 0.7" in err and "generate.seed: 0 -> 3" in err
    assert tree_digest(run) == before
    assert main(args) == 0  # the unchanged config is still accepted (and finds the stage complete)
