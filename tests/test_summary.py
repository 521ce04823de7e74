"""What the commands print: a short summary (the manifests with --json), warnings on stderr
when most rows are unscored, and the score stage's refusal of weights too large."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import write_jsonl

from winnow.cli import main
from winnow.summary import stage_lines

REWARDS = """
def none(prompts, completions, **kw):
    return [None] * len(completions)

"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_policy):
    """A finished generate stage: 3 prompts x 2 completions of 4 tokens."""
    root = tmp_path_factory.mktemp("summary")
    write_jsonl(root / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(3)])
    (root / "rewards.py").write_text(REWARDS)
    argv = ["generate", "--prompts", str(root / "prompts.jsonl"), "--run-dir", str(root / "run")]
    assert main([*argv, "--model", str(tiny_policy), "--n", "2", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    return root


@pytest.fixture
def run(generated, tmp_path):
    shutil.copytree(generated / "run", tmp_path / "run")
    shutil.copy(generated / "rewards.py", tmp_path / "rewards.py")
    return tmp_path / "run"


def test_stages_print_a_summary_and_the_manifests_only_with_json(run, capsys):
    capsys.readouterr()
    assert main(["score", "--run-dir", str(run), "--reward-fn", "length"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("score: 6 of 6 completions scored (0 unscored), mean reward ") and out[0].endswith(
        f" -> {run}/score/rewards.npy"
    )
    assert out[1:] == ["(the manifests: --json, or each stage's manifest.json)"]
    assert main(["select", "--run-dir", str(run), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)["select"]
    assert manifest["num_selected"] == 3 and "sha256" in json.dumps(manifest["files"])
    assert main(["select", "--run-dir", str(run)]) == 0
    best = manifest["mean_selected_reward"]
    assert capsys.readouterr().out.splitlines()[0] == (
        f"select: 3 completions selected, mean reward {best:.3f} -> {run}/select/selected.jsonl"
    )


def test_generate_and_import_summaries(generated, run, tiny_policy, tmp_path, capsys):
    argv = ["generate", "--prompts", str(generated / "prompts.jsonl"), "--run-dir", str(run), "--device", "cpu"]
    assert main([*argv, "--n", "2", "--max-new-tokens", "4", "--model", str(tiny_policy)]) == 0  # done: resumed
    assert (
        capsys.readouterr().out.splitlines()[0] == f"generate: 6 completions, 3 prompts x 2 samples -> {run}/generate"
    )
    write_jsonl(tmp_path / "c.jsonl", [{"prompt_id": "p0", "text": "hi"}, {"prompt_id": "p1", "text": "yo"}])
    argv = ["import", "--prompts", str(generated / "prompts.jsonl"), "--run-dir", str(tmp_path / "imp")]
    assert main([*argv, "--completions", str(tmp_path / "c.jsonl")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"import: 2 completions, 3 prompts x up to 1 samples from {tmp_path / 'c.jsonl'} -> {tmp_path / 'imp'}/generate"
    )


def test_summary_lines_of_each_stage_and_of_rounds():
    generate = {"num_completions": 20, "num_prompts": 5, "num_columns": 4, "skipped_prompts": 1}
    sft = {"num_rows": 5, "train_loss": 5.7371, "checkpoint": "r/sft/checkpoint"}
    assert stage_lines({"round-1": {"generate": generate, "sft": sft}}, "r") == [
        "round-1:",
        "  generate: 20 completions, 5 prompts x 4 samples, 1 prompts skipped -> r/round-1/generate",
        "  sft: trained on 5 rows, final loss 5.737 -> r/sft/checkpoint",
    ]
    dpo = {"num_pairs": 3, "train_loss": 0.69, "checkpoint": "r/dpo/checkpoint"}
    assert stage_lines({"dpo": dpo}, "r") == ["dpo: trained on 3 pairs, final loss 0.690 -> r/dpo/checkpoint"]
    held = {**dpo, "eval_rows": 1, "eval_loss": 0.7}
    assert stage_lines({"dpo": held}, "r") == [
        "dpo: trained on 2 of 3 pairs (1 held out, eval loss 0.700), final loss 0.690 -> r/dpo/checkpoint"
    ]
    adaptive = {**generate, "skipped_prompts": 0, "adaptive": {"steps": 3, "saved_share": 0.375}}
    assert stage_lines({"generate": adaptive}, "r") == [
        "generate: 20 completions, 5 prompts x up to 4 samples in 3 adaptive steps (38% fewer than fixed N) "
        "-> r/generate"
    ]


def test_most_rows_unscored_is_a_warning_and_report_reads_a_run_with_nothing_scored(run, capsys):
    capsys.readouterr()
    assert main(["score", "--run-dir", str(run), "--reward-fn", f"{run.parent}/rewards.py:none"]) == 0
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "winnow: warning: 6 of 6 completions (100%) are unscored: the reward returned None, "
        f"or a judge's reply held no score (each row of {run}/score/shard-*.jsonl keeps it as judge_reply)"
    )
    assert main(["report", str(run), "--pass-threshold", "0.5", "--bootstrap-iters", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [
        "No prompt has all 2 samples scored, so there is no best-of-n curve.",
        "all: 6 completions, mean reward -, mean length 4.000 tokens",
        "selected: 0 completions, mean reward -, mean length - tokens",
        "pass (reward >= 0.5): no prompt fully scored; solved by none/some/all: -/-/-",
    ]


def test_weights_too_large_are_refused_before_anything_is_written(run, capsys):
    argv = ["score", "--run-dir", str(run), "--reward-fn", "length", "--reward-fn", "length"]
    capsys.readouterr()
    assert main([*argv, "--reward-weights", "1e308,1e308"]) == 2
    assert capsys.readouterr().err.strip() == (
        "winnow: error: score.reward_weights: weights must be finite numbers between -1e+06 and 1e+06, "
        "got [1e+308, 1e+308]"
    )
    assert not (run / "score" / "config.json").exists()
    assert main([*argv, "--reward-weights", "-1,-0.5"]) == 0  # a negative number after the flag is its value
    assert json.loads((run / "score" / "manifest.json").read_text())["config"]["score"]["reward_weights"] == [-1, -0.5]


def test_the_generate_bar_counts_completions_batch_by_batch(generated, tiny_policy, tmp_path, capsys):
    from winnow.config import GenerateConfig
    from winnow.executors import ShardTask
    from winnow.records import Prompt
    from winnow.stages.generate import GenerateWorkerFactory

    prompts = [Prompt(id=f"p{i}", text=f"prompt {i}") for i in range(5)]
    config = GenerateConfig(models=[str(tiny_policy)], n=4, max_new_tokens=2, batch_size=2, device="cpu")
    worker = GenerateWorkerFactory(config, 0, prompts)()
    told: list[int] = []
    worker.progress = told.append
    assert len(worker.run(ShardTask("m0-00000", (prompts, 0)))) == 20
    assert told == [8, 8, 4]  # batches of 2, 2 and 1 prompts, 4 completions each
    argv = ["generate", "--prompts", str(generated / "prompts.jsonl"), "--run-dir", str(tmp_path / "g")]
    assert main([*argv, "--model", str(tiny_policy), "--n", "2", "--max-new-tokens", "2", "--device", "cpu"]) == 0
    bars = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert [b for b in bars if "completion/s" in b][-1].startswith(f"generate {tiny_policy}: 100%")
    assert [b for b in bars if "completion/s" in b][-1].split("|")[2].startswith(" 6/6 ")
    assert not [b for b in bars if "shard" in b and b.startswith("generate")]
