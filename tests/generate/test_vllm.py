"""The vLLM backend on vLLM's CPU build, with a tiny Llama built in-process.

Needs the environment ``bash scripts/setup_vllm.sh`` makes; run with

    .venv-vllm/bin/python -m pytest -m vllm tests/generate/test_vllm.py

(each engine takes a minute or more to start on 2 cores). The engine of the module fixture
runs in-process and eager, with 10% of system memory; the CLI test starts the real
multi-process engine, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ADAPTIVE_SCRIPT, flags, write_jsonl
from tiny_models import PROMPTS, make_tokenizer, tiny_config

from winnow.config import GenerateConfig
from winnow.errors import WinnowError
from winnow.generate import Sampling, make_backend
from winnow.records import Prompt

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed: bash scripts/setup_vllm.sh")

MEMORY = 0.1  # share of system memory for the KV cache: the machine is shared
GREEDY = Sampling(n=1, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=12)


def with_(sampling: Sampling, **changes) -> Sampling:
    return Sampling(**{**sampling.__dict__, **changes})


def texts(completions) -> list[str]:
    """Texts without a trailing U+FFFD: a completion cut inside a multi-byte character ends
    in one under transformers' decode, while vLLM's detokenizer holds the partial bytes back."""
    return [c.text.rstrip("\ufffd") for c in completions]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random 2-layer Llama (head size 64, which vLLM's CPU attention supports) whose EOS
    is the third token it emits greedily for PROMPTS[0], so that prompt stops on EOS."""
    from transformers import LlamaForCausalLM

    from winnow.generate.chat import render

    path = tmp_path_factory.mktemp("tiny-vllm")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(tokenizer, hidden_size=128, intermediate_size=256, num_attention_heads=2)
    model = LlamaForCausalLM(config).eval()
    ids = torch.tensor([render(tokenizer, PROMPTS[0], "tiny")])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=3, min_new_tokens=3)
    eos = int(out[0, -1])
    model.config.eos_token_id = model.generation_config.eos_token_id = eos
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cli_generates_with_backend_vllm(folder, tmp_path):
    """The command a user runs, in a process of its own (vLLM's engine in its own process too)."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": p.id, "prompt": p.text} for p in PROMPTS[:2]])
    cmd = [sys.executable, "-m", "winnow", "generate", "--backend", "vllm", "--model", str(folder)]
    cmd += ["--prompts", str(prompts), "--run-dir", str(tmp_path / "run"), "--n", "3", "--max-new-tokens", "8"]
    cmd += ["--dtype", "float32", "--gpu-memory-utilization", str(MEMORY), "--max-model-len", "256"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run/generate/shard-m0-00000.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(p.id, j) for p in PROMPTS[:2] for j in range(3)]
    assert all(r["finish_reason"] in ("stop", "length") and 1 <= r["num_tokens"] <= 8 for r in rows)
    config = json.loads((tmp_path / "run/generate/config.json").read_text())
    assert config["generate"]["backend"] == "vllm" and config["generate"]["gpu_memory_utilization"] == MEMORY


@pytest.fixture(scope="module")
def backend(folder):
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process: less memory, nothing left behind
    vllm = make_backend(
        "vllm", str(folder), dtype="float32", engine={"gpu_memory_utilization": MEMORY, "max_model_len": 256}
    )
    yield vllm
    del vllm.llm
    os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING")


@pytest.fixture(scope="module")
def hf(folder):
    return make_backend("hf", str(folder), device="cpu", dtype="float32")


def test_prompt_token_ids_are_those_of_the_hf_backend(backend, hf):
    from vllm.inputs import TokensPrompt

    chat = Prompt(id="chat", messages=({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}))
    for prompt in [*PROMPTS, chat]:
        ids = hf.render(prompt)
        assert backend.render(prompt) == ids
        [out] = backend.llm.generate([TokensPrompt(prompt_token_ids=ids)], use_tqdm=False)
        assert list(out.prompt_token_ids) == ids  # what the engine saw: no BOS added, nothing re-rendered


def test_greedy_equals_hf_and_stops_on_eos(backend, hf):
    out = backend.generate(PROMPTS, GREEDY, seed=0)
    assert (out[0].finish_reason, out[0].num_tokens) == ("stop", 3)  # the EOS chosen in the fixture
    ref = hf.generate(PROMPTS, GREEDY, seed=0)
    assert texts(out) == texts(ref)
    assert [(c.num_tokens, c.finish_reason) for c in out] == [(c.num_tokens, c.finish_reason) for c in ref]
    assert any(c.finish_reason == "length" and c.num_tokens == 12 for c in out)


def test_greedy_logprobs_and_confidence_equal_the_hf_backends(backend, hf):
    """vLLM's default raw log-probabilities are the model's own distribution, as the hf
    backend's: greedy, the same tokens, the same per-token values (to float32 rounding)."""
    asked = with_(GREEDY, top_logprobs=5)
    out, ref = backend.generate(PROMPTS, asked, seed=0), hf.generate(PROMPTS, asked, seed=0)
    for c, r in zip(out, ref, strict=True):
        assert len(c.logprobs.sampled) == c.num_tokens == r.num_tokens
        assert c.logprobs.sampled == pytest.approx(r.logprobs.sampled, abs=1e-3)
        assert c.logprobs.confidence == pytest.approx(r.logprobs.confidence, abs=1e-3)


def test_n_samples_keyed_and_finish_reasons(backend):
    out = backend.generate(PROMPTS, with_(GREEDY, n=4, temperature=1.0, max_new_tokens=6), seed=0)
    assert [(c.prompt_id, c.sample_index) for c in out] == [(p.id, j) for p in PROMPTS for j in range(4)]
    for c in out:
        assert c.model == backend.model
        assert (c.finish_reason == "length") == (c.num_tokens == 6) or c.finish_reason == "stop"
        assert 1 <= c.num_tokens <= 6
    assert len({c.text for c in out if c.prompt_id == "b"}) > 1  # sampled, not repeated


def test_seeds_reproduce_and_each_prompt_has_its_own(backend):
    sampling = with_(GREEDY, n=3, temperature=1.0, top_p=0.95, top_k=40, max_new_tokens=8)
    first = backend.generate(PROMPTS, sampling, seed=11)
    assert backend.generate(PROMPTS, sampling, seed=11) == first
    assert backend.generate(PROMPTS, sampling, seed=12) != first
    alone = backend.generate(PROMPTS[1:2], sampling, seed=11)  # batch-mates change nothing
    assert alone == [c for c in first if c.prompt_id == PROMPTS[1].id]


def test_stop_strings_cut_text_as_in_the_hf_backend(backend, hf):
    [free] = backend.generate(PROMPTS[1:2], with_(GREEDY, max_new_tokens=16), seed=0)
    stop = free.text[len(free.text) // 2 : len(free.text) // 2 + 2]
    sampling = with_(GREEDY, max_new_tokens=16, stop=(stop,))
    [c] = backend.generate(PROMPTS[1:2], sampling, seed=0)
    assert (c.text, c.finish_reason) == (free.text[: free.text.index(stop)], "stop")
    assert c.num_tokens < free.num_tokens
    [ref] = hf.generate(PROMPTS[1:2], sampling, seed=0)
    assert (ref.text, ref.num_tokens, ref.finish_reason) == (c.text, c.num_tokens, c.finish_reason)  # cut mid-text


def sampled_token_shares(backend, hf, monkeypatch, sampling: Sampling) -> list[float]:
    """For every token vLLM samples, its probability over the top token's, by the hf model."""
    outputs = []
    real = backend.llm.generate

    def recording(*args, **kwargs):  # the real engine call; its outputs are kept for the check
        outputs.extend(result := real(*args, **kwargs))
        return result

    monkeypatch.setattr(backend.llm, "generate", recording)
    backend.generate(PROMPTS, sampling, seed=1)
    shares = []
    for output in outputs:
        for sample in output.outputs:
            ids = list(output.prompt_token_ids)
            for token in sample.token_ids:
                with torch.no_grad():
                    probs = torch.softmax(hf.lm(torch.tensor([ids])).logits[0, -1].float(), -1)
                shares.append(float(probs[token] / probs.max()))
                ids.append(token)
    return shares


def test_min_p_samples_only_tokens_near_the_top_one(backend, hf, monkeypatch):
    sampling = with_(GREEDY, n=4, temperature=1.0, max_new_tokens=6)
    assert min(sampled_token_shares(backend, hf, monkeypatch, with_(sampling, min_p=0.9))) >= 0.9 * (1 - 1e-3)
    assert min(sampled_token_shares(backend, hf, monkeypatch, sampling)) < 0.9  # without min_p: some are not


def test_repetition_penalty_as_in_the_hf_backend(backend, hf):
    penalised = with_(GREEDY, repetition_penalty=1.5)
    out = backend.generate(PROMPTS, penalised, seed=0)
    ref = hf.generate(PROMPTS, penalised, seed=0)
    assert texts(out) == texts(ref) and [c.num_tokens for c in out] == [c.num_tokens for c in ref]
    assert texts(out) != texts(backend.generate(PROMPTS, GREEDY, seed=0))


def test_long_prompts_follow_the_policy(backend):
    from winnow.stages.generate import _too_long

    assert backend.context_length() == 256  # --max-model-len
    long = Prompt(id="long", text="the quick brown fox " * 60)
    config = GenerateConfig(backend="vllm", max_new_tokens=16, max_model_len=256)
    with pytest.raises(WinnowError, match=r"prompt 'long' \(row 2\) has \d+ tokens, more than the 240"):
        _too_long(backend, [PROMPTS[0], long], config)
    config.long_prompts = "skip"
    assert list(_too_long(backend, [PROMPTS[0], long], config)) == ["long"]


def test_adaptive_best_of_n_records_vllms_confidence(folder, tmp_path):
    """``winnow bon`` sampling adaptively from vLLM with ``--top-logprobs``, in a process of
    its own: the scripted reward (which sample indices pass) closes each prompt at the step
    test_adaptive.py expects, whatever vLLM writes, and every row has vLLM's confidence."""
    from test_adaptive import EXPECTED_PASS, WORKDIR_PROMPTS

    (tmp_path / "script.py").write_text(ADAPTIVE_SCRIPT)
    run = tmp_path / "run"
    argv = ["bon", *flags(prompts=write_jsonl(tmp_path / "q.jsonl", WORKDIR_PROMPTS), run_dir=run, model=folder)]
    argv += flags(n=8, adaptive_step=2, max_new_tokens=6, reward_fn=f"{tmp_path}/script.py:reward", pass_threshold=0.5)
    argv += flags(backend="vllm", dtype="float32", gpu_memory_utilization=MEMORY, max_model_len=256, top_logprobs=3)
    done = subprocess.run([sys.executable, "-m", "winnow", *argv], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(run / "score" / "rewards.npy"), EXPECTED_PASS)
    assert json.loads((run / "generate" / "config.json").read_text())["generate"]["backend"] == "vllm"
    adaptive = json.loads((run / "generate" / "manifest.json").read_text())["adaptive"]
    assert adaptive["samples_per_prompt"] == [2, 4, 6, 8]
    rows = [json.loads(line) for shard in (run / "generate").glob("shard-*.jsonl") for line in shard.open()]
    assert len(rows) == 20 and all(r["mean_confidence"] > 0 and r["lowest_group_confidence"] > 0 for r in rows)
    best = [json.loads(line) for line in (run / "best.jsonl").read_text().splitlines()]
    assert [b["sample_index"] for b in best] == [0, 2, 5, 0]
