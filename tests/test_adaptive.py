"""Adaptive sampling with a scripted reward (which prompts pass at which sample): the exact
columns and NaNs, the samples spent, a kill between steps and mid-step then identical files,
and the Ray executor's identical files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ADAPTIVE_SCRIPT, flags, tree_digest, wait_for

from winnow.adaptive import is_closed
from winnow.cli import main

nan = np.nan
# step 1 (columns 0, 1): q0 passes at 0 and closes; step 2 (2, 3): q1 at 2; step 3 (4, 5):
# q2 at 5; step 4 (6, 7): q3 never passes and stops at MAX = 8.
EXPECTED_PASS = np.array(
    [
        [1, 0, nan, nan, nan, nan, nan, nan],
        [0, 0, 1, 1, nan, nan, nan, nan],
        [0, 0, 0, 0, 0, 1, nan, nan],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ]
)


WORKDIR_PROMPTS = [{"id": f"q{i}", "prompt": f"count to {i}"} for i in range(4)]
WORKDIR_FILES = {"script.py": ADAPTIVE_SCRIPT}


def bon_cmd(workdir: Path, run: Path, model: Path, *extra) -> list[str]:
    return [
        "bon",
        *flags(prompts=workdir / "prompts.jsonl", run_dir=run, model=model, n=8, adaptive_step=2, max_new_tokens=6),
        *flags(shard_size=1, device="cpu", reward_fn=f"{workdir}/script.py:reward", pass_threshold=0.5),
        *extra,
    ]


def rewards_of(run: Path) -> np.ndarray:
    return np.load(run / "score" / "rewards.npy")


def test_pass_rule_gives_the_expected_columns_and_nans(workdir, tiny_policy):
    run = workdir / "run"
    assert main(bon_cmd(workdir, run, tiny_policy)) == 0
    np.testing.assert_array_equal(rewards_of(run), EXPECTED_PASS)
    a = json.loads((run / "generate" / "manifest.json").read_text())["adaptive"]
    assert a["samples_per_prompt"] == [2, 4, 6, 8]
    assert (a["samples"], a["fixed_samples"], a["steps"], a["closed"], a["passing_prompts"]) == (20, 32, 4, 3, 3)
    assert a["saved_share"] == pytest.approx(1 - 20 / 32)
    rows = [json.loads(line) for line in (run / "generate" / "shard-s00002.jsonl").read_text().splitlines()]
    assert sorted((r["prompt_id"], r["sample_index"]) for r in rows) == [
        (q, j) for q in ("q1", "q2", "q3") for j in (2, 3)
    ]
    assert a["tokens"] == sum(
        json.loads(line)["num_tokens"]
        for shard in sorted((run / "generate").glob("shard-*.jsonl"))
        for line in shard.read_text().splitlines()
    )
    best = [json.loads(line) for line in (run / "best.jsonl").read_text().splitlines()]
    assert [b["sample_index"] for b in best] == [0, 2, 5, 0]


def test_pass_and_fail_and_passing_k_rules(workdir, tiny_policy):
    run = workdir / "pf"
    assert main(bon_cmd(workdir, run, tiny_policy, "--stop-when", "pass-and-fail")) == 0
    np.testing.assert_array_equal(rewards_of(run), EXPECTED_PASS)  # every pass here comes with a fail
    run = workdir / "k2"
    assert main(bon_cmd(workdir, run, tiny_policy, "--stop-when", "passing:2")) == 0
    got = rewards_of(run)
    # only q1 reaches two passing texts (2 and 3, distinct); the others run to MAX.
    assert (~np.isnan(got)).sum(axis=1).tolist() == [8, 4, 8, 8]


def test_consensus_rule_with_an_extractor(workdir, tiny_policy):
    run = workdir / "c"
    argv = bon_cmd(workdir, run, tiny_policy, "--stop-when", "consensus:0.9", "--answer")
    assert main([*argv, f"{workdir}/script.py:same_answer"]) == 0
    assert (~np.isnan(rewards_of(run))).sum(axis=1).tolist() == [2, 2, 2, 2]  # all agree after step 1
    # bon --aggregate weighted on the same run: one answer everywhere, its best-rewarded sample
    assert main([*argv, f"{workdir}/script.py:same_answer", "--aggregate", "weighted"]) == 0
    best = [json.loads(line) for line in (run / "best.jsonl").read_text().splitlines()]
    assert [(b["sample_index"], b["answer"], b["aggregate"]) for b in best] == [
        (0, "42", "weighted"),
        (0, "42", "weighted"),  # q1 passes at 2, after consensus closed it
        (0, "42", "weighted"),
        (0, "42", "weighted"),
    ]


def test_report_treats_an_adaptive_run_by_its_first_step(workdir, tiny_policy):
    from winnow.report import run_report

    run = workdir / "run"
    assert main(bon_cmd(workdir, run, tiny_policy)) == 0
    r = run_report(run, iters=50)
    assert r["adaptive"]["samples"] == 20
    p = r["pass"]
    assert p["pass_at_k"]["k"] == [1, 2] and "first 2 samples" in p["pass_at_k_source"]
    # first two columns: q0 [1, 0] (c=1), others c=0: pass@1 = 0.5/4, pass@2 = 1/4
    np.testing.assert_allclose(p["pass_at_k"]["mean"], [0.125, 0.25])
    # best-of-n from the same columns, over all 4 prompts (over the 8 columns only q3, which
    # never passed, is fully scored: 0.0 for every n); cells never sampled are not "unscored"
    bon = r["best_of_n"]
    assert (bon["n"], bon["rows"], bon["source"]) == ([1, 2], 4, p["pass_at_k_source"])
    np.testing.assert_allclose(bon["mean"], [0.125, 0.25])
    assert (r["unscored"], r["never_sampled"]) == (0, 12)
    md = (run / "report" / "report.md").read_text()
    assert "## Adaptive sampling" in md
    assert "0 unscored, 12 cells never sampled (adaptive)" in md
    assert "4 fully scored prompts, from first 2 samples of every prompt (the adaptive run's first step)" in md


def test_rules_by_hand():
    r = np.array([1.0, 1.0, 0.0])
    assert is_closed(("pass-and-fail", 0), r, ["a", "b", "c"], None, 0.5)
    assert not is_closed(("pass-and-fail", 0), r[:2], ["a", "b"], None, 0.5)
    assert not is_closed(("passing", 2), r, ["a", "a", "c"], None, 0.5)  # one distinct passing text
    assert is_closed(("passing", 2), r, ["a", "b", "c"], None, 0.5)
    assert not is_closed(("consensus", 0.5), r, ["a", "b", "c"], ["1", None, "2"], None)  # 1/3
    assert is_closed(("consensus", 0.5), r, ["a", "b", "c"], ["1", None, "1"], None)  # 2/3


def test_bad_rules_and_missing_threshold_are_one_line_errors(workdir, tiny_policy, capsys):
    argv = bon_cmd(workdir, workdir / "bad", tiny_policy, "--stop-when", "passing:x")
    assert main(argv) == 2
    assert "adaptive.stop_when: passing needs an integer K >= 1" in capsys.readouterr().err
    argv = bon_cmd(workdir, workdir / "bad2", tiny_policy)
    del argv[argv.index("--pass-threshold") : argv.index("--pass-threshold") + 2]
    assert main(argv) == 2
    assert "needs score.pass_threshold (--pass-threshold)" in capsys.readouterr().err


# The killed run: the real CLI in a real process, held for good at a chosen point of step 2
# (before it starts, or after its first generate shard); the test kills it there.
HELD = """
import sys, time
from pathlib import Path
from winnow import adaptive
from winnow.generate import hf

where, marker = sys.argv[1], Path(sys.argv[2])
real_generate, real_backend = adaptive.stages.generate, hf.HFBackend.generate
calls = {"n": 0}

def stage(folder, *args, **kw):
    if where == "between" and Path(folder).name == "step-2":
        marker.write_text("held")
        time.sleep(600)
    return real_generate(folder, *args, **kw)

def backend(self, *args, **kw):
    calls["n"] += 1
    if where == "mid" and calls["n"] == 6:  # step 1 made 4 one-prompt shards; step 2's second
        marker.write_text("held")
        time.sleep(600)
    return real_backend(self, *args, **kw)

adaptive.stages.generate = stage
hf.HFBackend.generate = backend
from winnow.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("where", ["between", "mid"])
def test_killed_between_or_mid_step_resumes_to_identical_files(workdir, tiny_policy, where):
    reference = workdir / "reference"
    assert main(bon_cmd(workdir, reference, tiny_policy)) == 0
    run, marker = workdir / "run", workdir / "held"
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD, where, str(marker), *bon_cmd(workdir, run, tiny_policy)],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "stderr.txt").open("w"),
    )
    wait_for(lambda: marker.exists() or proc.poll() is not None, 120, marker.name)
    assert proc.poll() is None, (workdir / "stderr.txt").read_text()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert (run / "adaptive/step-1/score/manifest.json").exists()
    assert not (run / "generate").exists()
    if where == "mid":
        assert [p.name for p in (run / "adaptive/step-2/generate").glob("shard-*.jsonl")] == ["shard-m0-00000.jsonl"]
    assert main(bon_cmd(workdir, run, tiny_policy)) == 0
    got = {k: v for k, v in tree_digest(run).items() if "/." not in k}  # temp files a SIGKILL left
    assert got == tree_digest(reference)


def test_select_passing_on_an_adaptive_run(workdir, tiny_policy):
    run = workdir / "sel"
    assert main(bon_cmd(workdir, run, tiny_policy)) == 0
    argv = ["select", "--run-dir", str(run), "--strategy", "passing", "--pairs", "pass-fail"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (run / "select" / "selected.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [("q0", 0), ("q1", 2), ("q2", 5)]
    pairs = [json.loads(line) for line in (run / "select" / "pairs.jsonl").read_text().splitlines()]
    assert [(p["prompt_id"], p["chosen_index"], p["rejected_index"]) for p in pairs] == [
        ("q0", 0, 1),
        ("q1", 2, 0),
        ("q2", 5, 0),
    ]
    argv = ["select", "--run-dir", str(workdir / "sel"), "--strategy", "passing", "--min-pass-rate", "0.3"]
    shutil_rm(run / "select")
    assert main(argv) == 0
    rows = [json.loads(line) for line in (run / "select" / "selected.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in rows] == ["q0", "q1"]  # pass rates 1/2, 2/4, 1/6, 0


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


@pytest.mark.timeout(600)  # four steps, each starting Ray actors: minutes on a loaded machine
@pytest.mark.usefixtures("own_ray")
def test_ray_executor_makes_the_same_files(workdir, tiny_policy):
    """Every step's stages run under Ray: the same files as the local executor, manifests
    equal once their executor records are left out."""
    local, distributed = workdir / "local", workdir / "ray"
    assert main(bon_cmd(workdir, local, tiny_policy)) == 0
    ray_args = ["--executor", "ray", "--cpus-per-worker", "0.5"]
    assert main(bon_cmd(workdir, distributed, tiny_policy, *ray_args)) == 0

    def files(root):
        return {k: v for k, v in tree_digest(root).items() if not k.endswith("manifest.json")}

    assert files(distributed) == files(local)
    for manifest in sorted(local.rglob("manifest.json")):
        rel = manifest.relative_to(local)
        want, got = (json.loads(p.read_text()) for p in (manifest, distributed / rel))
        assert got.pop("executor")["name"] == "ray", rel
        want.pop("executor")
        assert got == want, rel


def test_several_rewards_keep_their_own_matrices(workdir, tiny_policy):
    run = workdir / "two"
    extra = ["--reward-fn", "length", "--reward-weights", "1,0"]
    assert main(bon_cmd(workdir, run, tiny_policy, *extra)) == 0
    np.testing.assert_array_equal(rewards_of(run), EXPECTED_PASS)  # length weighs 0: the same closes
    first, second = (np.load(run / "score" / f"rewards-{k}.npy") for k in (0, 1))
    np.testing.assert_array_equal(first, EXPECTED_PASS)
    np.testing.assert_array_equal(np.isnan(second), np.isnan(EXPECTED_PASS))
    manifest = json.loads((run / "score" / "manifest.json").read_text())
    assert [c["file"] for c in manifest["components"]] == ["rewards-0.npy", "rewards-1.npy"]


def test_adaptive_with_rounds_or_a_bad_extractor_is_refused(workdir, tiny_policy, capsys):
    argv = bon_cmd(workdir, workdir / "r", tiny_policy)
    argv[0] = "run"
    assert main([*argv, "--rounds", "2"]) == 2
    assert "adaptive.step: adaptive sampling runs a single round; leave out --rounds" in capsys.readouterr().err
    argv = bon_cmd(workdir, workdir / "x", tiny_policy, "--stop-when", "consensus:0.5", "--answer", "nonsense")
    assert main(argv) == 2
    assert "adaptive.answer: use 'auto', 'math', 'module:function'" in capsys.readouterr().err


def test_the_policy_loads_once_for_all_steps(workdir, tiny_policy, monkeypatch):
    from winnow.generate import hf

    loads = []
    real_init = hf.HFBackend.__init__

    def counted_init(self, *args, **kw):
        loads.append(args[0] if args else kw.get("model"))
        real_init(self, *args, **kw)

    monkeypatch.setattr(hf.HFBackend, "__init__", counted_init)
    run = workdir / "run"
    assert main(bon_cmd(workdir, run, tiny_policy)) == 0
    assert json.loads((run / "generate" / "manifest.json").read_text())["adaptive"]["steps"] == 4
    assert loads == [str(tiny_policy)]  # four steps, one load
    np.testing.assert_array_equal(rewards_of(run), EXPECTED_PASS)


def test_generate_then_score_give_the_files_bon_gives(workdir, tiny_policy, capsys):
    """``winnow generate --adaptive-step`` samples and scores the steps and writes
    RUN_DIR/generate; ``winnow score`` with the same options puts RUN_DIR/score together
    from the steps (nothing scored again): the same stages as ``bon`` writes."""
    reference = workdir / "reference"
    assert main(bon_cmd(workdir, reference, tiny_policy)) == 0
    run = workdir / "split"
    argv = bon_cmd(workdir, run, tiny_policy)
    assert main(["generate", *argv[1:]]) == 0
    assert (run / "generate/manifest.json").exists() and not (run / "score").exists()
    score_options = ["--device", "cpu", *argv[argv.index("--reward-fn") :]]  # as bon scored the steps
    assert main(["score", "--run-dir", str(run), *score_options]) == 0
    np.testing.assert_array_equal(rewards_of(run), EXPECTED_PASS)
    digest = tree_digest(run)
    expected = {k: v for k, v in tree_digest(reference).items() if k != "best.jsonl"}
    assert digest == expected
    # rerun: both commands resume to the same files
    assert main(["generate", *argv[1:]]) == 0 and main(["score", "--run-dir", str(run), *score_options]) == 0
    assert tree_digest(run) == digest
    capsys.readouterr()
    assert main(["verify", str(run)]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "generate  ok" in out and "score     ok" in out and "PROBLEM" not in out
    # another reward over the same (adaptively sampled) completions is an ordinary score stage
    other = workdir / "other"
    assert main(["generate", *bon_cmd(workdir, other, tiny_policy)[1:]]) == 0
    assert main(["score", "--run-dir", str(other), "--reward-fn", "length"]) == 0
    got = rewards_of(other)
    assert ((~np.isnan(got)) == (~np.isnan(EXPECTED_PASS))).all() and np.nanmin(got) > 1
    # a reward for generate without adaptive sampling means nothing there: refused
    capsys.readouterr()
    assert main(["generate", "--run-dir", str(workdir / "x"), "--prompts", str(workdir / "prompts.jsonl"),
                 "--reward-fn", "length"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == (
        "winnow: error: score.reward_fn: winnow generate scores only with --adaptive-step (adaptive.step)"
    )
    # one config file for every stage: its score section is for `winnow score`, not an error here
    (workdir / "all.yaml").write_text("score:\n  reward_fn: length\ngenerate:\n  n: 2\n  max_new_tokens: 4\n")
    plain = workdir / "plain"
    argv = ["generate", "--config", str(workdir / "all.yaml"), "--run-dir", str(plain), "--model", str(tiny_policy)]
    assert main([*argv, "--prompts", str(workdir / "prompts.jsonl"), "--device", "cpu"]) == 0
    assert not (plain / "score").exists() and not (plain / "adaptive").exists()
