"""SFT and DPO show a progress bar, not the trainer's per-step log dicts ({'loss': ...})."""

from __future__ import annotations

from conftest import write_jsonl

from winnow.cli import main


def test_sft_and_dpo_print_no_per_step_log_dicts(tmp_path, tiny_policy, capfd):
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(4)])
    run = str(tmp_path / "run")
    gen = ["generate", "--prompts", str(tmp_path / "prompts.jsonl"), "--run-dir", run, "--model", str(tiny_policy)]
    assert main([*gen, "--n", "4", "--max-new-tokens", "6", "--device", "cpu"]) == 0
    assert main(["score", "--run-dir", run, "--reward-fn", "length"]) == 0
    assert main(["select", "--run-dir", run, "--pairs", "best-worst"]) == 0
    capfd.readouterr()
    assert main(["sft", "--run-dir", run, "--epochs", "2", "--sft-batch-size", "1", "--device", "cpu"]) == 0
    assert main(["dpo", "--run-dir", run, "--epochs", "2", "--dpo-batch-size", "1", "--device", "cpu"]) == 0
    out = capfd.readouterr()
    text = out.out + out.err
    assert "'loss'" not in text and "'grad_norm'" not in text and "'train_runtime'" not in text
    assert "'learning_rate'" not in text
