"""The transformers backend and the generate stage, on tiny models built in-process."""

from __future__ import annotations

import json

import pytest
import torch

from winnow import stages
from winnow.config import GenerateConfig
from winnow.errors import WinnowError
from winnow.generate import Sampling, make_backend
from winnow.records import Prompt

PROMPTS = [
    Prompt(id="a", text="describe a rainy monday commute"),
    Prompt(id="b", text="the quick brown fox jumps over the lazy dog and the printer is broken"),
    Prompt(id="c", messages=({"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"})),
]


def test_rows_carry_keys_and_counts(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=2)
    out = backend.generate(PROMPTS, Sampling(n=3, temperature=1.0, top_p=0.9, top_k=20, max_new_tokens=7), seed=0)
    assert [(c.prompt_id, c.sample_index) for c in out] == [(p.id, j) for p in PROMPTS for j in range(3)]
    for c in out:
        assert c.model == str(tiny_policy)
        assert 1 <= c.num_tokens <= 7
        assert c.finish_reason == ("length" if c.num_tokens == 7 else "stop")


def test_chat_template_applied_once_without_doubled_bos(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    ids = backend.render(PROMPTS[0])
    bos = backend.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    text = backend.tokenizer.decode(ids)
    assert text.count("<|im_start|>user") == 1 and text.endswith("<|im_start|>assistant\n")


def test_same_seed_same_samples_and_batching_left_pads(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=3)
    sampling = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6)
    first = backend.generate(PROMPTS, sampling, seed=5)
    assert backend.generate(PROMPTS, sampling, seed=5) == first
    assert backend.generate(PROMPTS, sampling, seed=6) != first


def test_greedy_batched_matches_one_prompt_at_a_time(tiny_policy):
    """Left padding with an attention mask: a prompt's greedy output ignores its batch-mates."""
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=3)
    greedy = Sampling(n=1, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=8)
    batched = backend.generate(PROMPTS, greedy, seed=0)
    alone = [backend.generate([p], greedy, seed=0)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in alone]


def test_stop_on_eos(tmp_path):
    """A model whose every logit is equal picks token 0 greedily; make that token EOS."""
    from conftest import build_policy
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_policy(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.config.eos_token_id = model.generation_config.eos_token_id = 0
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    backend = make_backend("hf", str(folder), device="cpu")
    out = backend.generate(PROMPTS[:2], Sampling(n=2, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=5), seed=0)
    assert [(c.finish_reason, c.num_tokens, c.text) for c in out] == [("stop", 1, "")] * 4


def test_generate_stage_several_models_keep_provenance(tmp_path, tiny_policy, tiny_policy_b):
    config = GenerateConfig(models=[str(tiny_policy), str(tiny_policy_b)], n=2, max_new_tokens=4,
                            shard_size=2, device="cpu")
    manifest = stages.generate(tmp_path / "run", PROMPTS, config)
    assert manifest["num_columns"] == 4 and manifest["num_completions"] == 12
    prompts, rows, _ = stages.load_generations(tmp_path / "run")
    assert [p.id for p in prompts] == ["a", "b", "c"]
    models = {(r["prompt_id"], r["sample_index"]): r["model"] for r in rows}
    assert len(models) == 12
    for (pid, j), model in models.items():
        assert model == str(tiny_policy if j < 2 else tiny_policy_b)
    # shards: 2 models x ceil(3 / 2) prompts
    assert sorted(p.name for p in (tmp_path / "run" / "generate").glob("shard-*")) == [
        "shard-m0-00000.jsonl", "shard-m0-00001.jsonl", "shard-m1-00000.jsonl", "shard-m1-00001.jsonl"]


def test_long_prompt_error_names_prompt(tmp_path, tiny_policy):
    long = Prompt(id="long", text="the quick brown fox " * 200)
    config = GenerateConfig(models=[str(tiny_policy)], n=1, max_new_tokens=4, device="cpu")
    with pytest.raises(WinnowError, match=r"prompt 'long' \(row 2\) has \d+ tokens.*--long-prompts skip"):
        stages.generate(tmp_path / "run", [PROMPTS[0], long], config)
    assert not list((tmp_path / "run" / "generate").glob("shard-*"))


def test_long_prompt_skipped_and_counted(tmp_path, tiny_policy):
    long = Prompt(id="long", text="the quick brown fox " * 200)
    config = GenerateConfig(models=[str(tiny_policy)], n=2, max_new_tokens=4, device="cpu", long_prompts="skip")
    manifest = stages.generate(tmp_path / "run", [PROMPTS[0], long], config)
    assert manifest["skipped_prompts"] == 1 and manifest["num_completions"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run/generate/shard-m0-00000.jsonl").read_text().splitlines()]
    assert {r["prompt_id"] for r in rows} == {"a"}


def test_missing_model_path(tmp_path):
    with pytest.raises(WinnowError, match="model path does not exist"):
        make_backend("hf", str(tmp_path / "nope"), device="cpu")


def test_unknown_backend():
    with pytest.raises(WinnowError, match="unknown backend 'vllm-x'"):
        make_backend("vllm-x", "m")
