"""Rule first, then a judge: a hand-built set of math answers through ``winnow import`` and
``winnow score --fallback-judge``, the judge a scripted server behind the real client; and
once a tiny model served by ``winnow serve`` as the judge."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import write_jsonl
from serving import scripted_judge, serve_in_thread
from tiny_models import build_scorer

from winnow.cli import main
from winnow.config import ServeConfig
from winnow.serve.main import build_app

PROMPTS = [
    {"id": "half", "prompt": "What is 1 divided by 2?", "answer": "1/2"},
    {"id": "dozens", "prompt": "How many eggs are in six dozen?", "answer": "72"},
]
ANSWERS = {
    "half": ["\\boxed{1/2}", "one half", "it is 0.4", "half of it"],
    "dozens": ["\\boxed{72}", "seventy-two", "It is 72, not 70", ""],
}
"""The rule's readings: a pass, no answer (words), a fail, and no answer (words; an empty
text). The judge says yes to the answers equivalent to the reference, no to 0.4, and
nothing clear to "half of it"."""
VERDICTS = {"one half": "yes", "seventy-two": "Yes.", "It is 72, not 70": "yes", "it is 0.4": "no", "half of it": "hmm"}
PROMPT_FILE = "Q={question}\nR={reference}\nA={answer}\n"


@pytest.fixture
def imported(tmp_path):
    """A generate stage of the hand-built answers (4 samples a prompt), and a prompt file."""
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    write_jsonl(tmp_path / "answers.jsonl", [{"prompt_id": p, "text": t} for p, ts in ANSWERS.items() for t in ts])
    (tmp_path / "judge.txt").write_text(PROMPT_FILE)
    argv = ["import", "--prompts", str(tmp_path / "prompts.jsonl"), "--completions", str(tmp_path / "answers.jsonl")]
    assert main([*argv, "--run-dir", str(tmp_path / "run")]) == 0
    return tmp_path


def judge_of(asked: list[str]):
    def reply(content: str) -> str:
        question, reference, answer = re.fullmatch(r"Q=(.*)\nR=(.*)\nA=(.*)\n", content, re.S).groups()
        asked.append(answer)
        return VERDICTS[answer]

    return reply


def rows(d) -> dict:
    out = {}
    for line in (d / "run" / "score" / "shard-00000.jsonl").open():
        row = json.loads(line)
        out[(row["prompt_id"], row["sample_index"])] = row
    return out


def run_score(d, url: str, capsys, *extra: str) -> dict:
    argv = ["score", "--run-dir", str(d / "run"), "--reward-fn", "math", "--fallback-judge", url]
    argv += ["--judge-model", "judge", "--fallback-prompt", str(d / "judge.txt"), "--json", *extra]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)["score"]


def test_rows_without_an_answer_go_to_the_judge_and_each_records_what_decided(imported, capsys):
    asked: list[str] = []
    with scripted_judge(judge_of(asked)) as judge:
        summary = run_score(imported, judge.url, capsys)
    assert sorted(asked) == ["half of it", "one half", "seventy-two"]  # an empty text is not sent
    assert summary["rule_then_judge"] == {
        "rule_passes": 2,
        "judge_asked": 3,
        "judge_passes": 2,
        "judge_fails": 0,
        "judge_unclear": 1,
        "judge_overrides": 0,
    }
    assert summary["no_answer"] == 4  # the rule's readings stay: it read no answer in four
    assert summary["judge_usage"] == {"requests": 3, "prompt_tokens": 9, "completion_tokens": 3}  # 3 + 1 a reply
    assert np.load(imported / "run" / "score" / "rewards.npy").tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
    got = rows(imported)
    assert {k: v["decided_by"] for k, v in got.items()} == {
        ("half", 0): "rule",
        ("half", 1): "judge",
        ("half", 2): "rule",
        ("half", 3): "rule",  # the judge's reply held no verdict: the rule's 0 stands
        ("dozens", 0): "rule",
        ("dozens", 1): "judge",
        ("dozens", 2): "rule",
        ("dozens", 3): "rule",
    }
    assert {k: got[("half", 1)][k] for k in ("rule", "judge", "judge_reply")} == {
        "rule": "no_answer",
        "judge": "pass",
        "judge_reply": "yes",
    }
    assert (got[("half", 3)]["judge"], got[("half", 3)]["judge_reply"]) == ("unclear", "hmm")
    assert "judge" not in got[("dozens", 2)] and got[("dozens", 2)]["rule"] == "fail"


def test_with_fallback_on_fail_the_judge_also_decides_the_rules_fails_and_overrides_are_counted(imported, capsys):
    asked: list[str] = []
    with scripted_judge(judge_of(asked)) as judge:
        summary = run_score(imported, judge.url, capsys, "--fallback-on", "fail")
    assert sorted(asked) == ["It is 72, not 70", "half of it", "it is 0.4", "one half", "seventy-two"]
    assert summary["rule_then_judge"] == {
        "rule_passes": 2,
        "judge_asked": 5,
        "judge_passes": 3,
        "judge_fails": 1,
        "judge_unclear": 1,
        "judge_overrides": 1,  # "It is 72, not 70": the rule read 70, the judge the final 72
    }
    assert np.load(imported / "run" / "score" / "rewards.npy").tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    main(["report", str(imported / "run")])
    report = json.loads((imported / "run" / "report" / "report.json").read_text())
    assert report["rule_then_judge"] == summary["rule_then_judge"]
    markdown = (imported / "run" / "report" / "report.md").read_text()
    assert "| judge overrides (the rule failed the answer, the judge passed it) | 1 |\n" in markdown


def test_the_default_prompt_shows_the_judge_question_reference_and_answer(imported, capsys):
    seen: list[str] = []
    with scripted_judge(lambda content: seen.append(content) or "no") as judge:
        argv = ["score", "--run-dir", str(imported / "run"), "--reward-fn", "math", "--fallback-judge", judge.url]
        assert main([*argv, "--judge-model", "judge"]) == 0
    assert "; 2 rule passes, 3 rows to the judge: 0 passed, 0 overriding the rule -> " in capsys.readouterr().out
    first = next(s for s in seen if "one half" in s)
    assert "What is 1 divided by 2?" in first and "Reference answer:\n1/2\n" in first
    assert "Student's answer:\none half\n" in first


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--reward-fn", "length", "--judge-model", "j"],
            "score.fallback_judge: backs a rule verifier (math, choice, exact); the rewards are length",
        ),
        (["--reward-fn", "math"], "score.judge_model: fallback_judge needs the judge model name (--judge-model)"),
        (
            ["--reward-fn", "math", "--judge-model", "j", "--fallback-prompt", "nope.txt"],
            "score.fallback_prompt: file does not exist: nope.txt",
        ),
    ],
)
def test_a_fallback_judge_nothing_would_use_is_refused_in_one_line(imported, capsys, extra, message):
    argv = ["score", "--run-dir", str(imported / "run"), "--fallback-judge", "http://127.0.0.1:9/v1", *extra]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"winnow: error: {message}"


def test_fallback_on_without_a_fallback_judge_is_refused(imported, capsys):
    argv = ["score", "--run-dir", str(imported / "run"), "--reward-fn", "math", "--fallback-on", "fail"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "winnow: error: score.fallback_on: applies to a fallback judge only; set fallback_judge (--fallback-judge)"
    )


def test_a_tiny_model_served_by_winnow_serve_is_the_judge(imported, tmp_path, capsys):
    """The production path: ``winnow serve`` over a model whose every answer is "yes"."""
    judge = build_scorer(tmp_path / "yes", "yes")
    app = build_app(ServeConfig(model=str(judge), served_model_name="judge", device="cpu"))
    with serve_in_thread(app) as url:
        summary = run_score(imported, f"{url}/v1", capsys)
    assert summary["rule_then_judge"]["judge_passes"] == 3  # "half of it" too, this judge says yes to all
    assert np.load(imported / "run" / "score" / "rewards.npy").tolist() == [[1, 1, 0, 1], [1, 1, 0, 0]]
    assert rows(imported)[("half", 3)]["judge_reply"] == "yes"


def test_a_fallback_judge_alone_is_priced_by_the_judge_price(imported, capsys):
    with scripted_judge(judge_of([])) as judge:
        summary = run_score(imported, judge.url, capsys, "--judge-price-per-mtok", "1000,2000")
    # 9 prompt tokens at 1000 per million and 3 completion tokens at 2000 per million
    assert summary["judge_usage"] == {
        "requests": 3,
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "price_per_mtok": [1000.0, 2000.0],
        "cost": 0.015,
    }
