"""Replies that break the API's promises, from a real local server (``serving.FakeServer``):
each is an invalid reply, retried like a 5xx, refused in one line naming the prompt when
it persists, and never written to a shard. Finish reasons other than stop and length are
kept as the server gave them, and selection and the report count them as not ended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serving import FakeServer

from winnow.cli import main

PROMPTS = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(5)] + [
    {"id": "chat", "messages": [{"role": "user", "content": "hello"}]}
]


WORKDIR_PROMPTS = PROMPTS
WORKDIR_FILES = {"fast.yaml": "generate: {retry_backoff: 0.001}\n"}


def generate(workdir: Path, url: str, run: str, *extra: str) -> int:
    argv = ["generate", "--config", str(workdir / "fast.yaml"), "--prompts", str(workdir / "prompts.jsonl")]
    argv += ["--run-dir", str(workdir / run), "--backend", "openai", "--base-url", url, "--model", "fake-model"]
    return main([*argv, "--n", "1", "--max-new-tokens", "4", "--shard-size", "2", "--max-retries", "2", *extra])


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((run / "generate").glob("shard-*.jsonl")) for line in p.open()]


def choice_edit(**changes):
    """An edit of the healthy answer: fields of its choice 0 set (or removed: ``DELETE``);
    ``content`` is the chat message's."""

    def edit(payload: dict) -> dict:
        choice = payload["choices"][0]
        for key, value in changes.items():
            target, name = (choice["message"], "content") if key == "content" else (choice, key)
            if value is DELETE:
                del target[name]
            else:
                target[name] = value
        return payload

    return edit


def usage_edit(count):
    def edit(payload: dict) -> dict:
        payload["usage"]["completion_tokens"] = count
        return payload

    return edit


def best_of_edit(candidate_rewards, count):
    """A reply as a Best-of-N server gives it: every candidate's reward, and usage billing them all."""

    def edit(payload: dict) -> dict:
        payload["candidate_rewards"] = candidate_rewards
        payload["usage"]["completion_tokens"] = count
        return payload

    return edit


DELETE = object()

# (case, prompt the server spoils, the edit, what the one line says of the reply)
SPOILED = [
    ("text 0", "p3", choice_edit(text=0), "choice 0: text 0 is not a string"),
    ("text false", "p3", choice_edit(text=False), "choice 0: text false is not a string"),
    ("text []", "p3", choice_edit(text=[]), "choice 0: text [] is not a string"),
    ("content 0", "chat", choice_edit(content=0), "choice 0: content 0 is not a string"),
    ("content []", "chat", choice_edit(content=[]), "choice 0: content [] is not a string"),
    ("no text", "p3", choice_edit(text=DELETE), "choice 0: no text"),
    ("no content", "chat", choice_edit(content=DELETE), "choice 0: no content"),
    ("text null", "p3", choice_edit(text=None), "choice 0: text null is not a string"),
    ("content null", "chat", choice_edit(content=None), "choice 0: content null is not a string"),
    ("count 1e9", "p3", usage_edit(10**9), "usage.completion_tokens 1000000000 is not a token count in [0, 4]"),
    ("count true", "p3", usage_edit(True), "usage.completion_tokens true is not a token count in [0, 4]"),
    ("count '7'", "p3", usage_edit("7"), 'usage.completion_tokens "7" is not a token count in [0, 4]'),
    ("count 5", "p3", usage_edit(5), "usage.completion_tokens 5 is not a token count in [0, 4]"),
    # a Best-of-N server bills every candidate it lists, and no more: 2 candidates of at most 4 tokens
    (
        "count 9 of 2 candidates",
        "p3",
        best_of_edit([1.0, None], 9),
        "usage.completion_tokens 9 is not a token count in [0, 8]",
    ),
    (
        "candidates not a list",
        "p3",
        best_of_edit("3", 2),
        'candidate_rewards "3" is not a list of at least 1 candidates\' rewards',
    ),
    ("no candidate", "p3", best_of_edit([], 2), "candidate_rewards [] is not a list of at least 1 candidates' rewards"),
    ("long text", "p3", choice_edit(text="x" * 1025), "choice 0: 1025 characters, more than 4 tokens can hold"),
    (
        "huge reply",
        "p3",
        choice_edit(text="x" * 2_000_000),
        "a reply of more than 73728 bytes, more than max_tokens can produce",
    ),
    ("no message", "chat", choice_edit(message=DELETE), "choice 0: no message object"),
    ("lone surrogate", "p3", choice_edit(text="ok \ud800"), "choice 0: text is not valid Unicode (a lone surrogate)"),
    ("finish 7", "p3", choice_edit(finish_reason=7), "choice 0: finish_reason 7 is not a reason's name"),
]


def spoils(prompt_id: str, edit, times: int | None = None):
    """A fault that answers ``prompt_id`` with the edited reply (its first ``times`` requests)."""
    text = "hello" if prompt_id == "chat" else f"prompt {prompt_id[1:]}"
    seen = []

    def fault(count, body):
        asked = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        if asked != text:
            return None
        seen.append(count)
        return edit if times is None or len(seen) <= times else None

    return fault


@pytest.mark.parametrize(("case", "prompt_id", "edit", "why"), SPOILED, ids=[c[0] for c in SPOILED])
def test_a_reply_that_persists_in_breaking_the_api_is_refused_in_one_line(workdir, capsys, case, prompt_id, edit, why):
    with FakeServer(fault=spoils(prompt_id, edit)) as server:
        assert generate(workdir, server.url, "run") == 2
        asked = [b for b in server.requests if ("messages" in b) == (prompt_id == "chat")]
    err = capsys.readouterr().err
    line = (
        f"prompt {prompt_id!r}: server {server.url} failed 3 times, last with an invalid reply: {why}; "
        "finished shards are kept, rerun the same command to resume"
    )
    assert err.strip().splitlines()[-1] == f"winnow: error: {line}" and "Traceback" not in err
    assert len(asked) >= 3  # the first try and 2 retries
    assert prompt_id not in {r["prompt_id"] for r in rows(workdir / "run")}
    assert not (workdir / "run" / "generate" / "manifest.json").exists()


def test_spoiled_replies_once_each_are_retried_to_the_rows_of_a_healthy_server(workdir):
    with FakeServer() as healthy:
        assert generate(workdir, healthy.url, "healthy") == 0
    for case, prompt_id, edit, _ in SPOILED:
        with FakeServer(fault=spoils(prompt_id, edit, times=1)) as flaky:
            assert generate(workdir, flaky.url, case) == 0, case
        assert len(flaky.requests) == len(healthy.requests) + 1, case
        assert rows(workdir / case) == rows(workdir / "healthy"), case


def test_finish_reasons_are_kept_as_given_and_counted_as_not_ended(workdir, capsys):
    given = {"p0": DELETE, "p1": None, "p2": "content_filter", "p3": "abort"}

    def fault(count, body):
        pid = next((p for p in given if body.get("prompt") == f"prompt {p[1:]}"), None)
        return choice_edit(finish_reason=given[pid]) if pid else None

    with FakeServer(fault=fault) as server:
        assert generate(workdir, server.url, "run", "--max-new-tokens", "16") == 0
    finish = {r["prompt_id"]: r["finish_reason"] for r in rows(workdir / "run")}
    assert finish == {"p0": "other", "p1": "other", "p2": "content_filter", "p3": "abort", "p4": "stop",
                      "chat": "stop"}  # fmt: skip
    assert main(["verify", str(workdir / "run")]) == 0
    run = ["--run-dir", str(workdir / "run")]
    assert main(["score", *run, "--reward-fn", "length"]) == 0
    capsys.readouterr()
    assert main(["select", *run, "--strategy", "top_k_per_prompt", "--k", "1", "--drop-truncated", "--json"]) == 0
    picked = {r["prompt_id"] for r in map(json.loads, (workdir / "run" / "select" / "selected.jsonl").open())}
    assert picked == {"p4", "chat"}
    out = json.loads(capsys.readouterr().out)["select"]
    assert out["truncated_dropped"] == 4
    assert main(["report", str(workdir / "run"), "--out", str(workdir / "rep"), "--bootstrap-iters", "10"]) == 0
    report = json.loads((workdir / "rep" / "report.json").read_text())
    assert report["all"]["truncated_share"] == pytest.approx(4 / 6) and report["selected"]["truncated_share"] == 0
