"""Nothing silently wrong: lineage checked by readers, time-limited rewards, no tracebacks.

Each test is an adversarial probe with tiny models: wrong data refused, a clear one-line
error (exit 2) instead of a traceback, or a run dir left consistent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_jsonl

from winnow.cli import main

NUM_PROMPTS = 4


def gen_args(run: Path, prompts: Path, model: Path, *extra) -> list[str]:
    return [
        "generate",
        "--prompts",
        str(prompts),
        "--run-dir",
        str(run),
        "--model",
        str(model),
        "--n",
        "4",
        "--max-new-tokens",
        "6",
        "--shard-size",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_policy) -> tuple[Path, Path]:
    """A generated and scored (length) run dir, copied by each test that changes it."""
    root = tmp_path_factory.mktemp("reliability")
    prompts = write_jsonl(
        root / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"write about item {i}"} for i in range(NUM_PROMPTS)]
    )
    run = root / "run"
    assert main(gen_args(run, prompts, tiny_policy)) == 0
    assert main(["score", "--run-dir", str(run), "--reward-fn", "length"]) == 0
    return run, prompts


@pytest.fixture()
def run_copy(base_run, tmp_path) -> tuple[Path, Path]:
    run, prompts = base_run
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", prompts


# ---- case 12: numbers out of range -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repetition-penalty", "inf"], "generate.repetition_penalty"),
        (["--repetition-penalty", "1e-300"], "generate.repetition_penalty"),
    ],
)
def test_generate_numbers_out_of_range_are_refused(tmp_path, argv, message, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    assert main(gen_args(tmp_path / "run", prompts, tmp_path / "none", *argv)) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "run" / "generate" / "config.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategy", "rso", "--beta", "inf", "--k", "2"], "select.beta"),
        (["--strategy", "rso", "--beta", "1", "--k", "99999999999"], None),
        (["--strategy", "top_k_per_prompt", "--k", "99999999999"], None),
        (["--pairs", "rso", "--beta", "1", "--pair-k", "99999999999"], None),
    ],
)
def test_select_numbers_out_of_range(run_copy, argv, message, capsys):
    run, _ = run_copy
    code = main(["select", "--run-dir", str(run), *argv])
    err = error_line(capsys)
    if message is None:  # a k beyond the columns takes every column, as a smaller one would
        assert code == 0, err
    else:
        assert code == 2 and message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sft", "--sft-batch-size", "99999999999999999999"], "sft.batch_size"),
        (["dpo", "--epochs", "inf"], "dpo.epochs"),
        (["dpo", "--dpo-beta", "inf"], "dpo.beta"),
        (["dpo", "--learning-rate", "inf"], "dpo.learning_rate"),
    ],
)
def test_training_numbers_out_of_range(tmp_path, argv, message, capsys):
    assert (
        main([*argv, "--run-dir", str(tmp_path / "run"), "--sft-model" if argv[0] == "sft" else "--dpo-model", "x"])
        == 2
    )
    assert message in error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--seed", "-1"], "--seed"), (["--bootstrap-iters", "99999999999999"], "--bootstrap-iters")],
)
def test_report_numbers_out_of_range(run_copy, argv, message, capsys):
    run, _ = run_copy
    assert main(["report", str(run), *argv]) == 2
    assert message in error_line(capsys)
    assert not (run / "report").exists()


def test_pair_k_not_an_integer_is_a_usage_error(run_copy, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["select", "--run-dir", str(run_copy[0]), "--pairs", "rso", "--beta", "1", "--pair-k", "1e13"])
    assert exit_info.value.code == 2
    assert "argument --pair-k: invalid int value: '1e13'" in error_line(capsys)


# ---- case 11: prompt files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a\\ud800", "prompt": "hi"}', ":1: field 'id': lone surrogate"),
        ('{"prompt": "hi \\udfff there"}', ":1: field 'prompt': lone surrogate"),
        ('{"messages": [{"role": "user", "content": "\\ud800"}]}', ":1: field 'messages[0].content'"),
        ('{"id": ' + "7" * 5000 + ', "prompt": "hi"}', ":1: number too long"),
        ("[" * 100_000 + "]" * 100_000, ":1: nested too deeply"),
    ],
)
def test_bad_prompt_rows_are_one_line_and_claim_nothing(tmp_path, tiny_policy, line, message, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(line + "\n")
    run = tmp_path / "run"
    assert main(gen_args(run, prompts, tiny_policy)) == 2
    assert message in error_line(capsys)
    assert not (run / "generate" / "config.json").exists()
    # the corrected file then runs: nothing was claimed under the bad one
    write_jsonl(prompts, [{"id": "a", "prompt": "hi"}])
    assert main(gen_args(run, prompts, tiny_policy, "--n", "1")) == 0


def test_prompts_naming_a_fifo_is_refused(tmp_path, capsys):
    fifo = tmp_path / "p.jsonl"
    os.mkfifo(fifo)
    assert main(gen_args(tmp_path / "run", fifo, tmp_path / "m")) == 2
    assert "not a regular file" in error_line(capsys)


def test_id_column_that_no_row_has_is_refused(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"key": "a", "prompt": "hi"}, {"key": "b", "prompt": "ho"}])
    assert main([*gen_args(tmp_path / "run", prompts, tmp_path / "m"), "--id-column", "uid"]) == 2
    assert "--id-column 'uid': no row has this column" in error_line(capsys)
