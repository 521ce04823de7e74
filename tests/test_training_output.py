"""SFT and DPO show a progress bar, not the trainer's per-step log dicts ({'loss': ...}).

The commands run in fresh processes, as a user runs them: the CLI quiets transformers'
logging before transformers is imported, which makes the trainer print its logs another way.
"""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import write_jsonl

from winnow.cli import main


def winnow_cmd(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "winnow", *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_sft_and_dpo_print_no_per_step_log_dicts(tmp_path, tiny_policy):
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(4)])
    run = str(tmp_path / "run")
    gen = ["generate", "--prompts", str(tmp_path / "prompts.jsonl"), "--run-dir", run, "--model", str(tiny_policy)]
    assert main([*gen, "--n", "4", "--max-new-tokens", "6", "--device", "cpu"]) == 0
    assert main(["score", "--run-dir", run, "--reward-fn", "length"]) == 0
    assert main(["select", "--run-dir", run, "--pairs", "best-worst"]) == 0
    sft = winnow_cmd("sft", "--run-dir", run, "--epochs", "2", "--sft-batch-size", "1", "--device", "cpu")
    dpo = winnow_cmd("dpo", "--run-dir", run, "--epochs", "2", "--dpo-batch-size", "1", "--device", "cpu")
    for name, text in (("sft", sft), ("dpo", dpo)):
        assert "'loss'" not in text and "'grad_norm'" not in text and "'train_runtime'" not in text
        assert "'learning_rate'" not in text
        # the progress bar, named after the stage: 4 rows (or pairs) x 2 epochs, one a step, and the loss
        bars = [p for p in text.replace("\r", "\n").splitlines() if p.startswith(f"{name}:") and "%|" in p]
        last = bars[-1]
        assert re.fullmatch(rf"{name}: 100%\|.*\| 8/8 \[.*step.*, loss=[-\d.e]+\]", last.strip()), last
