"""The transformers backend on every decoder-only architecture family transformers 5.x
generates with: greedy output equals ``model.generate()``'s, whichever path is taken.

Each model is tiny and random (``tiny_archs``). Three prompts of different lengths are
decoded together, so two are left-padded; ``generate()`` decodes each alone, unpadded.
"""

from __future__ import annotations

import pytest
import torch
from tiny_archs import ARCHS, COMMON, PATHS, build

from winnow.generate import decode, fallback, shared_attention

PROMPTS = [[1, 5, 6, 7, 8, 9, 10, 11, 12], [1, 20, 21], [1, 30, 31, 32, 33, 34]]
STEPS = 8
EOS = COMMON["eos_token_id"]

pytestmark = pytest.mark.usefixtures("one_thread")


def reference(lm, prompt: list[int]) -> list[int]:
    """Greedy tokens of ``model.generate()`` for one unpadded prompt, up to its first EOS."""
    ids = torch.tensor([prompt])
    out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=STEPS, do_sample=False)
    return out[0, len(prompt) :].tolist()


def until(row: list[int], stops: set[int]) -> list[int]:
    return next((row[: i + 1] for i, t in enumerate(row) if t in stops), row)


@pytest.mark.parametrize("model_type", sorted(ARCHS))
def test_greedy_equals_generate(model_type):
    lm = build(model_type)
    reason = fallback.probe(lm, pad_id=0)
    assert ("generate" if reason else "fast") == PATHS[model_type], reason
    loop = fallback.sample if reason else decode.sample
    expected = [reference(lm, p) for p in PROMPTS]
    kw = dict(max_new_tokens=STEPS, pad_id=0, temperature=0.0)
    assert loop(lm, PROMPTS, n=1, eos_ids=[EOS], **kw) == expected
    # n=2 copies of each prompt's state, and rows leaving mid-way: make the token the longest
    # row emits at step 3 an EOS too, so rows finish at different steps and move up.
    forced = max(expected, key=len)[2]
    cut = [until(row, {EOS, forced}) for row in expected]
    assert loop(lm, PROMPTS, n=2, eos_ids=[EOS, forced], **kw) == [row for row in cut for _ in range(2)]


def test_fast_path_problem_names_the_reason():
    assert decode.fast_path_problem(build("llama")) is None
    assert decode.fast_path_problem(build("rwkv")) == "RwkvForCausalLM keeps a cache of its own"
    assert (
        decode.fast_path_problem(build("recurrent_gemma")) == "RecurrentGemmaForCausalLM keeps state inside its modules"
    )


def test_probe_catches_state_outside_the_cache(monkeypatch):
    """With the static check out of the way, the probe itself sees RecurrentGemma's fast-loop
    output go wrong: its recurrent state lives in its modules, so rows are not copied."""
    lm = build("recurrent_gemma")
    monkeypatch.setattr(decode, "fast_path_problem", lambda lm: None)
    reason = fallback.probe(lm, pad_id=0)
    assert reason is not None and "RecurrentGemmaForCausalLM" in reason


def test_shared_prefix_attention_serves_fast_path_models_only():
    """Every model type the shared-prefix decode attention serves is one this file checks
    against ``generate()`` on the fast path (the n=2 case above runs it)."""
    assert set(shared_attention.MODEL_TYPES) <= {t for t, path in PATHS.items() if path == "fast"}


def test_shared_prefix_attention_samples_what_plain_attention_samples(monkeypatch):
    """Seeded sampling, n=4, rows finishing at different steps: the same tokens with the
    prompt's keys read once per prompt as with the n-fold copy read per row."""
    lm = build("llama")
    calls = []
    real = shared_attention.shared_prefix_attention

    def counted(module, query, *args, **kw):
        calls.append(kw.get("winnow_share") is not None)
        return real(module, query, *args, **kw)

    monkeypatch.setattr(shared_attention, "shared_prefix_attention", counted)

    def run() -> list[list[int]]:
        torch.manual_seed(0)
        return decode.sample(lm, PROMPTS, n=4, max_new_tokens=STEPS, eos_ids=[EOS, 7], pad_id=0)

    shared = run()
    assert calls and all(calls) and shared == run()  # used, and reproducible
    monkeypatch.setattr(shared_attention, "MODEL_TYPES", ())
    calls.clear()
    assert run() == shared and not calls
