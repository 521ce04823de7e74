"""The openai backend against a real local server of the tests' own (``serving.FakeServer``):
seeds per request, n in one request or n single ones, retries through dropped connections,
429s, 5xx and timeouts, a server that never recovers, and resume afterwards."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from helpers import write_jsonl
from serving import FakeServer

from winnow import remote
from winnow.cli import main
from winnow.generate import Sampling, check_sampling
from winnow.generate.openai_api import extra_body, request_seed
from winnow.stages import shard_seed

KEY = "sk-test-7f3a9c-never-written"
PROMPTS = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(5)] + [
    {"id": "chat", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]}
]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("WINNOW_TEST_KEY", KEY)
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    (tmp_path / "fast.yaml").write_text("generate: {retry_backoff: 0.01}\n")
    return tmp_path


def generate(workdir: Path, url: str, run: str, *extra: str) -> int:
    return main(
        [
            "generate",
            "--config",
            str(workdir / "fast.yaml"),
            "--prompts",
            str(workdir / "prompts.jsonl"),
            "--run-dir",
            str(workdir / run),
            "--backend",
            "openai",
            "--base-url",
            url,
            "--api-key-env",
            "WINNOW_TEST_KEY",
            "--model",
            "fake-model",
            "--n",
            "3",
            "--max-new-tokens",
            "4",
            "--shard-size",
            "2",
            "--seed",
            "7",
            *extra,
        ]
    )


def shards(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "generate").glob("shard-*.jsonl"))}


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((run / "generate").glob("shard-*.jsonl")) for line in p.open()]


def prompt_text(row: dict) -> str:
    return row.get("prompt") or row["messages"][-1]["content"]


def test_one_request_per_prompt_with_seeds_from_the_shard(workdir):
    with FakeServer() as fake:
        assert generate(workdir, fake.url, "run") == 0
    got = rows(workdir / "run")
    assert [(r["prompt_id"], r["sample_index"]) for r in got] == [(p["id"], j) for p in PROMPTS for j in range(3)]
    for r in got:
        i = [p["id"] for p in PROMPTS].index(r["prompt_id"])
        seed = request_seed(shard_seed(7, 0, i // 2), i % 2)  # shard i // 2, place i % 2 in it
        text = f"{prompt_text(PROMPTS[i])} seed={seed} j={r['sample_index']}"
        assert r["text"] == text and r["model"] == "fake-model"
        assert r["num_tokens"] == len(text.split())  # counted from logprobs: the fake gives no num_tokens
        assert r["finish_reason"] == ("length" if r["num_tokens"] >= 4 else "stop")
    # the first prompt probes n (no per-choice counts) then n with logprobs; the rest go once each
    assert len(fake.requests) == len(PROMPTS) + 1
    assert [b.get("logprobs") for b in fake.requests[:2]] == [None, 0]
    chat = [b for b in fake.requests if "messages" in b]
    assert len(chat) == 1 and chat[0]["messages"][0] == {"role": "system", "content": "be brief"}
    manifest = json.loads((workdir / "run" / "generate" / "manifest.json").read_text())
    assert manifest["server"] == {"base_url": fake.url, "served_models": ["fake-model"]}
    assert manifest["config"]["generate"]["api_key_env"] == "WINNOW_TEST_KEY"


def test_the_probe_try_not_kept_is_counted_in_the_usage(workdir):
    """The fake gives no per-choice counts: the probe's first try (n=3, no logprobs) is paid
    for and discarded, then asked again with logprobs; both replies are in the usage."""
    with FakeServer() as fake:
        assert generate(workdir, fake.url, "run") == 0
    got = rows(workdir / "run")
    discarded = fake.requests[0]
    assert discarded["n"] == 3 and discarded.get("logprobs") is None
    words = sum(len(f"prompt 0 seed={discarded['seed']} j={j}".split()) for j in range(3))
    assert got[0]["prompt_id"] == "p0"
    assert got[0]["probe"] == {"n_mode": "logprobs", "usage": [{"prompt_tokens": 3, "completion_tokens": words}]}
    assert all("probe" not in r for r in got[1:])
    kept = [r["usage"] for r in got if "usage" in r]
    usage = json.loads((workdir / "run" / "generate" / "manifest.json").read_text())["usage"]
    assert usage == {
        "requests": len(kept) + 1,
        "prompt_tokens": 3 * (len(kept) + 1),
        "completion_tokens": sum(u["completion_tokens"] for u in kept) + words,
    }
    assert len(fake.requests) == len(kept) + 1


def test_server_refusing_n_gets_single_requests(workdir):
    with FakeServer(refuse_n=True) as fake:
        assert generate(workdir, fake.url, "run") == 0
    got = rows(workdir / "run")
    assert len(got) == 3 * len(PROMPTS)
    for r in got:
        i = [p["id"] for p in PROMPTS].index(r["prompt_id"])
        seed = request_seed(shard_seed(7, 0, i // 2), i % 2, r["sample_index"])
        assert r["text"] == f"{prompt_text(PROMPTS[i])} seed={seed} j=0"
    assert sum(b["n"] == 1 for b in fake.requests) == 3 * len(PROMPTS)


def test_retries_through_faults_end_with_the_rows_of_a_healthy_server(workdir, capsys):
    schedule = ["drop", 429, 500, "drop", 503, 502, 0.8]  # 0.8 s > the 0.5 s request timeout

    def fault(count, body):  # every other request of the first 28 misbehaves
        return schedule[(count // 2) % len(schedule)] if count < 28 and count % 2 == 0 else None

    with FakeServer() as healthy:
        assert generate(workdir, healthy.url, "healthy") == 0
    with FakeServer(fault=fault) as flaky:
        assert generate(workdir, flaky.url, "flaky", "--request-timeout", "0.5", "--max-retries", "4") == 0
    injected = sum(1 for k in range(len(flaky.requests)) if fault(k, {}) is not None)
    assert injected == 7 and len(flaky.requests) == len(healthy.requests) + injected  # one retry per fault
    assert shards(workdir / "flaky") == shards(workdir / "healthy")
    _assert_key_nowhere(workdir, capsys)


def test_server_that_never_recovers_names_the_prompt_and_a_rerun_resumes(workdir, capsys):
    def fault(count, body):
        return 503 if "prompt 3" in json.dumps(body) else None

    with FakeServer(fault=fault) as server:
        assert generate(workdir, server.url, "run", "--max-retries", "2") == 2
        err = capsys.readouterr().err
        assert "prompt 'p3'" in err and "failed 3 times" in err and "HTTP 503" in err
        assert list(shards(workdir / "run")) == ["shard-m0-00000.jsonl"]  # p0, p1 kept; p2, p3 not written
        server.fault, before = (lambda count, body: None), len(server.requests)
        assert generate(workdir, server.url, "run") == 0  # the server recovered; retries may differ on rerun
    asked = {prompt_text(b) if "messages" not in b else "chat" for b in server.requests[before:]}
    assert asked == {"prompt 2", "prompt 3", "prompt 4", "chat"}  # the finished shard was not redone
    # the mode the first run's probe paid for is read from its shard: every request asks for
    # logprobs (the shard's requests are in flight at once, so they may arrive in any order)
    logprobs = {prompt_text(b) if "messages" not in b else "chat": b.get("logprobs") for b in server.requests[before:]}
    assert len(server.requests) - before == 4
    assert logprobs == {"prompt 2": 0, "prompt 3": 0, "prompt 4": 0, "chat": True}
    with FakeServer() as healthy:
        assert generate(workdir, healthy.url, "healthy") == 0
    assert shards(workdir / "run") == shards(workdir / "healthy")
    _assert_key_nowhere(workdir, capsys)


def test_unknown_model_and_refused_request_are_clear_errors(workdir, capsys):
    with FakeServer() as fake:
        assert generate(workdir, fake.url, "run", "--model", "typo-model") == 2
        assert "does not serve 'typo-model' (it serves: fake-model)" in capsys.readouterr().err
    with FakeServer(fault=lambda count, body: 400) as fake:
        assert generate(workdir, fake.url, "run2", "--n", "1") == 2
        # requests run concurrently: whichever prompt's refusal lands first is the one named
        assert re.search(r"prompt 'p\d+'.*400", capsys.readouterr().err)


def test_endpoint_choice(workdir, capsys):
    with FakeServer() as fake:
        assert generate(workdir, fake.url, "chat", "--endpoint", "chat", "--n", "1") == 0
        assert all(b["messages"][-1]["role"] == "user" for b in fake.requests)  # text prompts as one user turn
        assert generate(workdir, fake.url, "text", "--endpoint", "completions", "--n", "1") == 2
    assert "prompt 'chat' has chat messages; endpoint 'completions' takes text prompts only" in capsys.readouterr().err


def test_missing_key_variable_is_a_clear_error(workdir, capsys, monkeypatch):
    monkeypatch.delenv("WINNOW_TEST_KEY")
    with FakeServer() as fake:
        assert generate(workdir, fake.url, "run") == 2
    assert "WINNOW_TEST_KEY is not set" in capsys.readouterr().err


def _assert_key_nowhere(workdir: Path, capsys) -> None:
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    for path in workdir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_backoff_is_exponential_with_full_jitter_and_a_cap():
    settings = remote.ClientSettings(base_url="http://x", backoff=0.5, max_backoff=4.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        delays = [remote.backoff_delay(settings, attempt) for _ in range(300)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # jitter spans the range
    assert all(remote.backoff_delay(settings, 0, retry_after=3.0) >= 3.0 for _ in range(50))
    assert all(remote.backoff_delay(settings, 0, retry_after=60.0) <= 4.0 for _ in range(50))


def test_sampling_fields_beyond_the_openai_api_travel_as_extra_body():
    neutral = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8)
    assert extra_body(neutral) == {}
    full = Sampling(
        n=2, temperature=1.0, top_p=0.9, top_k=20, max_new_tokens=8, min_p=0.05, repetition_penalty=1.2, stop=("\n",)
    )
    assert extra_body(full) == {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.2}
    check_sampling("openai", full)  # nothing refused: all of it is sent


def test_request_seeds_are_stable_and_distinct():
    seeds = {request_seed(5, i, j) for i in range(20) for j in range(8)}
    assert len(seeds) == 160 and all(0 <= s < 2**31 for s in seeds)
    assert request_seed(5, 3, 1) == request_seed(5, 3, 1) != request_seed(6, 3, 1)
    assert not math.isnan(request_seed(0))
