"""Per-minute limits against a real local server, timed where the requests arrive: the openai
backend's requests spaced by ``--max-requests-per-minute`` and, settled by each reply's usage,
by ``--max-tokens-per-minute``; the same rows as without a limit; usage and cost in the
manifests (generate's, the judge's) and in ``winnow report``."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from pathlib import Path

import pytest
from helpers import write_jsonl
from serving import FakeServer

from winnow.budget import LIMITS, Pacer, Usage, estimate_tokens, per_worker
from winnow.cli import main
from winnow.config import ExecutorConfig, ScoreConfig
from winnow.remote import judge_client

PROMPTS = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(10)]
SLACK = 0.15
"""Seconds the span of the arrivals may fall short of what the limits ask for. Arrival times
are taken at the server, after each request crossed a socket and waited for a thread of a
process on 2 cores shared with others (load 15 was seen): one arrival may come a tenth of a
second late, which shortens the span when it is the first. The event loop's own times are
checked exactly in ``test_the_pacer_spaces_waiters_by_the_clock_and_books_what_a_reply_used``."""


def assert_spaced(arrived: list[float], gaps: list[float]) -> None:
    """Requests arrived ``gaps[k]`` seconds after request k (each gap the limits ask for):
    over the whole span, and in the median gap, which one late arrival does not move (it
    shortens the gap after it and lengthens the one before). Requests sent without a limit
    arrive in clumps: a median gap near 0."""
    arrived = sorted(arrived)
    actual = [b - a for a, b in itertools.pairwise(arrived)]
    assert arrived[-1] - arrived[0] >= sum(gaps) - SLACK, (actual, gaps)
    assert statistics.median(a / g for a, g in zip(actual, gaps, strict=True)) >= 0.8, (actual, gaps)


@pytest.fixture()
def folder(tmp_path):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    return tmp_path


def generate(folder: Path, url: str, run: str, *extra: str) -> int:
    argv = ["generate", "--prompts", str(folder / "prompts.jsonl"), "--run-dir", str(folder / run)]
    argv += ["--backend", "openai", "--base-url", url, "--model", "fake-model", "--n", "1"]
    return main([*argv, "--max-new-tokens", "4", "--shard-size", "4", "--seed", "3", *extra])


def timed() -> tuple[FakeServer, list[float]]:
    """A healthy fake server and the list its requests' arrival times go to; as a judge (a
    chat request) it answers "Score: 7", 3 completion tokens."""
    arrived: list[float] = []

    def judged(payload: dict) -> dict:
        payload["choices"][0]["message"]["content"] = "Score: 7"
        payload["usage"]["completion_tokens"] = 3
        return payload

    def fault(count: int, body: dict):
        arrived.append(time.monotonic())
        return judged if "messages" in body else None

    return FakeServer(fault), arrived


def shards(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "generate").glob("shard-*.jsonl"))}


def test_requests_per_minute_spaces_the_requests_and_changes_no_row(folder):
    server, arrived = timed()
    with server as fake:
        assert generate(folder, fake.url, "free") == 0
        free = [b - a for a, b in itertools.pairwise(sorted(arrived))]
        arrived.clear()
        # 600 a minute: one every 0.1 s, though 16 may be in flight at once
        assert generate(folder, fake.url, "paced", "--max-requests-per-minute", "600") == 0
    assert len(arrived) == 10
    assert_spaced(arrived, [0.1] * 9)
    assert statistics.median(free) < 0.05, free  # without the limit they come in clumps
    assert shards(folder / "paced") == shards(folder / "free")
    assert json.loads((folder / "paced" / "generate" / "config.json").read_text()) == json.loads(
        (folder / "free" / "generate" / "config.json").read_text()
    )  # a limit is operational: a rerun may change it


def test_tokens_per_minute_spends_each_replys_usage(folder):
    """One request in flight, so each reply settles its estimate before the next is booked:
    the gap after a request is its *used* tokens (3 prompt tokens from the fake, plus the
    completion's) at 6000 a minute, 100 a second, not its estimate."""
    server, arrived = timed()
    with server as fake:
        argv = ["--max-tokens-per-minute", "6000", "--concurrency", "1", "--price-per-mtok", "1.5,2"]
        assert generate(folder, fake.url, "paced", *argv) == 0
    rows = [json.loads(line) for p in sorted((folder / "paced" / "generate").glob("shard-*")) for line in p.open()]
    assert [r["usage"] for r in rows] == [{"prompt_tokens": 3, "completion_tokens": r["num_tokens"]} for r in rows]
    used = [3 + r["num_tokens"] for r in rows]
    assert all(u > estimate_tokens(len("prompt 0"), 4) for u in used)  # the estimate (6) would space them less
    assert_spaced(arrived, [u / 100 for u in used[:-1]])
    manifest = json.loads((folder / "paced" / "generate" / "manifest.json").read_text())
    tokens = sum(r["num_tokens"] for r in rows)
    assert manifest["usage"] == {
        "requests": 10,
        "prompt_tokens": 30,
        "completion_tokens": tokens,
        "price_per_mtok": [1.5, 2.0],
        "cost": round((30 * 1.5 + tokens * 2.0) / 1e6, 9),
    }


def test_the_judge_is_paced_and_its_usage_priced_in_the_manifest_and_the_report(folder, capsys):
    server, arrived = timed()
    with server as fake:
        assert generate(folder, fake.url, "run", "--price-per-mtok", "1,2") == 0
        arrived.clear()
        judge = ["--reward-judge", fake.url, "--judge-model", "fake-model"]
        argv = ["score", "--run-dir", str(folder / "run"), *judge, "--judge-max-requests-per-minute", "600"]
        assert main([*argv, "--judge-price-per-mtok", "1,2"]) == 0
    assert len(arrived) == 10
    assert_spaced(arrived, [0.1] * 9)
    rows = [json.loads(line) for p in sorted((folder / "run" / "score").glob("shard-*")) for line in p.open()]
    usage = Usage.of_rows(r["judge_usage"] for r in rows)
    assert usage.requests == 10 and usage.prompt_tokens == 30  # the fake's 3 prompt tokens a request
    manifest = json.loads((folder / "run" / "score" / "manifest.json").read_text())
    assert manifest["judge_usage"] == usage.record([1.0, 2.0])
    capsys.readouterr()
    assert main(["report", str(folder / "run")]) == 0
    out = capsys.readouterr().out
    generated = json.loads((folder / "run" / "generate" / "manifest.json").read_text())["usage"]
    line = next(line for line in out.splitlines() if line.startswith("API usage:"))
    assert line.startswith(f"API usage: generate 10 requests, 30 prompt + {generated['completion_tokens']} completion")
    assert (
        usage.completion_tokens == 30 and "; judge 10 requests, 30 prompt + 30 completion tokens, cost 0.00009 " in line
    )
    report = json.loads((folder / "run" / "report" / "report.json").read_text())
    assert report["api_usage"] == {"generate": generated, "judge": manifest["judge_usage"]}
    assert line in (folder / "run" / "report" / "report.md").read_text()


def test_the_pacer_spaces_waiters_by_the_clock_and_books_what_a_reply_used():
    """No server: waits timed by the event loop's own clock (a fast, exact check of what the
    server-side tests see through a socket)."""
    pacer = Pacer(requests_per_minute=1200)  # one every 0.05 s

    async def five() -> list[float]:
        times: list[float] = []

        async def one() -> None:
            await pacer.wait(0)
            times.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(5)))
        return times

    times = asyncio.run(five())
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.05 - 0.005, times
    tokens = Pacer(tokens_per_minute=60)  # one token a second
    tokens.book(10, at=0.0)
    tokens.settle(10, None)  # a reply without usage: its estimate stands
    assert tokens.ready_at() == 10.0
    tokens.settle(10, 4)  # it used 4
    assert tokens.ready_at() == 4.0
    assert not Pacer().limited


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-requests-per-minute", "0"], "generate.max_requests_per_minute: must be finite and > 0, got 0.0"),
        (
            ["--price-per-mtok", "1"],
            "generate.price_per_mtok: expected IN,OUT (two prices per million tokens), got [1.0]",
        ),
        (["--price-per-mtok", "1,-2"], "generate.price_per_mtok: prices must be finite and >= 0, got [1.0, -2.0]"),
    ],
)
def test_bad_limits_and_prices_are_one_line(folder, capsys, flags, message):
    assert generate(folder, "http://127.0.0.1:9/v1", "run", *flags) == 2
    assert capsys.readouterr().err == f"winnow: error: {message}\n"


def test_a_limit_on_a_local_backend_or_without_a_judge_is_refused(folder, capsys):
    argv = ["generate", "--prompts", str(folder / "prompts.jsonl"), "--run-dir", str(folder / "r"), "--model", "m"]
    assert main([*argv, "--max-tokens-per-minute", "100"]) == 2
    assert capsys.readouterr().err == (
        "winnow: error: generate.max_tokens_per_minute: only the openai backend takes it (--backend openai)\n"
    )
    assert main(["score", "--run-dir", str(folder / "r"), "--judge-price-per-mtok", "1,2"]) == 2
    assert capsys.readouterr().err == (
        "winnow: error: score.judge_price_per_mtok: only a judge takes it (--reward-judge or --fallback-judge)\n"
    )


def test_ray_workers_each_hold_their_share_of_the_limits():
    """Every worker process paces its own requests: together they keep the whole limit."""
    ray, local = ExecutorConfig(name="ray", workers=3), ExecutorConfig(workers=3)
    assert (ray.share(), local.share()) == (3, 1)
    judge = ScoreConfig(reward_judge="http://127.0.0.1:1/v1", judge_model="j", judge_max_tokens_per_minute=900)
    shared = per_worker(judge, LIMITS["score"], ray.share())
    assert (shared.judge_max_tokens_per_minute, shared.judge_max_requests_per_minute) == (300.0, None)
    assert per_worker(judge, LIMITS["score"], local.share()) is judge
    assert judge_client(shared).pacer().token_gap == 60 / 300


def test_the_dry_run_prices_the_most_the_completions_may_use(folder, capsys):
    assert generate(folder, "http://127.0.0.1:9/v1", "run", "--price-per-mtok", "1,2", "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert "tokens to sample: at most 40 (10 completions x max_new_tokens 4)" in out
    assert "their price: at most 8e-05 for those tokens, plus the prompts' tokens" in out  # 40 x 2 / 10**6
