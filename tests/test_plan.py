"""The whole plan is checked before anything is sampled: each bad part is one line, exit 2,
and no stage folder made; every folder that would refuse is named at once; ``--dry-run``
prints the plan and writes nothing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from helpers import ADAPTIVE_SCRIPT, tree_digest, write_jsonl

import winnow
from winnow.cli import main
from winnow.cli_options import parser

REWARDS = """
def score(prompts, completions, **kw):
    return [1.0] * len(completions)

def bare(prompts, completions):
    return [1.0] * len(completions)
"""


WORKDIR_PROMPTS = [{"id": f"q{i}", "prompt": f"count to {i}"} for i in range(5)]
WORKDIR_FILES = {"rewards.py": REWARDS, "script.py": ADAPTIVE_SCRIPT}


def args(command: str, d: Path, model: Path, *extra: str) -> list[str]:
    argv = [command, "--prompts", str(d / "prompts.jsonl"), "--run-dir", str(d / "run"), "--model", str(model)]
    return [*argv, "--n", "4", "--max-new-tokens", "4", "--shard-size", "2", "--device", "cpu", *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


# ---- a bad reward, column or model: one line, before any stage folder exists ----------------

BUILTINS = "vader, length, math, choice, exact, ifeval, code"


@pytest.mark.parametrize(
    ("reward", "expected"),
    [
        (
            "vadr",
            f"unknown reward function 'vadr' (did you mean 'vader'?): use a built-in ({BUILTINS}), "
            "'module:function' or 'path/to/file.py:function'",
        ),
        ("{d}/my_reward.py:score", "reward function file does not exist: {d}/my_reward.py"),
        (
            "{d}/rewards.py:scor",
            "reward function '{d}/rewards.py:scor': {d}/rewards.py has no callable 'scor' (did you mean 'score'?)",
        ),
        (
            "{d}/rewards.py:bare",
            "reward function '{d}/rewards.py:bare' cannot take the call the score stage makes, f(prompts, "
            "completions, prompt_ids=..., sample_indices=..., **columns): got an unexpected keyword argument "
            "'prompt_ids'",
        ),
        (
            "math",
            "reward 'math' reads the prompts column 'answer', which the prompts do not have (columns: none); "
            "set --reference-column",
        ),
        ("code", "reward 'code' reads the prompts column 'test', which the prompts do not have (columns: none)"),
    ],
)
@pytest.mark.parametrize("command", ["bon", "run"])
def test_a_bad_reward_fails_before_sampling(workdir, tiny_policy, capsys, command, reward, expected):
    start = time.monotonic()
    assert main(args(command, workdir, tiny_policy, "--reward-fn", reward.format(d=workdir))) == 2
    assert one_line_error(capsys) == "winnow: error: " + expected.format(d=workdir)
    assert not (workdir / "run").exists()  # no stage folder, so no model was loaded
    assert time.monotonic() - start < 10


def test_adaptive_generate_checks_its_reward_before_the_first_step(workdir, tiny_policy, capsys):
    argv = args("generate", workdir, tiny_policy, "--adaptive-step", "2", "--pass-threshold", "1")
    assert main([*argv, "--reward-fn", f"{workdir}/rewards.py:scor"]) == 2
    assert "has no callable 'scor' (did you mean 'score'?)" in one_line_error(capsys)
    assert not (workdir / "run").exists()


def test_a_reference_column_is_checked_against_the_prompts_file(workdir, tiny_policy, capsys):
    write_jsonl(workdir / "prompts.jsonl", [{"id": "q0", "prompt": "2 + 2?", "solution": "4"}])
    assert main(args("bon", workdir, tiny_policy, "--reward-fn", "exact", "--reference-column", "answer")) == 2
    assert one_line_error(capsys) == (
        "winnow: error: reward 'exact' reads the prompts column 'answer', which the prompts do not have "
        "(columns: solution); set --reference-column"
    )
    assert not (workdir / "run").exists()
    assert main(args("bon", workdir, tiny_policy, "--reward-fn", "exact", "--reference-column", "solution")) == 0


def test_a_missing_model_fails_before_any_folder_is_made(workdir, capsys):
    assert main(args("run", workdir, workdir / "nope", "--reward-fn", "length")) == 2
    assert str(workdir / "nope") in one_line_error(capsys)
    assert not (workdir / "run").exists()


def test_a_missing_sft_model_fails_before_sampling(workdir, tiny_policy, capsys):
    argv = args("run", workdir, tiny_policy, "--reward-fn", "length", "--sft-model", str(workdir / "nope"))
    assert main(argv) == 2
    assert str(workdir / "nope") in one_line_error(capsys)
    assert not (workdir / "run").exists()


# ---- resume: every folder that would refuse, named at once, before any work -----------------


def test_a_changed_option_names_every_stage_to_redo(workdir, tiny_policy, capsys):
    run = workdir / "run"
    assert main(args("run", workdir, tiny_policy, "--reward-fn", "length", "--epochs", "1")) == 0
    capsys.readouterr()
    before = tree_digest(run)
    argv = args("run", workdir, tiny_policy, "--reward-fn", "length", "--epochs", "1", "--temperature", "0.5")
    assert main(argv) == 2
    assert one_line_error(capsys) == (
        f"winnow: error: refusing to resume under a changed config (checked before any work): "
        f"{run}/generate: generate.temperature: 1.0 -> 0.5; "
        f"{run}/score: made from another generate stage (generate_hash); "
        f"{run}/select: made from another score stage (score_hash); "
        f"{run}/sft: made from another select stage (select_hash). "
        f"Use a new --run-dir, or delete {run}/generate and {run}/score and {run}/select and {run}/sft "
        "to redo these stages."
    )
    assert tree_digest(run) == before
    for stage in ("generate", "score", "select", "sft"):  # as the message advises: then it runs through
        shutil.rmtree(run / stage)
    assert main(argv) == 0


def test_a_larger_adaptive_max_is_refused_before_sampling_more_steps(workdir, tiny_policy, capsys):
    """The adaptive command rerun into its run dir with a larger --n: refused before step 3
    is sampled (it used to sample every new step, then refuse RUN_DIR/generate)."""
    run = workdir / "run"
    adaptive = ["--adaptive-step", "2", "--reward-fn", f"{workdir}/script.py:reward", "--pass-threshold", "0.5"]
    write_jsonl(workdir / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"count to {i}"} for i in range(4)])
    assert main(args("bon", workdir, tiny_policy, *adaptive)) == 0
    capsys.readouterr()
    before = tree_digest(run)
    assert main([*args("bon", workdir, tiny_policy, *adaptive), "--n", "8"]) == 2
    assert one_line_error(capsys) == (
        f"winnow: error: refusing to resume under a changed config (checked before any work): "
        f"{run}/generate: generate.n: 4 -> 8; {run}/score: made after {run}/generate, which must be redone. "
        f"Use a new --run-dir, or delete {run}/generate and {run}/score to redo these stages."
    )
    assert tree_digest(run) == before and not (run / "adaptive" / "step-3").exists()


def test_a_changed_reward_in_a_step_is_named_with_what_follows(workdir, tiny_policy, capsys):
    run = workdir / "run"
    adaptive = ["--adaptive-step", "2", "--pass-threshold", "0.5"]
    write_jsonl(workdir / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"count to {i}"} for i in range(4)])
    assert main(args("bon", workdir, tiny_policy, *adaptive, "--reward-fn", f"{workdir}/script.py:reward")) == 0
    capsys.readouterr()
    (workdir / "script.py").write_text(ADAPTIVE_SCRIPT.replace('"q3": set()', '"q3": {0}'))
    assert main(args("bon", workdir, tiny_policy, *adaptive, "--reward-fn", f"{workdir}/script.py:reward")) == 2
    err = one_line_error(capsys)
    step1 = run / "adaptive" / "step-1"
    assert f"{step1}/score: provenance.reward.0: " in err
    assert f"{step1 / 'score'}, which must be redone" in err and f"{run}/score: made after" in err


# ---- --dry-run ---------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_writes_nothing(workdir, tiny_policy, capsys):
    assert main([*args("bon", workdir, tiny_policy, "--reward-fn", "length"), "--dry-run"]) == 0
    run = workdir / "run"
    assert capsys.readouterr().out.splitlines() == [
        f"winnow bon --dry-run: the plan for {run} (checked; nothing was written)",
        "prompts: 5",
        "samples: 4 per prompt, at most 4 tokens each",
        "reward: length",
        "stages:",
        f"  run     {run}/generate",
        f"  run     {run}/score",
        "tokens to sample: at most 80 (20 completions x max_new_tokens 4)",
        f"outputs: {run}/generate, {run}/score, {run}/best.jsonl",
    ]
    assert not run.exists()


def test_dry_run_of_a_resume_counts_what_is_made(workdir, tiny_policy, capsys):
    run = workdir / "run"
    assert main(args("generate", workdir, tiny_policy)) == 0
    (run / "generate" / "manifest.json").unlink()  # as if killed after the first of 3 shards
    ledger = run / "generate" / "verified.jsonl"
    ledger.write_text(ledger.read_text().splitlines(keepends=True)[0])
    capsys.readouterr()
    before = tree_digest(run)
    assert main([*args("generate", workdir, tiny_policy), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [
        f"  resume  {run}/generate  (1 of 3 shards made)",
        "tokens to sample: at most 48 (12 completions x max_new_tokens 4; 8 completions already made)",
        f"outputs: {run}/generate",
    ]
    assert tree_digest(run) == before


def test_dry_run_of_rounds_and_of_a_refused_resume(workdir, tiny_policy, capsys):
    run = workdir / "run"
    assert main([*args("run", workdir, tiny_policy, "--reward-fn", "length", "--rounds", "2"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "samples: 4 per prompt, in each of 2 rounds, at most 4 tokens each"
    assert [line.split()[0] for line in out[5:13]] == ["run"] * 8
    assert out[13] == "tokens to sample: at most 160 (40 completions x max_new_tokens 4)"
    assert not run.exists()
    assert main(args("generate", workdir, tiny_policy)) == 0
    capsys.readouterr()
    assert main([*args("generate", workdir, tiny_policy, "--seed", "1"), "--dry-run"]) == 2
    assert "refusing to resume under a changed config (checked before any work)" in one_line_error(capsys)


def test_dry_run_refuses_what_the_run_would(workdir, tiny_policy, capsys):
    argv = args("run", workdir, tiny_policy, "--adaptive-step", "2", "--pass-threshold", "1", "--rounds", "2")
    assert main([*argv, "--dry-run"]) == 2
    assert one_line_error(capsys) == (
        "winnow: error: adaptive.step: adaptive sampling runs a single round; leave out --rounds"
    )


def test_dry_run_of_score_on_a_finished_generate(workdir, tiny_policy, capsys):
    run = workdir / "run"
    assert main(args("generate", workdir, tiny_policy)) == 0
    capsys.readouterr()
    assert main(["score", "--run-dir", str(run), "--reward-fn", "length", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "reward: length",
        "stages:",
        f"  run     {run}/score",
        f"outputs: {run}/score",
    ]
    assert not (run / "score").exists()


@pytest.mark.parametrize("command", ["run", "bon", "generate", "score"])
def test_dry_run_is_in_each_commands_help(command):
    sub = parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    assert "--dry-run" in sub.format_help() and "without writing anything" in sub.format_help()


# ---- the Python API ------------------------------------------------------------------------


def test_best_of_n_checks_the_reward_before_the_model(tmp_path):
    with pytest.raises(winnow.WinnowError, match=r"unknown reward function 'vadr' \(did you mean 'vader'\?\)"):
        winnow.best_of_n(["hi"], model=str(tmp_path / "no-model"), reward="vadr", n=2)


def test_best_of_n_inspects_a_callable_reward_before_the_model(tmp_path):
    with pytest.raises(winnow.WinnowError, match="got an unexpected keyword argument 'prompt_ids'"):
        winnow.best_of_n(["hi"], model=str(tmp_path / "no-model"), reward=lambda prompts, completions: [], n=2)


def test_a_column_named_as_a_reward_option_fails_before_sampling(workdir, tiny_policy, capsys):
    write_jsonl(workdir / "prompts.jsonl", [{"id": "q0", "prompt": "2 + 2?", "answer": "4", "reference_column": "x"}])
    assert main(args("bon", workdir, tiny_policy, "--reward-fn", "exact")) == 2
    assert one_line_error(capsys) == (
        "winnow: error: prompts column 'reference_column' has the name of an option of reward 'exact'; "
        "rename the column"
    )
    assert not (workdir / "run").exists()


def test_run_checks_its_plan_before_sampling(tmp_path, tiny_policy):
    generate = {"models": [str(tiny_policy)], "n": 2, "max_new_tokens": 2, "device": "cpu"}
    with pytest.raises(winnow.WinnowError, match="unknown reward function 'vadr'"):
        winnow.run(tmp_path / "run", ["a", "b"], generate=generate, score={"reward_fn": "vadr"})
    assert not (tmp_path / "run").exists()


def test_the_doctests_of_the_plan_and_the_reward_loader():
    import doctest

    import winnow.loader
    import winnow.plan

    for module in (winnow.plan, winnow.loader):
        failed, tried = doctest.testmod(module)
        assert failed == 0 and tried > 0, module.__name__
