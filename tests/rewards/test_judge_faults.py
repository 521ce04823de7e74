"""The judge against a real local server that misbehaves (``serving.FakeServer``): the same
client, reply checks and retry policy as the ``openai`` backend, with its own timeout,
retries and concurrency. The fake echoes the rubric, which begins "Score: 7"."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import write_jsonl
from serving import FakeServer

from winnow.cli import main

PROMPTS = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(4)]


@pytest.fixture()
def generated(tmp_path):
    """A finished generate stage (4 prompts x 1 completion) made through the fake server."""
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    (tmp_path / "rubric.txt").write_text("Score: 7\n{prompt}\n{completion}")
    (tmp_path / "fast.yaml").write_text("score: {judge_retry_backoff: 0.001}\n")
    argv = ["generate", "--prompts", str(tmp_path / "prompts.jsonl"), "--run-dir", str(tmp_path / "run")]
    with FakeServer() as fake:
        argv += ["--backend", "openai", "--base-url", fake.url, "--model", "fake-model", "--n", "1"]
        assert main([*argv, "--max-new-tokens", "8"]) == 0
    return tmp_path


def score(d: Path, url: str, *extra: str) -> int:
    argv = ["score", "--config", str(d / "fast.yaml"), "--run-dir", str(d / "run"), "--reward-judge", url]
    argv += ["--judge-model", "fake-model", "--judge-rubric", str(d / "rubric.txt")]
    return main([*argv, "--judge-max-retries", "2", *extra])


def judged_on(prompt: str, edit):
    """A fault that spoils the judge's answer on the completion of ``prompt`` (all its requests)."""
    return lambda count, body: edit if f"\n{prompt} seed=" in body["messages"][-1]["content"] else None


def without(key):
    def edit(payload):
        del payload[key]
        return payload

    return edit


def setting(**fields):
    def edit(payload):
        payload.update(fields)
        return payload

    return edit


def message(**fields):
    def edit(payload):
        payload["choices"][0]["message"] = fields.get("message", {"role": "assistant", **fields})
        if fields.get("message") is DROP:
            del payload["choices"][0]["message"]
        return payload

    return edit


DROP = object()
SSE = b'data: {"choices": [{"index": 0, "delta": {"content": "Score: 7"}}]}\n\ndata: [DONE]\n\n'
MALFORMED = [
    ("html", lambda payload: b"<html><body>502 Bad Gateway</body></html>", "JSONDecodeError: Expecting value"),
    ("sse", lambda payload: SSE, "JSONDecodeError: Expecting value"),
    ("no choices", without("choices"), "no list of choices in dict"),
    ("choices null", setting(choices=None), "no list of choices in dict"),
    ("choices []", setting(choices=[]), "an empty list of choices"),
    ("no message", message(message=DROP), "choice 0: no message object"),
    ("content 7", message(content=7), "choice 0: content 7 is not a string"),
]


@pytest.mark.parametrize(("case", "edit", "why"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_judge_replies_are_retried_then_refused_in_one_line(generated, capsys, case, edit, why):
    with FakeServer(fault=judged_on("prompt 2", edit)) as server:
        assert score(generated, server.url) == 2
        spoiled = [b for b in server.requests if "\nprompt 2 seed=" in b["messages"][-1]["content"]]
    err = capsys.readouterr().err
    assert len(spoiled) == 3  # the first try and 2 retries
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert f"judge on prompt 'p2': server {server.url} failed 3 times, last with an invalid reply: {why}" in last
    assert not (generated / "run" / "score" / "manifest.json").exists()


def test_a_malformed_judge_reply_once_is_retried_and_every_row_scored(generated, capsys):
    for case, edit, _ in MALFORMED:
        once: list[int] = []

        def fault(count, body, edit=edit, once=once):
            if "\nprompt 2 seed=" in body["messages"][-1]["content"] and not once:
                once.append(count)
                return edit
            return None

        with FakeServer(fault=fault) as server:
            assert score(generated, server.url, "--json") == 0, case
        assert len(server.requests) == len(PROMPTS) + 1, case
        assert np.load(generated / "run" / "score" / "rewards.npy").tolist() == [[7.0]] * 4, case
        assert json.loads(capsys.readouterr().out)["score"]["scored"] == 4
        for p in (generated / "run" / "score").iterdir():  # the next case scores afresh
            p.unlink() if p.is_file() else None


def test_judge_request_timeout_and_retries_bound_a_server_that_never_answers(generated, capsys):
    with FakeServer(fault=lambda count, body: 30.0) as server:
        start = time.monotonic()
        assert score(generated, server.url, "--judge-request-timeout", "0.5", "--judge-max-retries", "1") == 2
        took = time.monotonic() - start
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "failed 2 times, last with no complete answer within the 0.5 s request timeout" in last
    assert took < 10


def test_judge_concurrency_bounds_requests_in_flight(generated, capsys):
    lock, now, most = threading.Lock(), [0], [0]

    def fault(count, body):
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.2)
        with lock:
            now[0] -= 1
        return None

    with FakeServer(fault=fault) as server:
        assert score(generated, server.url, "--judge-concurrency", "2") == 0
    assert most[0] == 2 and len(server.requests) == len(PROMPTS)
    config = json.loads((generated / "run" / "score" / "config.json").read_text())
    assert not any(k.startswith("judge_") and k not in ("judge_model", "judge_rubric", "judge_api_key_env")
                   for k in config["score"])  # fmt: skip
