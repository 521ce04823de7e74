"""A judge that picks: tournaments against a scripted judge server (exact calls, exact
winners, fallbacks), the order shown fixed by the seed, and ``winnow bon --select-by judge``
end to end with a tiny model served by ``winnow serve`` as the judge."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from helpers import write_jsonl
from serving import scripted_judge, serve_in_thread
from tiny_models import build_scorer

from winnow.cli import main
from winnow.config import ServeConfig
from winnow.remote import ClientSettings
from winnow.rewards.pick import Judge, calls_for, pick_best, shuffled, windows
from winnow.serve.main import build_app

SHOWN = re.compile(r"Candidate (\d+):\n(.*?)(?=\n\nCandidate \d+:|\n\nWhich candidate)", re.S)


def shown(content: str) -> list[str]:
    """The candidates' texts in the order a judge prompt shows them."""
    return [text for _, text in SHOWN.findall(content)]


def prefers(best: str, seen: list[list[str]]):
    """A judge that names the candidate holding ``best`` (else the first), and notes each window."""

    def reply(content: str) -> str:
        texts = shown(content)
        seen.append(texts)
        return f"[[{next((k for k, t in enumerate(texts, 1) if best in t), 1)}]]"

    return reply


def judge_at(url: str, **kw) -> Judge:
    return Judge(ClientSettings(base_url=url, max_retries=0), "judge", **kw)


@pytest.mark.parametrize(("n", "window", "calls"), [(8, 4, 3), (8, 2, 7), (16, 4, 5), (5, 4, 2), (4, 4, 1), (1, 4, 0)])
def test_the_tournament_makes_the_calls_stated_and_returns_the_best(n, window, calls):
    texts = [f"answer {i}" + (" BEST" if i == n - 2 or n == 1 else "") for i in range(n)]
    seen: list[list[str]] = []
    with scripted_judge(prefers("BEST", seen)) as server:
        [pick] = pick_best(judge_at(server.url, window=window), ["q"], [texts], keys=["p0"])
        assert len(server.requests) == calls == calls_for(n, window)
    assert (pick.index, pick.calls, pick.fallbacks) == (max(n - 2, 0), calls, 0)
    # the scripted judge's usage is 3 prompt and 1 completion tokens a reply
    assert (pick.usage.requests, pick.usage.prompt_tokens, pick.usage.completion_tokens) == (calls, 3 * calls, calls)
    assert all(2 <= len(w) <= window for w in seen)
    first_round = [w for w in windows([texts[i] for i in shuffled(n, 0, "p0")], window) if len(w) > 1]
    assert all(w in seen for w in first_round)  # the candidates are shown in the seed's order


def test_the_order_shown_is_fixed_by_the_seed_and_differs_between_seeds():
    assert (
        shuffled(8, 0, "p0") == shuffled(8, 0, "p0") == [3, 2, 7, 0, 1, 5, 6, 4]
    )  # pinned: Python's string seeding is stable
    assert shuffled(8, 1, "p0") != shuffled(8, 0, "p0") and shuffled(8, 0, "p1") != shuffled(8, 0, "p0")
    texts = [f"answer {i}" for i in range(8)]
    firsts = []
    for seed in (0, 0, 1):
        seen: list[list[str]] = []
        with scripted_judge(prefers("none", seen)) as server:  # always [[1]]: the first shown wins every window
            [pick] = pick_best(judge_at(server.url, window=8, seed=seed), ["q"], [texts], keys=["p0"])
        firsts.append((pick.index, seen[0]))
    assert firsts[0] == firsts[1] == (shuffled(8, 0, "p0")[0], [texts[i] for i in shuffled(8, 0, "p0")])
    assert firsts[2][0] == shuffled(8, 1, "p0")[0] != firsts[0][0]


def test_a_reply_naming_no_candidate_falls_back_to_the_windows_highest_reward_and_is_counted():
    texts = [f"answer {i}" for i in range(8)]
    rewards = [0.1, 0.9, math.nan, 0.3, 0.9, 0.2, 0.0, 0.5]  # 1 and 4 tie: the first shown of them wins
    with scripted_judge(lambda content: "They are all fine.") as server:
        [pick] = pick_best(judge_at(server.url, window=4), ["q"], [texts], [rewards], keys=["p0"])
    order = shuffled(8, 0, "p0")
    first_of_best = min((order.index(i), i) for i in (1, 4))[1]
    assert (pick.index, pick.calls, pick.fallbacks) == (first_of_best, 3, 3)


def test_prompts_run_together_and_missing_candidates_are_never_shown():
    seen: list[list[str]] = []
    candidates = [["a BEST", "b", None, "c"], [None, "only"], [None, None], ["x", "y BEST"]]
    with scripted_judge(prefers("BEST", seen)) as server:
        picks = pick_best(judge_at(server.url, window=2), ["q"] * 4, candidates, keys=["p0", "p1", "p2", "p3"])
        assert len(server.requests) == 3  # 3 candidates: 2 calls; one: none; none: none; two: 1
    assert [(p.index, p.calls) for p in picks] == [(0, 2), (1, 0), (-1, 0), (1, 1)]
    assert all(None not in w and "None" not in w for w in seen)


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory):
    """A tiny model that answers every prompt "2"."""
    return build_scorer(tmp_path_factory.mktemp("judge") / "two", "2")


def test_bon_select_by_judge_with_winnow_serve_as_the_judge(tmp_path, tiny_policy, judge_model, capsys):
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"say something about {i}"} for i in range(3)])
    app = build_app(ServeConfig(model=str(judge_model), served_model_name="judge", device="cpu"))
    with serve_in_thread(app) as url:
        argv = ["bon", "--prompts", str(tmp_path / "prompts.jsonl"), "--run-dir", str(tmp_path / "run")]
        argv += ["--model", str(tiny_policy), "--n", "4", "--max-new-tokens", "4", "--device", "cpu"]
        argv += ["--reward-fn", "length", "--select-by", "judge", "--pick-judge", f"{url}/v1", "--pick-model", "judge"]
        assert main([*argv, "--pick-window", "2", "--pick-price-per-mtok", "1,2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "best.jsonl").open()]
    rewards = np.load(tmp_path / "run" / "score" / "rewards.npy")
    # "2" in every window of two: the second shown wins each, so the last in the seed's order wins
    assert [r["sample_index"] for r in rows] == [shuffled(4, 0, f"p{i}")[3] for i in range(3)]
    assert [r["reward_pick"] for r in rows] == [int(np.argmax(rewards[i])) for i in range(3)]
    assert [(r["selected_by"], r["judge_calls"], r["judge_fallbacks"]) for r in rows] == [("judge", 3, 0)] * 3
    assert [r["best_reward"] for r in rows] == [float(np.max(rewards[i])) for i in range(3)]
    agree = sum(r["sample_index"] == r["reward_pick"] for r in rows)
    as_good = sum(rewards[i, r["sample_index"]] == np.max(rewards[i]) for i, r in enumerate(rows))
    # the judge answers "2" and its end of text: 2 completion tokens a call, as its usage says
    assert [(r["judge_usage"]["requests"], r["judge_usage"]["completion_tokens"]) for r in rows] == [(3, 6)] * 3
    prompt_tokens = sum(r["judge_usage"]["prompt_tokens"] for r in rows)
    cost = round((prompt_tokens * 1 + 18 * 2) / 1e6, 9)
    assert [r["judge_usage"]["cost"] for r in rows] == [
        round((r["judge_usage"]["prompt_tokens"] + 6 * 2) / 1e6, 9) for r in rows
    ]
    out = capsys.readouterr().out
    assert (
        f"judge: picked the reward's pick on {agree} of 3 prompts ({agree / 3:.0%}), one of the highest reward on "
        f"{as_good}; 9 judge calls, 0 replies naming no candidate, {prompt_tokens:,} prompt + 18 completion tokens, "
        f"cost {cost:.7f}".rstrip("0")
        + " (1, 2 per million)\n"
    ) in out
    assert main(["report", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert report["judge_pick"] == {
        "prompts": 3,
        "compared": 3,
        "agree": agree,
        "agreement": agree / 3,
        "as_good": as_good,
        "judge_calls": 9,
        "fallbacks": 0,
        "judge_usage": {
            "requests": 9,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 18,
            "price_per_mtok": [1.0, 2.0],
            "cost": cost,
        },
    }
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert (
        f"The judge's calls used 9 requests, {prompt_tokens:,} prompt + 18 completion tokens, cost {cost:.7f}".rstrip(
            "0"
        )
        + " (1, 2 per million)."
    ) in md


# A judge that picks, at an address nothing listens on: these runs are refused before any request.
JUDGE_PICKS = ["--select-by", "judge", "--pick-judge", "http://127.0.0.1:9/v1", "--pick-model", "j"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--select-by", "judge", "--pick-model", "j"], "pick.judge: select_by judge needs it (--pick-judge)"),
        (["--pick-window", "3"], "pick.window: applies to select_by judge only (--select-by judge)"),
        (
            [*JUDGE_PICKS, "--aggregate", "majority"],
            "pick.select_by: a judge picks in place of --aggregate best; --aggregate majority votes instead",
        ),
        (
            [*JUDGE_PICKS, "--keep-confident", "50"],
            "pick.select_by: a judge picks among every candidate; --keep-confident filters a vote",
        ),
    ],
)
def test_a_judge_that_picks_is_refused_in_one_line_before_sampling(tmp_path, capsys, extra, message):
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": "p0", "prompt": "hi"}])
    argv = [
        "bon",
        "--prompts",
        str(tmp_path / "prompts.jsonl"),
        "--run-dir",
        str(tmp_path / "run"),
        "--reward-fn",
        "length",
    ]
    assert main([*argv, *extra]) == 2
    assert capsys.readouterr().err.strip() == f"winnow: error: {message}"
    assert not (tmp_path / "run" / "generate").exists()
