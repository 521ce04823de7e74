"""``winnow serve`` scores candidates exactly as ``winnow score`` scores completions (one
reward applier: reasoning tags, time limit), and refuses the score options it cannot apply.

The server runs as a real process over a fake upstream (``--backend openai``), whose
answers are a pure function of the prompt, so the test knows which candidates close their
reasoning and which do not."""

from __future__ import annotations

import json
import re
import time

import httpx
import numpy as np
import openai
import pytest
from helpers import write_jsonl
from serving import FakeServer, serve_process, wait_healthy

from winnow import cli, cli_options
from winnow.config import ScoreConfig
from winnow.serve.reward import REFUSED, REWARD_TIMEOUT_S
from winnow.settings import field_docs

REWARD = """
import threading

def f(prompts, completions, **kw):
    if any("HANG" in c for c in completions):
        threading.Event().wait()  # never returns
    return [float(len(c)) + 1.0 for c in completions]
"""
CLOSED = "<think>plan it</think>Answer"  # the upstream echoes the prompt: its candidates close their reasoning
OPEN = "<think>still thinking"  # never closes: 0 from the reward, in score as in serve


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(root URL, reward file): Best-of-N with a file reward, think tags and a 1 s time limit."""
    folder = tmp_path_factory.mktemp("serve_rewards")
    (folder / "r.py").write_text(REWARD)
    with FakeServer() as upstream:
        args = ["--backend", "openai", "--base-url", upstream.url, "--model", "fake-model",
                "--reward-fn", f"{folder / 'r.py'}:f", "--reasoning-tags", "think", "--best-of", "2",
                "--reward-timeout", "1"]  # fmt: skip
        with serve_process(args) as (url, proc):
            wait_healthy(url, proc)
            yield url, folder / "r.py"


def test_serve_applies_reasoning_tags_exactly_as_score_does(server, tmp_path):
    url, reward = server
    api = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    served = {}
    for prompt in (CLOSED, OPEN):
        r = api.completions.create(model="fake-model", prompt=prompt, n=2, max_tokens=32, seed=5)
        served[prompt] = {c.text: c.model_extra["reward"] for c in r.choices}
    assert all(len(v) == 2 for v in served.values())  # j=0 and j=1: two candidates each
    assert sorted(served[OPEN].values()) == [0.0, 0.0]  # unfinished reasoning (the old path gave len + 1)
    assert all(v == len(t.split("</think>")[1]) + 1.0 for t, v in served[CLOSED].items())  # the answer only

    # the same completions through `winnow import` and `winnow score`
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": CLOSED}, {"id": "b", "prompt": OPEN}])
    rows = [{"prompt_id": pid, "text": text} for pid, p in (("a", CLOSED), ("b", OPEN)) for text in served[p]]
    completions = write_jsonl(tmp_path / "completions.jsonl", rows)
    run = tmp_path / "run"
    assert (
        cli.main(["import", "--completions", str(completions), "--prompts", str(prompts), "--run-dir", str(run)]) == 0
    )
    argv = ["score", "--run-dir", str(run), "--reward-fn", f"{reward}:f", "--reasoning-tags", "think"]
    assert cli.main(argv) == 0
    matrix = np.load(run / "score" / "rewards.npy")
    scored = {}
    for line in (run / "generate").glob("shard-*.jsonl"):
        for row in map(json.loads, line.read_text().splitlines()):
            scored[row["text"]] = matrix[0 if row["prompt_id"] == "a" else 1, row["sample_index"]]
    assert scored == served[CLOSED] | served[OPEN]
    assert json.loads((run / "score" / "manifest.json").read_text())["unfinished_reasoning"] == 2


def test_serve_applies_the_reward_timeout(server):
    """``--reward-timeout 1``: a reward that hangs is cut off after 1 s with a 504 (the old
    server accepted the flag and waited 60 s); the next request is answered."""
    url, _ = server
    body = {"model": "fake-model", "prompt": "<think></think>HANG", "max_tokens": 8}
    start = time.monotonic()
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=20)
    took = time.monotonic() - start
    assert r.status_code == 504 and 1 <= took < 10, (r.status_code, took)
    error = r.json()["error"]
    assert error["code"] == "reward_timeout" and "--reward-timeout 1 s" in error["message"]
    ok = httpx.post(f"{url}/v1/completions", json=body | {"prompt": CLOSED}, timeout=20)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "flags, line",
    [
        (["--pass-threshold", "0.5"], f"score.pass_threshold: winnow serve does not take it: {REFUSED['pass_threshold']}"),
        (["--score-processes", "2"], f"score.processes: winnow serve does not take it: {REFUSED['processes']}"),
        (["--reference-column", "gold"], f"score.reference_column: winnow serve does not take it: {REFUSED['reference_column']}"),
        (["--reward-fn", "math"], "score.reward_fn: 'math' is a verifier: it checks a completion against its prompts "
         "row's columns, which a request does not carry; serve with a reward that judges a completion on its own"),
    ],
)  # fmt: skip
def test_serve_refuses_score_options_it_cannot_apply(flags, line, monkeypatch, capsys):
    """One line and exit 2 before the port or the model (the old server started and ignored them)."""

    def started(*args, **kw):
        raise AssertionError("the server was built")

    monkeypatch.setattr("winnow.serve.main.build_app", started)
    monkeypatch.setattr("winnow.serve.main.listen", started)
    reward = [] if "--reward-fn" in flags else ["--reward-fn", "length"]
    assert cli.main(["serve", "--model", "m", *reward, *flags]) == 2
    assert capsys.readouterr().err == f"winnow: error: {line}\n"


def test_serve_help_lists_the_score_options_it_applies_and_one_time_limit(capsys):
    with pytest.raises(SystemExit):
        cli_options.parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    listed = re.findall(r"^  (--[a-z-]+)", text, re.M)  # the options as listed under their groups
    assert listed.count("--reward-timeout") == 1 and "--reward-timeout-s" not in text
    assert "--reasoning-tags" in text and "--reward-weights" in text
    assert not {"--pass-threshold", "--score-processes", "--reference-column", "--code-timeout", "--ifeval-mode"} & set(
        listed
    )
    assert "--pass-threshold" not in text
    assert f"winnow serve: {REWARD_TIMEOUT_S:g} s" in field_docs(ScoreConfig)["reward_timeout"]


def test_a_serve_config_with_the_old_time_limit_is_refused(tmp_path, capsys):
    config = tmp_path / "serve.yaml"
    config.write_text("serve:\n  model: m\n  reward_timeout_s: 5\nscore:\n  reward_fn: length\n")
    assert cli.main(["serve", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"winnow: error: {config}: serve.reward_timeout_s: the reward time limit is score.reward_timeout "
        "(--reward-timeout); set it in the score section\n"
    )


def test_winnow_score_api_applies_reasoning_tags_too():
    """The library's ``winnow.score`` goes through the same applier."""
    from winnow.api import score

    got = score(["p"], [["<think>x</think>ab", "<think>x"]], reward="length", reasoning_tags=["think"])
    assert got.tolist() == [[2.0, 0.0]]
