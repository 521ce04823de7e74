"""``--on-error fail|skip``: a job of 100 prompts where one prompt is too long for the tiny
model's context (256 tokens) and the reward raises on one completion.

Under ``fail`` each stops the stage with one line naming its row; under ``skip`` each is
recorded in its stage's ``errors.jsonl``, its cells stay NaN, and the manifests and
``winnow report`` count them; a run killed mid-score and resumed leaves the same files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import fails, flags, read_rows, tree_digest, wait_for

from winnow.cli import main

LONG, BAD = "p17", "p42"  # too long for the context; the reward raises on its completion
WORKDIR_PROMPTS = [
    {"id": f"p{i}", "prompt": "x" * 300 if f"p{i}" == LONG else f"say something about {i}"} for i in range(100)
]
WORKDIR_FILES = {
    "rewards.py": f"""
import os
import pathlib
import time


def score(prompts, completions, prompt_ids, **kw):
    hold = os.environ.get("HOLD_MARK")
    if hold and "p80" in prompt_ids:  # the killed run: wait here, with earlier score shards written
        pathlib.Path(hold).touch()
        time.sleep(600)
    if "{BAD}" in prompt_ids:
        raise ValueError("no score for {BAD}")
    return [float(len(c)) for c in completions]
""",
    # score shards of 10 completions, so a kill lands between shards
    "config.yaml": "score:\n  shard_size: 10\n",
}


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """One torch thread: the tiny model gains nothing from more."""


def bon(workdir: Path, run: str, *extra: str) -> list[str]:
    """Best-of-1 over the 100 prompts: generate and score, 10 prompts a generate shard."""
    return [
        "bon",
        *flags(prompts=workdir / "prompts.jsonl", run_dir=workdir / run, model=workdir / "policy", n=1),
        *flags(max_new_tokens=2, shard_size=10, device="cpu", reward_fn="rewards.py:score"),
        *flags(config=workdir / "config.yaml"),
        *extra,
    ]


@pytest.fixture()
def job(workdir, tiny_policy, monkeypatch):
    """The work folder, holding the tiny policy as ``policy`` and the current folder (the
    reward is ``rewards.py:score``, found from here)."""
    (workdir / "policy").symlink_to(tiny_policy)
    monkeypatch.chdir(workdir)
    return workdir


def test_fail_names_the_long_prompt_then_the_row_the_reward_raises_on(job, capsys):
    fails(bon(job, "run"), capsys, f"prompt {LONG!r} (row 18) has 318 tokens", "--on-error skip", one_error=True)
    generate = ["generate", *flags(prompts=job / "prompts.jsonl", run_dir=job / "run", model=job / "policy", n=1)]
    assert main([*generate, *flags(max_new_tokens=2, shard_size=10, device="cpu", on_error="skip")]) == 0
    capsys.readouterr()
    score = ["score", *flags(run_dir=job / "run", reward_fn="rewards.py:score", config=job / "config.yaml")]
    err = fails(score, capsys, one_error=True)
    assert f"prompt_id {BAD!r} sample_index 0: reward function 'rewards.py:score' raised ValueError" in err
    assert "--on-error skip records such rows and goes on" in err
    assert not (job / "run/score/manifest.json").exists()


def test_skip_records_each_failed_row_and_leaves_its_cell_nan(job, capsys):
    assert main(bon(job, "run", "--on-error", "skip")) == 0
    err = capsys.readouterr().err
    run = job / "run"
    model = str(job / "policy")

    (gen_error,) = read_rows(run / "generate/errors.jsonl")
    assert {k: gen_error[k] for k in ("prompt_id", "model", "kind")} == {
        "prompt_id": LONG,
        "model": model,
        "kind": "long_prompt",
    }
    assert gen_error["error"] == (
        f"prompt {LONG!r} (row 18) has 318 tokens, more than the 254 that model {model} leaves for the prompt "
        "(context 256 minus max_new_tokens 2)"
    )
    (score_error,) = read_rows(run / "score/errors.jsonl")
    assert score_error == {
        "prompt_id": BAD,
        "sample_index": 0,
        "model": model,
        "kind": "reward",
        "reward_fn": "rewards.py:score",
        "error": f"reward function 'rewards.py:score' raised ValueError: no score for {BAD} "
        f"(batch starting at prompt_id {BAD!r})",
    }

    rewards = np.load(run / "score/rewards.npy")
    assert rewards.shape == (100, 1)
    assert np.flatnonzero(np.isnan(rewards[:, 0])).tolist() == [17, 42]  # the two failed rows, nothing else

    generate = json.loads((run / "generate/manifest.json").read_text())
    score = json.loads((run / "score/manifest.json").read_text())
    assert (generate["errors"], generate["skipped_prompts"], generate["num_completions"]) == (1, 1, 99)
    assert (score["errors"], score["scored"], score["unscored"]) == (1, 98, 1)
    assert "errors.jsonl" in generate["files"] and "errors-m0-00001.jsonl" in generate["files"]
    assert "errors.jsonl" in score["files"] and "errors-00004.jsonl" in score["files"]
    assert (
        f"winnow: warning: 1 rows failed and were skipped (--on-error skip); each is in {run}/score/errors.jsonl" in err
    )
    assert (
        f"winnow: warning: 1 rows failed and were skipped (--on-error skip); each is in {run}/generate/errors.jsonl"
        in err
    )

    assert main(["verify", str(run)]) == 0
    assert main(["report", str(run), "--bootstrap-iters", "10"]) == 0
    report = json.loads((run / "report/report.json").read_text())
    assert report["errors"] == {"generate": 1, "score": 1}
    line = "failed and skipped (on_error: skip): 1 in generate (generate/errors.jsonl), 1 in score (score/errors.jsonl)"
    assert line in capsys.readouterr().out
    assert line in (run / "report/report.md").read_text()

    # a rerun under fail does not finish a stage holding rows that setting never skips
    (run / "score/manifest.json").unlink()
    fails(bon(job, "run"), capsys, "1 row(s) failed in shards made under --on-error skip", one_error=True)


def test_killed_mid_score_and_resumed_gives_identical_files(job):
    assert main(bon(job, "reference", "--on-error", "skip")) == 0

    mark = job / "held"
    argv = bon(job, "run", "--on-error", "skip")
    env = dict(os.environ, HOLD_MARK=str(mark), PYTHONUNBUFFERED="1")
    with (job / "stderr.txt").open("w") as log:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen([sys.executable, "-m", "winnow", *argv], env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_for(mark.exists, 300, "the reward to hold at p80", proc=proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (job / "run/score/manifest.json").exists()
    assert (job / "run/score/errors-00004.jsonl").exists()  # p42's shard, written before the kill

    assert main(argv) == 0
    got = {k: v for k, v in tree_digest(job / "run").items() if "/." not in k}  # temp files a SIGKILL left
    want = tree_digest(job / "reference")
    assert got.keys() == want.keys()
    assert got == want


def test_a_request_the_server_refuses_is_recorded_and_the_rest_sampled(workdir, capsys):
    from serving import FakeServer

    def fault(count, body):
        return 400 if 'about 7"' in json.dumps(body) else None  # the prompt "say something about 7"

    argv = ["generate", "--backend", "openai", "--model", "fake-model", "--on-error", "skip"]
    argv += flags(prompts=workdir / "prompts.jsonl", run_dir=workdir / "run", n=1, max_new_tokens=16)
    with FakeServer(fault=fault) as fake:
        assert main([*argv, "--base-url", fake.url]) == 0
        fails(
            [*argv, "--base-url", fake.url, "--run-dir", str(workdir / "strict"), "--on-error", "fail"],
            capsys,
            "prompt 'p7': server",
            "400",
            one_error=True,
        )
    (error,) = read_rows(workdir / "run/generate/errors.jsonl")
    assert {k: error[k] for k in ("prompt_id", "model", "kind")} == {
        "prompt_id": "p7",
        "model": "fake-model",
        "kind": "request",
    }
    assert error["error"].startswith(f"prompt 'p7': server {fake.url} answered ") and "400" in error["error"]
    manifest = json.loads((workdir / "run/generate/manifest.json").read_text())
    assert (manifest["errors"], manifest["num_completions"], manifest["skipped_prompts"]) == (1, 99, 1)


def test_adaptive_steps_carry_their_failed_rows_into_the_assembled_stages(tmp_path, tiny_policy, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.jsonl").write_text(
        "".join(json.dumps({"id": f"a{i}", "prompt": f"n {i}"}) + "\n" for i in range(3))
    )
    (tmp_path / "script.py").write_text(
        "def reward(prompts, completions, prompt_ids, sample_indices, **kw):\n"
        "    if ('a1', 2) in zip(prompt_ids, sample_indices):\n"
        "        raise ValueError('a1 sample 2')\n"
        "    return [0.0] * len(completions)\n"
    )
    argv = ["bon", *flags(prompts="prompts.jsonl", run_dir="run", model=tiny_policy, n=4, adaptive_step=2)]
    argv += flags(max_new_tokens=2, device="cpu", reward_fn="script.py:reward", pass_threshold=0.5, on_error="skip")
    assert main(argv) == 0
    rewards = np.load(tmp_path / "run/score/rewards.npy")
    assert np.argwhere(np.isnan(rewards)).tolist() == [[1, 2]]  # no prompt passes: every cell sampled
    score = json.loads((tmp_path / "run/score/manifest.json").read_text())
    generate = json.loads((tmp_path / "run/generate/manifest.json").read_text())
    assert (score["errors"], generate["errors"]) == (1, 0)
    (row,) = read_rows(tmp_path / "run/score/errors.jsonl")
    assert (row["prompt_id"], row["sample_index"], row["kind"]) == ("a1", 2, "reward")
    assert main(["verify", "run"]) == 0


def test_a_bad_value_is_refused_before_any_work(job, capsys):
    (job / "bad.yaml").write_text("score:\n  on_error: ignore\n")
    fails(
        [*bon(job, "run")[:-2], "--config", str(job / "bad.yaml"), "--dry-run"],
        capsys,
        "score.on_error: must be one of fail, skip, got 'ignore'",
        one_error=True,
    )
    assert not (job / "run").exists()
