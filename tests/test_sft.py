"""Fine-tuning on selected rows with TRL: completion-only loss, full and LoRA, reloadable."""

from __future__ import annotations

import json

import pytest
from tiny_models import SFT_ROWS, completion_logprob

from winnow import stages
from winnow.config import GenerateConfig, ScoreConfig, SelectConfig, TrainConfig
from winnow.generate import Sampling, make_backend
from winnow.records import Prompt
from winnow.sft import make_trainer, sft


def test_loss_is_on_completion_tokens_only(tmp_path, tiny_policy):
    trainer, tok = make_trainer(SFT_ROWS[:1], TrainConfig(model=str(tiny_policy), device="cpu"), tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"][0]
    prompt = tok.apply_chat_template(SFT_ROWS[0]["prompt"], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(SFT_ROWS[0]["prompt"] + SFT_ROWS[0]["completion"], tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tok(full, add_special_tokens=False)["input_ids"][len(prompt_ids) :]
    assert labels[labels != -100].tolist() == completion_ids
    assert batch["input_ids"][0].tolist()[: len(prompt_ids)] == prompt_ids


@pytest.mark.parametrize("lora", [False, True])
def test_sft_raises_likelihood_of_selected_completions(tmp_path, tiny_policy, lora):
    run = tmp_path / "run"
    prompts = [Prompt(id=str(i), text=r["prompt"][0]["content"]) for i, r in enumerate(SFT_ROWS)]
    stages.generate(run, prompts, GenerateConfig(models=[str(tiny_policy)], n=2, max_new_tokens=4, device="cpu"))
    stages.score(run, ScoreConfig(reward_fn="length"))
    stages.select(run, SelectConfig(strategy="top_per_prompt"))
    selected = [json.loads(line) for line in (run / "select/selected.jsonl").read_text().splitlines()]
    config = TrainConfig(model=str(tiny_policy), lora=lora, learning_rate=5e-3, epochs=8, batch_size=2, device="cpu")
    manifest = sft(run, config)
    checkpoint = manifest["checkpoint"]
    assert manifest["num_rows"] == 2
    before = sum(completion_logprob(tiny_policy, r) for r in selected)
    after = sum(completion_logprob(checkpoint, r) for r in selected)
    assert after > before + 1.0
    # the checkpoint is an ordinary model folder that generate loads (LoRA merged)
    backend = make_backend("hf", checkpoint, device="cpu")
    out = backend.generate(prompts, Sampling(n=1, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=3), seed=0)
    assert len(out) == 2
    assert not list((run / "sft").glob(".tmp-*"))
