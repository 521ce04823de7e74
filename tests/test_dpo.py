"""DPO on preference pairs with TRL: the chosen side gains likelihood over the rejected, full and LoRA."""

from __future__ import annotations

import json

import pytest
from tiny_models import completion_logprob

from winnow import stages
from winnow.cli import main
from winnow.config import DpoConfig, GenerateConfig, ScoreConfig, SelectConfig
from winnow.dpo import dpo
from winnow.generate import Sampling, make_backend
from winnow.records import Prompt

PROMPTS = [Prompt(id=f"p{i}", text=t) for i, t in enumerate(["describe a rainy monday commute", "a kitchen table"])]
# A reward that prefers the later sample: best-worst pairs chosen = sample 3, rejected = sample 0.
REWARD = "def by_index(prompts, completions, sample_indices, **kw):\n    return [float(j) for j in sample_indices]\n"


def margin(folder, pairs) -> float:
    """Sum over pairs of log p(chosen) - log p(rejected) under the model in ``folder``."""
    total = 0.0
    for p in pairs:
        total += completion_logprob(folder, {"prompt": p["prompt"], "completion": p["chosen"]})
        total -= completion_logprob(folder, {"prompt": p["prompt"], "completion": p["rejected"]})
    return total


@pytest.fixture()
def paired_run(tmp_path, tiny_policy):
    run = tmp_path / "run"
    (tmp_path / "rewards.py").write_text(REWARD)
    stages.generate(run, PROMPTS, GenerateConfig(models=[str(tiny_policy)], n=4, max_new_tokens=6, device="cpu"))
    stages.score(run, ScoreConfig(reward_fn=f"{tmp_path}/rewards.py:by_index"))
    stages.select(run, SelectConfig(pairs="best-worst"))
    return run


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_raises_the_chosen_over_the_rejected(paired_run, tiny_policy, lora):
    pairs = [json.loads(line) for line in (paired_run / "select/pairs.jsonl").read_text().splitlines()]
    assert [(p["chosen_index"], p["rejected_index"]) for p in pairs] == [(3, 0), (3, 0)]
    lr = 5e-3 if lora else 1e-3
    config = DpoConfig(
        model=str(tiny_policy), lora=lora, beta=0.1, learning_rate=lr, epochs=8, batch_size=2, device="cpu"
    )
    manifest = dpo(paired_run, config)
    assert manifest["num_pairs"] == 2
    before, after = margin(tiny_policy, pairs), margin(manifest["checkpoint"], pairs)
    assert after > before + 1.0, (before, after)
    # an ordinary model folder that generate loads (LoRA merged)
    backend = make_backend("hf", manifest["checkpoint"], device="cpu")
    out = backend.generate(PROMPTS, Sampling(n=1, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=3), seed=0)
    assert len(out) == 2
    assert not list((paired_run / "dpo").glob(".tmp-*"))
    # a rerun finds the stage complete
    assert dpo(paired_run, config)["checkpoint"] == manifest["checkpoint"]


def test_dpo_command_and_its_errors(tmp_path, tiny_policy, paired_run, capsys):
    args = ["dpo", "--run-dir", str(paired_run), "--device", "cpu", "--epochs", "1", "--dpo-batch-size", "2"]
    assert main([*args, "--dpo-beta", "0"]) == 2
    assert "dpo.beta: must be finite and > 0" in capsys.readouterr().err
    assert main(args) == 0  # the starting checkpoint defaults to the model that generated
    manifest = json.loads((paired_run / "dpo/manifest.json").read_text())
    assert manifest["config"]["dpo"]["model"] == str(tiny_policy)
    # select without --pairs leaves nothing for DPO
    bare = tmp_path / "bare"
    stages.generate(bare, PROMPTS, GenerateConfig(models=[str(tiny_policy)], n=2, max_new_tokens=2, device="cpu"))
    stages.score(bare, ScoreConfig(reward_fn="length"))
    stages.select(bare, SelectConfig())
    assert main(["dpo", "--run-dir", str(bare), "--device", "cpu"]) == 2
    assert "select --pairs" in capsys.readouterr().err
