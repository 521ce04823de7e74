"""The sequence-classification reward path on a tiny in-process Llama reward model."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from winnow.errors import WinnowError
from winnow.rewards.classifier import ClassifierReward, plan_batches

PROMPTS = ["describe a rainy monday commute", "write two sentences about a kitchen table", "hello"] * 7
COMPLETIONS = [("the quick brown fox " * (i % 9 + 1)).strip() for i in range(21)]


def test_batch_composition_does_not_change_scores(tiny_reward_model):
    kw = dict(device="cpu", prefix_sharing="off")
    one = ClassifierReward(str(tiny_reward_model), batch_tokens=10**6, max_batch_size=1, **kw)
    many = ClassifierReward(str(tiny_reward_model), batch_tokens=10**6, max_batch_size=64, **kw)
    tight = ClassifierReward(str(tiny_reward_model), batch_tokens=200, max_batch_size=64, **kw)
    a, b, c = (np.array(rm(PROMPTS, COMPLETIONS)) for rm in (one, many, tight))
    assert many.stats["batches"] == 1 and one.stats["batches"] == 21 and 1 < tight.stats["batches"] < 21
    np.testing.assert_allclose(b, a, atol=1e-5)
    np.testing.assert_allclose(c, a, atol=1e-5)
    assert np.unique(a.round(6)).size > 5  # the rows really score differently


def test_shuffled_inputs_give_the_same_scores(tiny_reward_model):
    rm = ClassifierReward(str(tiny_reward_model), device="cpu", batch_tokens=300)
    scores = rm(PROMPTS, COMPLETIONS)
    order = list(range(len(PROMPTS)))
    random.Random(0).shuffle(order)
    shuffled = rm([PROMPTS[i] for i in order], [COMPLETIONS[i] for i in order])
    np.testing.assert_allclose(shuffled, [scores[i] for i in order], atol=1e-5)


def test_rendering_uses_the_chat_template_once(tiny_reward_model):
    rm = ClassifierReward(str(tiny_reward_model), device="cpu")
    ids = rm.tokenize(["hi there"], ["fine thanks"])[0]
    tok = rm.tokenizer
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    text = tok.decode(ids)
    assert text == "<s><|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\nfine thanks<|im_end|>\n"


def test_score_matches_unpadded_forward(tiny_reward_model):
    """The score of a padded row equals the model's logit on that row alone, unpadded."""
    rm = ClassifierReward(str(tiny_reward_model), device="cpu", batch_tokens=10**6)
    scores = rm(PROMPTS[:4], COMPLETIONS[:4])
    for i, ids in enumerate(rm.tokenize(PROMPTS[:4], COMPLETIONS[:4])):
        with torch.no_grad():
            alone = rm.model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        assert scores[i] == pytest.approx(alone, abs=1e-5)


def test_plan_batches_covers_every_row_once_under_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500).tolist()
    batches = plan_batches(lengths, batch_tokens=1024, max_batch_size=16)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) <= 16 and (len(b) * width <= 1024 or len(b) == 1)
    assert plan_batches([5000, 3], batch_tokens=100, max_batch_size=8)[0].tolist() == [0]


def test_oom_is_retried_with_smaller_batches(tiny_reward_model, monkeypatch):
    rm = ClassifierReward(str(tiny_reward_model), device="cpu", batch_tokens=10**6, prefix_sharing="off")
    expected = rm(PROMPTS, COMPLETIONS)
    real = rm._score

    def flaky(rows):  # a fake CUDA OOM for any batch above 4 rows
        if len(rows) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real(rows)

    monkeypatch.setattr(rm, "_score", flaky)
    np.testing.assert_allclose(rm(PROMPTS, COMPLETIONS), expected, atol=1e-5)
    assert rm.stats["oom_retries"] > 0


def test_multi_label_model_rejected(tmp_path):
    from tiny_models import make_tokenizer, tiny_config
    from transformers import LlamaForSequenceClassification

    tok = make_tokenizer()
    LlamaForSequenceClassification(tiny_config(tok, num_labels=3)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(WinnowError, match="has 3 labels; expected 1"):
        ClassifierReward(str(tmp_path), device="cpu")
