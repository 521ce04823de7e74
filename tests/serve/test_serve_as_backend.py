"""``winnow generate --backend openai`` against a real ``winnow serve --best-of K`` over a tiny
model: the server bills every candidate it sampled in ``usage`` (K per request, whatever n),
and the backend takes such replies, keeps each choice's own ``num_tokens``, and counts the
whole bill in the manifest."""

from __future__ import annotations

import json

import pytest
from helpers import flags, write_jsonl
from serving import serve_in_thread

from winnow.cli import main
from winnow.config import ScoreConfig, ServeConfig
from winnow.serve.main import build_app

BEST_OF = 4
MAX_TOKENS = 6
PROMPTS = [{"id": f"p{i}", "prompt": f"tell me about thing {i}"} for i in range(3)]


@pytest.fixture(scope="module")
def bon(tiny_policy):
    """Best-of-4 with the 'length' reward; each request's usage counts its 4 candidates."""
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=BEST_OF)
    with serve_in_thread(build_app(config, ScoreConfig(reward_fn="length"))) as url:
        yield url


@pytest.mark.parametrize("n", [1, 2])
def test_generate_takes_the_replies_of_a_best_of_n_server(bon, tmp_path, n):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    run = tmp_path / "run"
    argv = ["generate", *flags(prompts=prompts, run_dir=run, backend="openai", base_url=f"{bon}/v1", model="tiny")]
    assert main([*argv, *flags(n=n, max_new_tokens=MAX_TOKENS, seed=5, shard_size=2)]) == 0

    rows = [json.loads(line) for p in sorted((run / "generate").glob("shard-*.jsonl")) for line in p.open()]
    assert sorted((r["prompt_id"], r["sample_index"]) for r in rows) == [
        (p["id"], j) for p in PROMPTS for j in range(n)
    ]
    for r in rows:  # each completion's own count (the server's num_tokens), never the request's bill
        assert 0 < r["num_tokens"] <= MAX_TOKENS
        if r["finish_reason"] == "length":
            assert r["num_tokens"] == MAX_TOKENS
    bills = [r["usage"] for r in rows if "usage" in r]
    assert len(bills) == len(PROMPTS)  # one request a prompt: the server honours n and counts each choice
    for bill, chosen in zip(bills, [[r for r in rows if r["prompt_id"] == p["id"]] for p in PROMPTS], strict=True):
        # four candidates billed, of which the n returned are some
        assert sum(c["num_tokens"] for c in chosen) <= bill["completion_tokens"] <= BEST_OF * MAX_TOKENS
    usage = json.loads((run / "generate" / "manifest.json").read_text())["usage"]
    assert usage["requests"] == len(PROMPTS)
    assert usage["completion_tokens"] == sum(b["completion_tokens"] for b in bills)
    assert usage["completion_tokens"] > sum(r["num_tokens"] for r in rows)  # the candidates not returned are paid too
