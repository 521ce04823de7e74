"""The sampling contract in the transformers backend: min_p, repetition_penalty and stop
strings (against hand-computed values or ``model.generate()``), the ``generate()`` fallback
on a real model folder, encoder-decoder refusal, and ``--dtype``."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import PROMPTS, SFT_ROWS, make_tokenizer

from winnow.errors import WinnowError
from winnow.generate import Sampling, decode, make_backend
from winnow.models import resolve_dtype

pytestmark = pytest.mark.usefixtures("one_thread")
GREEDY = Sampling(n=1, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=16)


def with_(sampling: Sampling, **changes) -> Sampling:
    return Sampling(**{**sampling.__dict__, **changes})


# --- min_p ---------------------------------------------------------------------------------


def test_min_p_keeps_tokens_within_a_share_of_the_top_one():
    """logits [0, 1, 2, -1, 0.5]: relative to the top token (2) the others have probability
    e^-2, e^-1, e^-3, e^-1.5 = .14, .37, .05, .22. min_p=0.3 keeps tokens 2 and 1 only, in
    the ratio 1 : e^-1."""
    from winnow.generate.decode import make_warpers, pick

    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]]).repeat(40_000, 1)
    torch.manual_seed(0)
    counts = torch.bincount(pick(logits, make_warpers(1.0, 1.0, 0, min_p=0.3)), minlength=5) / 40_000
    assert counts[[0, 3, 4]].sum() == 0
    assert abs(counts[2].item() - 1 / (1 + math.exp(-1))) < 0.01
    assert [type(w).__name__ for w in make_warpers(0.7, 0.9, 5, 0.1)][-1] == "MinPLogitsWarper"  # last, as in generate


def test_min_p_near_one_samples_the_greedy_tokens(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    greedy = backend.generate(PROMPTS, GREEDY, seed=0)
    sampled = backend.generate(PROMPTS, with_(GREEDY, temperature=1.0, min_p=0.999, n=2), seed=3)
    assert [c.text for c in sampled] == [c.text for c in greedy for _ in range(2)]


# --- repetition_penalty --------------------------------------------------------------------


def test_repetition_penalty_greedy_equals_generate(tiny_policy):
    """One unpadded prompt: the same tokens as ``generate(repetition_penalty=1.5)``, and
    different tokens from no penalty (the random model repeats itself a lot)."""
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    ids = backend.render(PROMPTS[0])
    kw = dict(n=1, max_new_tokens=16, eos_ids=sorted(backend.eos_ids), pad_id=0, temperature=0.0)
    ours = decode.sample(backend.lm, [ids], repetition_penalty=1.5, **kw)[0]
    x = torch.tensor([ids])
    ref = backend.lm.generate(
        x, attention_mask=torch.ones_like(x), do_sample=False, repetition_penalty=1.5, max_new_tokens=16
    )[0, len(ids) :].tolist()
    assert ours == ref
    assert ours != decode.sample(backend.lm, [ids], **kw)[0]


def test_repetition_penalty_ignores_padding(tiny_policy):
    """Batched (left-padded) rows are penalised for their own tokens only, never the pad
    token: each prompt decodes as it would alone."""
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=3)
    sampling = with_(GREEDY, repetition_penalty=1.3)
    batched = backend.generate(PROMPTS, sampling, seed=0)
    alone = [backend.generate([p], sampling, seed=0)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in alone]


# --- stop strings --------------------------------------------------------------------------


def first_stop(tokenizer, tokens: list[int], stop: str) -> int:
    """Tokens up to the one whose text first contains ``stop``, by brute force."""
    return next(k for k in range(1, len(tokens) + 1) if stop in tokenizer.decode(tokens[:k]))


def test_stop_string_cuts_text_and_ends_the_completion(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    ids = backend.render(PROMPTS[0])
    eos = sorted(backend.eos_ids)
    free = decode.sample(backend.lm, [ids], n=1, max_new_tokens=16, eos_ids=eos, pad_id=0, temperature=0.0)[0]
    text = backend.tokenizer.decode(free, skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 2]  # two characters from the middle
    [c] = backend.generate([PROMPTS[0]], with_(GREEDY, stop=(stop,)), seed=0)
    assert c.text == text[: text.index(stop)]
    assert c.finish_reason == "stop"
    assert c.num_tokens == first_stop(backend.tokenizer, free, stop) < len(free)
    x = torch.tensor([ids])  # transformers' own stop_strings end at the same token
    ref = backend.lm.generate(
        x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=16,
        stop_strings=[stop], tokenizer=backend.tokenizer,
    )[0, len(ids) :]  # fmt: skip
    assert len(ref) == c.num_tokens


def test_sampled_rows_never_hold_a_stop_string(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    stops = ("e", "o")  # frequent characters: most rows stop early, at varied steps
    out = backend.generate(
        PROMPTS, Sampling(n=6, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=12, stop=stops), seed=0
    )
    assert all(not any(s in c.text for s in stops) for c in out)
    stopped = [c for c in out if c.finish_reason == "stop"]
    assert 0 < len(stopped) < len(out) and len({c.num_tokens for c in stopped}) > 1
    assert all(c.num_tokens == 12 for c in out if c.finish_reason == "length")


# --- the generate() fallback, on a saved model folder -----------------------------------------


def test_fallback_says_so_once_and_matches_generate(tiny_rwkv, capsys):
    backend = make_backend("hf", str(tiny_rwkv), device="cpu", batch_size=3)
    err = capsys.readouterr().err
    assert err.count("RwkvForCausalLM keeps a cache of its own; sampling with transformers' generate() instead") == 1
    out = backend.generate(PROMPTS, with_(GREEDY, max_new_tokens=8), seed=0)
    for prompt, c in zip(PROMPTS, out, strict=True):
        x = torch.tensor([backend.render(prompt)])
        ref = backend.lm.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=8)
        assert c.text == backend.tokenizer.decode(ref[0, x.shape[1] :], skip_special_tokens=True)
    assert capsys.readouterr().err == ""  # said once, at load


def test_fallback_honours_n_seed_and_stop(tiny_rwkv):
    backend = make_backend("hf", str(tiny_rwkv), device="cpu")
    sampling = Sampling(n=3, temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=8, min_p=0.01, stop=("e",))
    prompts = PROMPTS[:2]
    first = backend.generate(prompts, sampling, seed=4)
    assert [(c.prompt_id, c.sample_index) for c in first] == [(p.id, j) for p in prompts for j in range(3)]
    assert backend.generate(prompts, sampling, seed=4) == first
    assert backend.generate(prompts, sampling, seed=5) != first
    assert all("e" not in c.text for c in first)
    assert all(c.num_tokens == 8 for c in first if c.finish_reason == "length")


# --- models refused, and dtype -------------------------------------------------------------


def test_encoder_decoder_is_refused(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(WinnowError, match=r"is an encoder-decoder \(t5\); winnow samples decoder-only causal LMs"):
        make_backend("hf", str(tmp_path), device="cpu")


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(WinnowError, match="dtype: must be one of auto, float32, bfloat16, float16, got 'fp8'"):
        resolve_dtype("fp8", "cpu")


def test_policy_and_reward_model_load_in_the_dtype_asked_for(tiny_policy, tiny_reward_model):
    from winnow.rewards.classifier import ClassifierReward

    backend = make_backend("hf", str(tiny_policy), device="cpu", dtype="bfloat16")
    assert backend.lm.dtype == torch.bfloat16
    out = backend.generate(PROMPTS[:1], with_(GREEDY, max_new_tokens=4), seed=0)
    assert 1 <= out[0].num_tokens <= 4
    assert make_backend("hf", str(tiny_policy), device="cpu").lm.dtype == torch.float32  # auto on CPU
    rm = ClassifierReward(str(tiny_reward_model), device="cpu", dtype="bfloat16")
    assert rm.model.dtype == torch.bfloat16
    scores = rm(["hello"], ["a wonderful happy day"])
    assert len(scores) == 1 and math.isfinite(scores[0])


def test_sft_trains_in_the_dtype_asked_for(tmp_path, tiny_policy):

    from winnow.config import TrainConfig
    from winnow.sft import make_trainer

    trainer, _ = make_trainer(
        SFT_ROWS[:1], TrainConfig(model=str(tiny_policy), device="cpu", dtype="bfloat16"), tmp_path
    )
    assert trainer.model.dtype == torch.bfloat16
    assert not trainer.args.bf16  # no bf16 autocast on CPU (no bf16 units: ~10x slower)
