"""``winnow verify`` of a run evaluated with ``--eval-prompts``: each model's run dir under
``RUN/eval`` is checked as any run dir, with the same lines prefixed by its folder, and
eval.json must be there; ``winnow verify`` of a ``winnow eval`` folder does the same. The
run reads its held-out file with the prompts' column options."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import flags, read_rows, write_jsonl

from winnow.cli import main
from winnow.records import check_file, read_json

HELD_OUT = [{"qid": f"h{i}", "question": f"say {i}"} for i in range(2)]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_policy, one_thread) -> Path:
    """One round of ``winnow run --eval-prompts`` with the tiny model: RUN/eval/start and
    round-1; both files hold their prompts in the columns ``--prompt-column`` and ``--id-column`` name."""
    root = tmp_path_factory.mktemp("verify-eval")
    rows = [{"qid": f"p{i}", "question": f"prompt {i}"} for i in range(3)]
    prompts, held = write_jsonl(root / "prompts.jsonl", rows), write_jsonl(root / "heldout.jsonl", HELD_OUT)
    argv = ["run", *flags(prompts=prompts, run_dir=root / "run", model=tiny_policy, reward_fn="length")]
    argv += flags(n=2, max_new_tokens=4, shard_size=2, device="cpu", epochs=1, eval_prompts=held)
    assert main([*argv, *flags(prompt_column="question", id_column="qid")]) == 0
    return root / "run"


def test_the_held_out_file_is_read_with_the_prompts_column_options(evaluated):
    for name in ("start", "round-1"):
        got = read_rows(evaluated / "eval" / name / "generate" / "prompts.jsonl")
        assert [(r["id"], r["prompt"]) for r in got] == [(r["qid"], r["question"]) for r in HELD_OUT]


@pytest.fixture()
def run(evaluated, tmp_path) -> Path:
    """A copy of the evaluated run, for a test to damage."""
    return Path(shutil.copytree(evaluated, tmp_path / "run"))


def verify(folder: Path, capsys) -> tuple[int, list[str], str]:
    code = main(["verify", str(folder)])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_a_sound_evaluated_run_checks_each_model_and_eval_json(run, capsys):
    code, lines, _ = verify(run, capsys)
    evaluated = [
        "round-1/generate  ok",
        "round-1/score     ok",
        "start/generate  ok",
        "start/score     ok",
        "eval.json ok",
    ]
    assert code == 0
    assert lines == ["generate  ok", "score     ok", "select    ok", "sft       ok", "dpo       not run"] + [
        f"eval/{line}" for line in evaluated
    ]
    code, lines, _ = verify(run / "eval", capsys)  # the folder alone, as `winnow eval` writes one
    assert code == 0 and lines == evaluated


def test_a_damaged_file_of_an_evaluated_model_is_named_with_its_folder(run, capsys):
    score = run / "eval" / "round-1" / "score"
    record = read_json(score / "manifest.json")["files"]["rewards.npy"]
    with (score / "rewards.npy").open("ab") as f:
        f.write(b"\0")
    code, lines, err = verify(run, capsys)
    problem = check_file(score / "rewards.npy", record)
    assert code == 2 and err.strip() == f"winnow: error: 1 problem(s) in {run}"
    assert (
        f"eval/round-1/score     PROBLEM {score / 'rewards.npy'}: {problem}; rerun `winnow score` to remake it" in lines
    )
    assert "eval/start/score     ok" in lines and "score     ok" in lines  # the rest still checked


def test_an_evaluation_without_its_result_or_a_model_folder_is_a_problem(run, capsys):
    shutil.rmtree(run / "eval" / "start")
    code, lines, _ = verify(run, capsys)
    path = run / "eval" / "eval.json"
    assert code == 2
    assert lines[-1] == (
        f"eval/eval.json PROBLEM {path}: names model 'start', whose folder {run / 'eval' / 'start'} is missing; "
        "rerun the command that evaluated"
    )
    path.unlink()
    code, lines, _ = verify(run, capsys)
    assert code == 2
    assert lines[-1] == (
        f"eval/eval.json PROBLEM {path}: missing: the evaluation is not finished; rerun the command that evaluated"
    )
