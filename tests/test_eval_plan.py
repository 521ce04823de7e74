"""``winnow run --eval-prompts``'s held-out file before any work: ``--dry-run`` lists the
evaluation as it lists the stages (models, folders, the most it samples and costs), a bad
file is one line at dry-run time, the file is read with the prompts' column options, and a
relative ``eval.prompts`` in a YAML config is read from the config file's folder, as
``prompts`` is."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import fails, flags, write_jsonl

from winnow.cli import main
from winnow.settings import load_yaml

HELD_OUT = [{"qid": f"h{i}", "question": f"say {i}"} for i in range(2)]
PROMPTS = [{"qid": f"p{i}", "question": f"prompt {i}"} for i in range(3)]
COLUMNS = ["--prompt-column", "question", "--id-column", "qid"]


@pytest.fixture()
def files(tmp_path) -> Path:
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    write_jsonl(tmp_path / "heldout.jsonl", HELD_OUT)
    return tmp_path


def dry_run(files: Path, model: Path, *extra: str) -> list[str]:
    return [
        "run",
        *flags(prompts=files / "prompts.jsonl", run_dir=files / "run", model=model, reward_fn="length"),
        *flags(n=4, max_new_tokens=8, device="cpu", eval_prompts=files / "heldout.jsonl"),
        *COLUMNS,
        "--dry-run",
        *extra,
    ]


def eval_lines(out: str) -> list[str]:
    lines = out.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("held-out eval:")) :]


def test_the_dry_run_lists_the_evaluation_of_the_start_and_each_checkpoint(files, tiny_policy, capsys):
    assert main(dry_run(files, tiny_policy, "--rounds", "2")) == 0
    run = files / "run"
    assert eval_lines(capsys.readouterr().out) == [
        f"held-out eval: 2 prompts from {files / 'heldout.jsonl'}, 4 samples per prompt and model, "
        "at most 8 tokens each",
        f"  models: start ({tiny_policy}), round 1 ({run}/round-1/sft/checkpoint), "
        f"round 2 ({run}/round-2/sft/checkpoint)",
        *(
            f"  run     {run}/eval/{name}/{stage}"
            for name in ("start", "round-1", "round-2")
            for stage in ("generate", "score")
        ),
        "  tokens to sample for it: at most 192 (24 completions x max_new_tokens 8)",
        "outputs: "
        + ", ".join(f"{run}/round-{r}/{s}" for r in (1, 2) for s in ("generate", "score", "select", "sft"))
        + f", {run}/eval",
    ]
    assert not run.exists()


def test_the_dry_run_prices_what_the_evaluation_may_sample(files, tiny_policy, capsys):
    server = ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--sft-model", str(tiny_policy)]
    assert main(dry_run(files, Path("served-name"), *server, "--price-per-mtok", "1,2")) == 0
    lines = eval_lines(capsys.readouterr().out)
    assert lines[1] == f"  models: start ({tiny_policy}), round 1 ({files / 'run'}/sft/checkpoint)"
    # 2 models x 2 prompts x 4 samples x 8 tokens at 2 per million
    assert lines[-3:-1] == [
        "  tokens to sample for it: at most 128 (16 completions x max_new_tokens 8)",
        "  their price: at most 0.000256 for those tokens, plus the prompts' tokens",
    ]


def test_a_bad_held_out_file_is_one_line_at_dry_run_time(files, tiny_policy, capsys):
    write_jsonl(files / "heldout.jsonl", [HELD_OUT[0], {"qid": "h1", "prompt": "the default column"}])
    err = fails(dry_run(files, tiny_policy), capsys, one_error=True)
    line = f"{files / 'heldout.jsonl'}:2: field 'question': missing prompt (need 'question' or 'messages')"
    assert err.strip() == f"winnow: error: {line}"
    assert not (files / "run").exists()


def test_a_relative_eval_prompts_in_yaml_is_read_from_the_config_files_folder(files, tiny_policy, monkeypatch, capsys):
    config = files / "configs" / "run.yaml"
    config.parent.mkdir()
    write_jsonl(config.parent / "heldout.jsonl", HELD_OUT[:1])  # beside the config: one prompt
    config.write_text("prompts: ../prompts.jsonl\neval:\n  prompts: heldout.jsonl\n")
    assert load_yaml(config)["eval"]["prompts"] == str(config.parent / "heldout.jsonl")

    monkeypatch.chdir(files)  # where another heldout.jsonl (two prompts) is
    argv = ["run", "--config", str(config), *flags(run_dir="run", model=tiny_policy, reward_fn="length")]
    assert main([*argv, *COLUMNS, "--device", "cpu", "--dry-run"]) == 0
    first = eval_lines(capsys.readouterr().out)[0]
    assert first.startswith(f"held-out eval: 1 prompt from {config.parent / 'heldout.jsonl'},")


def eval_argv(files: Path, model: Path, baseline: Path, *extra: str) -> list[str]:
    held_out = files / "heldout.jsonl"
    return [
        "eval",
        *flags(model=model, baseline=baseline, prompts=held_out, run_dir=files / "out", reward_fn="length"),
        *flags(n=4, max_new_tokens=8, device="cpu"),
        *COLUMNS,
        *extra,
    ]


def test_eval_dry_run_lists_both_models_and_writes_nothing(files, tiny_policy, tiny_policy_b, capsys):
    assert main(eval_argv(files, tiny_policy, tiny_policy_b, "--dry-run")) == 0
    out = files / "out"
    assert capsys.readouterr().out.splitlines() == [
        f"winnow eval --dry-run: the plan for {out} (checked; nothing was written)",
        f"held-out eval: 2 prompts from {files / 'heldout.jsonl'}, 4 samples per prompt and model, "
        "at most 8 tokens each",
        f"  models: baseline ({tiny_policy_b}), model ({tiny_policy})",
        *(f"  run     {out}/{name}/{stage}" for name in ("baseline", "model") for stage in ("generate", "score")),
        "  tokens to sample for it: at most 128 (16 completions x max_new_tokens 8)",
        f"outputs: {out}/eval.json, {out}/eval.md",
    ]
    assert not out.exists()


def test_eval_dry_run_after_the_run_says_nothing_is_left(files, tiny_policy, tiny_policy_b, capsys):
    assert main(eval_argv(files, tiny_policy, tiny_policy_b)) == 0
    capsys.readouterr()
    assert main(eval_argv(files, tiny_policy, tiny_policy_b, "--dry-run")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[3:7]] == ["skip"] * 4
    assert lines[7] == "  tokens to sample for it: at most 0 (0 completions x max_new_tokens 8)"


def test_eval_dry_run_refuses_a_missing_model_in_one_line(files, tiny_policy, capsys):
    err = fails(eval_argv(files, tiny_policy, files / "no-such-model", "--dry-run"), capsys, one_error=True)
    assert "no-such-model" in err
    assert not (files / "out").exists()
