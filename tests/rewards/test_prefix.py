"""Shared-prefix reward scoring against the full-row path, on tiny random reward models of
every architecture the shared-prefix path lists, built in-process."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from helpers import write_jsonl
from tiny_models import (
    REWARD_ARCHITECTURES,
    WORDS,
    build_reward_model,
    make_tokenizer,
    reward_scores,
    tiny_config,
    workload,
)

from winnow.errors import WinnowError
from winnow.rewards import packed as pk
from winnow.rewards import prefix as pf
from winnow.rewards.classifier import ClassifierReward

# Tiny models on a shared 2-core machine: a second intra-op thread mostly waits (20x slower under load).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_listed_architecture_is_tested_here():
    assert set(REWARD_ARCHITECTURES) == set(pf.ARCHITECTURES)


@pytest.mark.parametrize("arch", list(REWARD_ARCHITECTURES))
def test_shared_prefix_scores_equal_full_rows(arch, tmp_path):
    folder = build_reward_model(tmp_path, arch)
    prompts, completions = workload()
    full, _ = reward_scores(folder, prompts, completions, prefix_sharing="off")
    assert np.unique(full.round(5)).size > 20  # the rows really score differently
    windowed = REWARD_ARCHITECTURES[arch][2].get("sliding_window")
    for batch_tokens, max_batch_size in [(10**6, 1), (256, 5), (16384, 64)]:
        shared, rm = reward_scores(
            folder, prompts, completions, prefix_sharing="on", batch_tokens=batch_tokens, max_batch_size=max_batch_size
        )
        np.testing.assert_allclose(shared, full, rtol=0, atol=1e-4)
        paths = rm.last_paths
        assert paths.count("full_single_completion") == 1  # the N = 1 prompt
        assert paths.count("shared_prefix") > (8 if windowed else 30)
        if windowed:  # rows longer than the window are scored in full, the rest share
            lengths = [len(r) for r in rm.tokenize(prompts, completions)]
            beyond = [p for n, p in zip(lengths, paths, strict=True) if n > windowed]
            assert beyond and set(beyond) <= {"full_sliding_window", "full_single_completion"}
        else:
            assert set(paths) == {"shared_prefix", "full_single_completion"}
        assert rm.tokens_saved == sum(rm.last_tokens_saved) > 0


def test_shuffled_order_gives_the_same_scores(tmp_path):
    folder = build_reward_model(tmp_path)
    prompts, completions = workload(seed=1)
    scores, _ = reward_scores(folder, prompts, completions, max_batch_size=7)
    order = list(range(len(prompts)))
    random.Random(2).shuffle(order)
    shuffled, _ = reward_scores(folder, [prompts[i] for i in order], [completions[i] for i in order], max_batch_size=7)
    np.testing.assert_allclose(shuffled, scores[order], rtol=0, atol=1e-5)


def merging_tokenizer():
    """A BPE without pre-tokenization, trained so that "assistant\\nthe quick brown" is one
    token: a completion starting "the quick brown" merges across the prompt's boundary."""
    return make_tokenizer(extra_corpus=("assistant\nthe quick brown",) * 30, vocab_size=400, regex=False)


@pytest.mark.parametrize(("sharing", "path"), [("on", "shared_prefix"), ("auto", "packed")])
def test_a_boundary_that_merges_tokens_is_scored_in_full(tmp_path, sharing, path):
    folder = build_reward_model(tmp_path, tokenizer=merging_tokenizer())
    prompts = ["hello there"] * 4 + ["describe a rainy monday"] * 3
    completions = ["the quick brown fox", "the quick brown dog", "a lazy dog", "good food"]
    completions += ["the quick brown commute", "rainy and late", "a happy day"]
    full, _ = reward_scores(folder, prompts, completions, prefix_sharing="off")
    shared, rm = reward_scores(folder, prompts, completions, prefix_sharing=sharing)
    np.testing.assert_allclose(shared, full, rtol=0, atol=1e-4)
    merged = [c.startswith("the quick brown") for c in completions]
    assert rm.last_paths == ["full_prefix_mismatch" if m else path for m in merged]


def eos_tokenizer_without_pad():
    """The test tokenizer with no pad token and a template whose rows end in EOS."""
    tok = make_tokenizer()
    tok.pad_token = None
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
    )
    return tok


def read_at(model, ids: list[int], position: int) -> float:
    """The score head applied by hand to one unpadded row's hidden state at ``position``."""
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, position]
        return model.score(hidden).item()


@pytest.mark.parametrize("sharing", ["off", "auto"])
def test_score_is_read_at_the_last_token_eos_included(tmp_path, sharing):
    """A tokenizer without a pad token gets EOS as its pad, and transformers' pooling then
    skips a row's closing EOS; winnow reads the EOS itself, whatever else is in the batch."""
    tok = eos_tokenizer_without_pad()
    folder = build_reward_model(tmp_path, tokenizer=tok)
    prompts, completions = workload(seed=3, sizes=(1, 4, 9))
    outs = [reward_scores(folder, prompts, completions, prefix_sharing=sharing, max_batch_size=b) for b in (1, 3, 64)]
    rm = outs[0][1]
    assert rm.tokenizer.pad_token_id == rm.tokenizer.eos_token_id  # EOS stands in as the pad
    rows = rm.tokenize(prompts, completions)
    assert all(r[-1] == tok.eos_token_id for r in rows)
    at_eos = np.array([read_at(rm.model, r, -1) for r in rows])
    before_eos = np.array([read_at(rm.model, r, -2) for r in rows])
    assert np.abs(at_eos - before_eos).min() > 1e-3  # so reading the wrong token would fail
    for scores, _ in outs:
        np.testing.assert_allclose(scores, at_eos, rtol=0, atol=1e-4)


def test_unknown_architecture_gets_its_own_pad_token_and_the_full_path(tmp_path, capsys):
    """GPT-2's head pools by the pad token itself: winnow gives it a distinct one."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = eos_tokenizer_without_pad()
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256, num_labels=1)
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    prompts, completions = workload(seed=4, sizes=(3, 5))
    scores, rm = reward_scores(tmp_path, prompts, completions, max_batch_size=4)
    assert "scoring every row in full: architecture 'gpt2'" in capsys.readouterr().err
    assert set(rm.last_paths) == {"full"}
    assert rm.tokenizer.pad_token == "<|winnow_pad|>" != rm.tokenizer.eos_token
    alone = GPT2ForSequenceClassification.from_pretrained(tmp_path).eval()  # no pad token: batch 1 reads the last
    with torch.no_grad():
        expected = [alone(input_ids=torch.tensor([r])).logits[0, 0].item() for r in rm.tokenize(prompts, completions)]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    with pytest.raises(WinnowError, match="prefix-sharing on, but architecture 'gpt2'"):
        ClassifierReward(str(tmp_path), device="cpu", prefix_sharing="on")


def test_encoder_reward_model_takes_the_full_path(tmp_path, capsys):
    from transformers import BertForSequenceClassification

    tok = make_tokenizer()
    config = tiny_config(tok, "BertConfig", num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    prompts, completions = workload(seed=5, sizes=(2, 6))
    scores, rm = reward_scores(tmp_path, prompts, completions, max_batch_size=3)
    assert "architecture 'bert' (BertForSequenceClassification) is not one" in capsys.readouterr().err
    assert set(rm.last_paths) == {"full"}
    with torch.no_grad():
        expected = [
            rm.model(input_ids=torch.tensor([r])).logits[0, 0].item() for r in rm.tokenize(prompts, completions)
        ]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sharing", ["off", "auto"])
def test_a_pair_longer_than_the_context_is_unscored_and_counted(tmp_path, sharing):
    folder = build_reward_model(tmp_path, max_position_embeddings=90)
    prompts, completions = workload(seed=6, sizes=(4, 6))
    scores, rm = reward_scores(folder, prompts, completions, prefix_sharing=sharing)
    lengths = np.array([len(r) for r in rm.tokenize(prompts, completions)])
    too_long = lengths > 90
    assert 0 < too_long.sum() < len(lengths)
    assert np.isnan(scores[too_long]).all() and not np.isnan(scores[~too_long]).any()
    assert [p == "too_long" for p in rm.last_paths] == too_long.tolist()
    assert rm.summary()["rows"]["too_long"] == too_long.sum()
    rows = rm.tokenize(prompts, completions)
    expected = [read_at(rm.model, rows[i], -1) for i in np.flatnonzero(~too_long)]
    np.testing.assert_allclose(scores[~too_long], expected, rtol=0, atol=1e-4)


def test_out_of_memory_in_the_shared_prefix_path_splits_and_retries(tmp_path, monkeypatch):
    folder = build_reward_model(tmp_path)
    prompts, completions = workload(seed=7, sizes=(3, 8, 16))
    expected, rm = reward_scores(folder, prompts, completions, prefix_sharing="on")
    real_prefill, real_tails = pf.prefill, rm._score_tails

    def prefill(base, prompts, **kw):  # a fake CUDA OOM for any prefill of more than one prompt
        if len(prompts) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real_prefill(base, prompts, **kw)

    def tails(prefix, items):  # and for any continuation batch of more than 3 rows
        if len(items) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real_tails(prefix, items)

    monkeypatch.setattr(pf, "prefill", prefill)
    monkeypatch.setattr(rm, "_score_tails", tails)
    np.testing.assert_allclose(rm(prompts, completions), expected, rtol=0, atol=1e-5)
    assert rm.stats["oom_retries"] >= 2 and set(rm.last_paths) == {"shared_prefix"}


def test_chat_message_prompts_share_a_prefix(tmp_path):
    folder = build_reward_model(tmp_path)
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "describe a rainy monday"}]
    prompts = [chat] * 5 + ["describe a rainy monday"] * 3
    completions = [" ".join(WORDS[i : i + 3 + i]) for i in range(8)]
    full, _ = reward_scores(folder, prompts, completions, prefix_sharing="off")
    shared, rm = reward_scores(folder, prompts, completions, prefix_sharing="on")
    np.testing.assert_allclose(shared, full, rtol=0, atol=1e-4)
    assert set(rm.last_paths) == {"shared_prefix"}
    assert sorted(rm.last_tokens_saved).count(0) == 2  # one prefill per distinct prompt


def test_score_stage_records_the_setting_and_counts_rows_per_path(tmp_path, tiny_policy):
    from winnow.cli import main

    folder = build_reward_model(tmp_path / "rm")
    write_jsonl(
        tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"describe {w} day"} for i, w in enumerate(WORDS[:5])]
    )
    gen = ["--prompts", str(tmp_path / "prompts.jsonl"), "--model", str(tiny_policy), "--n", "4"]
    gen += ["--max-new-tokens", "6", "--device", "cpu"]
    runs = {}
    for sharing in ("auto", "off"):
        run = tmp_path / f"run-{sharing}"
        assert main(["generate", "--run-dir", str(run), *gen]) == 0
        argv = ["score", "--run-dir", str(run), "--reward-model", str(folder), "--reward-prefix-sharing", sharing]
        assert main([*argv, "--device", "cpu"]) == 0
        runs[sharing] = run
    manifest = json.loads((runs["auto"] / "score/manifest.json").read_text())
    assert json.loads((runs["auto"] / "score/config.json").read_text())["score"]["reward_prefix_sharing"] == "auto"
    assert manifest["rows_by_scoring_path"] == {"packed": 20}  # auto: the fastest exact path
    assert manifest["prompt_tokens_saved"] > 0
    assert json.loads((runs["off"] / "score/manifest.json").read_text())["rows_by_scoring_path"] == {"full": 20}
    np.testing.assert_allclose(
        np.load(runs["auto"] / "score/rewards.npy"), np.load(runs["off"] / "score/rewards.npy"), rtol=0, atol=1e-4
    )


def test_bad_prefix_sharing_value(tmp_path, capsys):
    from winnow.cli import main

    assert main(["score", "--run-dir", str(tmp_path), "--reward-prefix-sharing", "maybe"]) == 2
    assert "score.reward_prefix_sharing: must be one of auto, on, off, packed, got 'maybe'" in capsys.readouterr().err


def test_a_shared_prefix_that_would_change_scores_is_caught_at_load(tmp_path, monkeypatch, capsys):
    """A cache that forgets the prompt (as a changed transformers might) fails the probe."""
    folder = build_reward_model(tmp_path)

    def forgetful(self, keys, values, *args, **kw):
        past_k = self.prefix_keys.index_select(0, self.rows)
        past_v = self.prefix_values.index_select(0, self.rows)
        return torch.cat([past_k * 0, keys], dim=-2), torch.cat([past_v * 0, values], dim=-2)

    monkeypatch.setattr(pf.SharedPrefixLayer, "update", forgetful)
    prompts, completions = workload(seed=8, sizes=(4,))
    scores, rm = reward_scores(folder, prompts, completions)
    assert "does not reproduce full-row scores" in capsys.readouterr().err
    assert set(rm.last_paths) == {"full"}
    full, _ = reward_scores(folder, prompts, completions, prefix_sharing="off")
    np.testing.assert_allclose(scores, full, rtol=0, atol=1e-6)
    with pytest.raises(WinnowError, match="prefix-sharing on, but the shared-prefix path does not reproduce"):
        ClassifierReward(str(folder), device="cpu", prefix_sharing="on")


def test_a_failing_shared_prefix_path_falls_back_to_full_rows(tmp_path, monkeypatch, capsys):
    folder = build_reward_model(tmp_path)
    prompts, completions = workload(seed=9, sizes=(3, 5))
    full, _ = reward_scores(folder, prompts, completions, prefix_sharing="off")
    auto = ClassifierReward(str(folder), device="cpu")
    on = ClassifierReward(str(folder), device="cpu", prefix_sharing="on")

    def broken(*args, **kw):
        raise TypeError("forward() got an unexpected keyword argument 'cache'")

    monkeypatch.setattr(pf, "score_tails", broken)
    monkeypatch.setattr(pk, "score_packed", broken)  # auto would pack these rows
    np.testing.assert_allclose(np.array(auto(prompts, completions), dtype=float), full, rtol=0, atol=1e-6)
    assert set(auto.last_paths) == {"full"} and "failed (TypeError" in capsys.readouterr().err
    with pytest.raises(TypeError, match="unexpected keyword"):
        on(prompts, completions)
