"""The transformers backend and the generate stage, on tiny models built in-process."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_models import PROMPTS

from winnow import stages
from winnow.config import GenerateConfig
from winnow.errors import WinnowError
from winnow.generate import Sampling, make_backend
from winnow.records import Prompt


def test_rows_carry_keys_and_counts(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=2)
    out = backend.generate(PROMPTS, Sampling(n=3, temperature=1.0, top_p=0.9, top_k=20, max_new_tokens=7), seed=0)
    assert [(c.prompt_id, c.sample_index) for c in out] == [(p.id, j) for p in PROMPTS for j in range(3)]
    for c in out:
        assert c.model == str(tiny_policy)
        assert 1 <= c.num_tokens <= 7
        assert c.finish_reason in ("stop", "length")


def test_chat_template_applied_once_without_doubled_bos(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    ids = backend.render(PROMPTS[0])
    bos = backend.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    text = backend.tokenizer.decode(ids)
    assert text.count("<|im_start|>user") == 1 and text.endswith("<|im_start|>assistant\n")


def generate_alone(backend, ids: list[int], max_new_tokens: int, eos: list[int] | None = None) -> list[int]:
    """The reference: transformers' own greedy ``generate()`` on one prompt, no padding.

    Returns the new token ids, ending at (and including) the first of ``eos`` (default: the
    model's own EOS), or ``max_new_tokens`` long.
    """
    out = backend.lm.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=backend.tokenizer.pad_token_id,
    )
    return out[0, len(ids) :].tolist()


def test_same_seed_same_samples(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=3)
    sampling = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6)
    first = backend.generate(PROMPTS, sampling, seed=5)
    assert backend.generate(PROMPTS, sampling, seed=5) == first
    assert backend.generate(PROMPTS, sampling, seed=6) != first


def test_left_pad_puts_padding_before_each_prompt():
    from winnow.generate.decode import left_pad

    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]


def test_batched_left_padded_greedy_matches_transformers_generate(tiny_policy):
    """Three prompts of 39, 60 and 38 tokens in one left-padded batch: each greedy
    completion is what transformers' ``generate()`` gives for that prompt alone."""
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=3)
    ids = [backend.render(p) for p in PROMPTS]
    assert len({len(x) for x in ids}) == 3  # the batch really is padded
    greedy = Sampling(n=1, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=8)
    batched = backend.generate(PROMPTS, greedy, seed=0)
    expected = [backend.tokenizer.decode(generate_alone(backend, x, 8), skip_special_tokens=True) for x in ids]
    assert [c.text for c in batched] == expected
    assert len(set(expected)) == 3  # distinct outputs: a row mixed up with another would show


def test_finish_reason_and_num_tokens_match_generate(tiny_policy):
    """Make the token prompt 0 emits at its last step the EOS: that row is "stop" with
    num_tokens == max_new_tokens (the EOS is counted); rows that never emit it are "length"."""
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=3)
    ids = [backend.render(p) for p in PROMPTS]
    free = generate_alone(backend, ids[0], 10)
    last = max(i for i, t in enumerate(free) if t not in free[:i])  # a token new at step `last`
    assert last >= 3
    eos, max_new = free[last], last + 1
    backend.eos_ids = {eos}
    out = backend.generate(PROMPTS, Sampling(n=1, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=max_new), 0)
    expected = []
    for x in ids:
        ref = generate_alone(backend, x, max_new, eos=[eos])
        text = backend.tokenizer.decode(ref, skip_special_tokens=True)
        expected.append(("stop" if eos in ref else "length", len(ref), text))
    assert [(c.finish_reason, c.num_tokens, c.text) for c in out] == expected
    assert expected[0][:2] == ("stop", max_new)
    assert ("length", max_new) in [e[:2] for e in expected]


def test_stop_on_eos(tmp_path):
    """A model whose every logit is equal picks token 0 greedily; make that token EOS."""
    from tiny_models import build_policy
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
    config = GenerateConfig(
        models=[str(tiny_policy), str(tiny_policy_b)], n=2, max_new_tokens=4, shard_size=2, device="cpu"
    )
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
        "shard-m0-00000.jsonl",
        "shard-m0-00001.jsonl",
        "shard-m1-00000.jsonl",
        "shard-m1-00001.jsonl",
    ]


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


# --- the decode loop (winnow.generate.decode) ---------------------------------------------


def test_top_k_1_sampling_is_greedy(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=2)
    greedy = backend.generate(PROMPTS, Sampling(n=3, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=8), seed=0)
    top1 = backend.generate(PROMPTS, Sampling(n=3, temperature=0.7, top_p=1.0, top_k=1, max_new_tokens=8), seed=1)
    assert top1 == greedy


def test_shuffled_prompts_same_greedy_text_rows_in_input_order(tiny_policy):
    """Batches are sorted by prompt length; the rows must come back in the caller's order."""
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=2)
    greedy = Sampling(n=2, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=6)
    shuffled = [PROMPTS[2], PROMPTS[0], PROMPTS[1]]
    out = backend.generate(shuffled, greedy, seed=0)
    assert [(c.prompt_id, c.sample_index) for c in out] == [(p.id, j) for p in shuffled for j in range(2)]
    reference = {(c.prompt_id, c.sample_index): c.text for c in backend.generate(PROMPTS, greedy, seed=0)}
    assert {(c.prompt_id, c.sample_index): c.text for c in out} == reference


def test_finished_rows_dropped_mid_batch_match_transformers_generate(tiny_policy):
    """Make a token that prompt 1 emits at step 3 the EOS: its row leaves the batch early, a
    later row moves into its slot (the cache rows are moved), and every prompt still decodes
    as transformers' ``generate()`` decodes it alone."""
    from winnow.generate import decode

    backend = make_backend("hf", str(tiny_policy), device="cpu")
    ids = [backend.render(p) for p in PROMPTS]
    eos = generate_alone(backend, ids[1], 10)[2]
    batched = decode.sample(
        backend.lm, ids, n=1, max_new_tokens=10, eos_ids=[eos], pad_id=backend.tokenizer.pad_token_id, temperature=0
    )
    assert batched == [generate_alone(backend, x, 10, eos=[eos]) for x in ids]
    assert len(batched[1]) <= 3 and batched[1][-1] == eos
    assert len(batched[2]) > len(batched[1])  # row 2 outlived row 1 and moved into its slot


def test_sampled_rows_end_at_first_eos_or_max_tokens(tiny_policy):
    from winnow.generate import decode

    backend = make_backend("hf", str(tiny_policy), device="cpu")
    ids = [backend.render(p) for p in PROMPTS]
    eos = set(range(3, 300, 20))  # 5% of the vocabulary: about half the rows stop, at varied steps
    torch.manual_seed(0)
    rows = decode.sample(
        backend.lm,
        ids,
        n=4,
        max_new_tokens=12,
        eos_ids=sorted(eos),
        pad_id=backend.tokenizer.pad_token_id,
        temperature=1.0,
    )
    assert len(rows) == 12
    stopped = 0
    for row in rows:
        assert not eos & set(row[:-1])
        if row[-1] in eos:
            stopped += 1
        else:
            assert len(row) == 12
    assert 0 < stopped < 12


def test_pick_matches_softmax_and_never_picks_filtered_tokens():
    from winnow.generate.decode import make_warpers, pick

    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]]).repeat(40_000, 1)
    torch.manual_seed(0)
    counts = torch.bincount(pick(logits, make_warpers(1.0, 1.0, 0)), minlength=5) / 40_000
    assert torch.allclose(counts, torch.softmax(logits[0], -1), atol=0.01)
    top2 = torch.bincount(pick(logits, make_warpers(0.5, 1.0, 2)), minlength=5) / 40_000
    assert top2[[0, 3, 4]].sum() == 0  # top_k=2 keeps tokens 2 and 1 only
    assert abs(top2[2].item() - 1 / (1 + math.exp(-2))) < 0.01  # temperature 0.5 doubles the logit gap


def test_make_warpers_switches_filters_off():
    from winnow.generate.decode import make_warpers

    assert len(make_warpers(1.0, 1.0, 0)) == 0  # top_k=0 means off (generate's top_k=None would mean 50)
    assert [type(w).__name__ for w in make_warpers(0.7, 0.9, 5)] == [
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
    ]


def test_fill_holes_keeps_running_rows_and_moves_few():
    from winnow.generate.decode import fill_holes

    running = torch.tensor([True, False, True, False, True, True])
    keep = fill_holes(running)
    assert sorted(keep.tolist()) == [0, 2, 4, 5]
    assert keep[0] == 0 and keep[2] == 2  # rows already in place stay put
    assert fill_holes(torch.tensor([False, False])).tolist() == []


def test_reserved_layer_matches_dynamic_layer():
    """Same keys/values as transformers' DynamicLayer through prefill, n-fold copy, growth
    past the reserve, and row selection."""
    from transformers.cache_utils import DynamicLayer

    from winnow.generate.decode import ReservedLayer

    torch.manual_seed(0)
    ours, ref = ReservedLayer(reserve=2), DynamicLayer()
    prefill = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    for layer in (ours, ref):
        layer.update(*prefill)
    steps = [(torch.randn(6, 2, 1, 4), torch.randn(6, 2, 1, 4)) for _ in range(4)]
    keep = torch.tensor([0, 5, 2, 4])
    for layer in (ours, ref):
        layer.batch_repeat_interleave(2)
        for i, (k, v) in enumerate(steps):  # 4 steps > reserve 2: the buffers must grow
            if i == 2:
                layer.batch_select_indices(keep)
            if i >= 2:
                k, v = k[keep], v[keep]
            keys, values = layer.update(k, v)
    assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)
    assert ours.get_seq_length() == ref.get_seq_length() == 9
