"""Both ends over real HTTP and real processes: ``winnow generate --backend openai`` against a
``winnow serve`` process gives the run directory an ``hf`` run gives; the API key is never
written; in-flight requests finish on SIGTERM; ``winnow serve`` flags reach its config."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest
from helpers import wait_for, write_jsonl
from serving import serve_process, wait_healthy

from winnow import cli

KEY = "sk-live-9b1e77c0-never-logged"
PROMPTS = [{"id": f"q{i}", "prompt": f"write two sentences about item {i}"} for i in range(5)] + [
    {"id": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]}
]


def generate(tmp_path, run: str, model: str, *extra: str) -> int:
    return cli.main(
        [
            "generate",
            "--prompts",
            str(tmp_path / "prompts.jsonl"),
            "--run-dir",
            str(tmp_path / run),
            "--model",
            model,
            "--n",
            "3",
            "--max-new-tokens",
            "6",
            "--shard-size",
            "4",
            "--device",
            "cpu",
            *extra,
        ]
    )


def load(run):
    rows = [json.loads(line) for p in sorted((run / "generate").glob("shard-*")) for line in p.open()]
    return rows, json.loads((run / "generate" / "manifest.json").read_text())


def test_openai_backend_against_winnow_serve_matches_an_hf_run(tmp_path, tiny_policy, monkeypatch, capsys):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    model = str(tiny_policy)
    monkeypatch.setenv("WINNOW_KEY", KEY)
    flags = ["--model", model, "--device", "cpu", "--api-key-env", "WINNOW_KEY", "--max-tokens", "256"]
    with serve_process(flags, {"WINNOW_KEY": KEY}) as (url, proc):
        assert generate(tmp_path, "hf", model) == 0  # while the server starts
        wait_healthy(url, proc)
        args = ["--backend", "openai", "--base-url", f"{url}/v1", "--api-key-env", "WINNOW_KEY"]
        assert generate(tmp_path, "oa", model, *args) == 0
        monkeypatch.setenv("WINNOW_KEY", "sk-wrong")
        assert generate(tmp_path, "denied", model, *args) == 2
        assert "HTTP 401" in capsys.readouterr().err

        # SIGTERM while a request is being served: it still gets its answer, then the server exits
        answers, signalled = [], []

        def slow_request():
            body = {"model": model, "prompt": "a long one", "max_tokens": 120, "n": 4}
            answers.append(httpx.post(f"{url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                                      timeout=120))  # fmt: skip
            answers.append(time.monotonic())

        thread = threading.Thread(target=slow_request)
        thread.start()
        wait_for(lambda: httpx.get(f"{url}/health").json()["running"] > 0, 60, "the request in the backend")
        proc.send_signal(signal.SIGTERM)
        signalled.append(time.monotonic())
        thread.join(timeout=120)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    response, answered_at = answers
    assert response.status_code == 200 and len(response.json()["choices"]) == 4
    assert answered_at > signalled[0]  # it was in flight when the signal came
    server_log = proc.stdout.read()
    assert "Finished server process" in server_log

    (hf_rows, hf_manifest), (oa_rows, oa_manifest) = load(tmp_path / "hf"), load(tmp_path / "oa")
    assert [(r["prompt_id"], r["sample_index"], r["model"]) for r in oa_rows] == [
        (r["prompt_id"], r["sample_index"], r["model"]) for r in hf_rows
    ]
    # the openai backend's rows keep each request's usage besides (on the row of its first choice)
    assert [sorted(set(r) - {"usage"}) for r in oa_rows] == [sorted(r) for r in hf_rows]
    assert sum(r["usage"]["completion_tokens"] for r in oa_rows if "usage" in r) == sum(
        r["num_tokens"] for r in oa_rows
    )
    assert oa_manifest["usage"]["completion_tokens"] == sum(r["num_tokens"] for r in oa_rows)
    counts = ("num_prompts", "num_columns", "num_completions", "skipped_prompts", "shards")
    assert {k: oa_manifest[k] for k in counts} == {k: hf_manifest[k] for k in counts}
    assert oa_manifest["server"] == {"base_url": f"{url}/v1", "served_models": [model]}
    for r in oa_rows:
        assert 1 <= r["num_tokens"] <= 6 and (r["finish_reason"] == "stop" or r["num_tokens"] == 6)
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + server_log
    assert "write two sentences" not in server_log  # prompts are not logged unless asked
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_serve_flags_reach_the_config_and_a_reward_flag_turns_on_best_of_n(monkeypatch):
    got = []
    monkeypatch.setattr(
        "winnow.serve.main.serve", lambda config, score, pick=None, images=None: got.append((config, score))
    )
    assert cli.main(["serve", "--model", "m", "--port", "9001", "--max-n", "2"]) == 0
    assert cli.main(["serve", "--model", "m", "--reward-fn", "length", "--best-of", "3", "--log-prompts"]) == 0
    (plain, no_reward), (bon, reward) = got
    assert (plain.model, plain.port, plain.max_n, no_reward) == ("m", 9001, 2, None)
    assert (bon.best_of, bon.log_prompts, reward.reward_fn) == (3, True, ["length"])  # the flag repeats
    assert cli.main(["serve", "--model", "m", "--best-of", "40"]) == 2  # above max_best_of


def test_max_image_bytes_reaches_serve_and_paths_outside_is_refused(monkeypatch, tmp_path, capsys):
    """A request's images are data: URLs: ``--max-image-bytes`` applies (``images`` section,
    flag or YAML), ``paths_outside`` has nothing to allow and is refused, flag and YAML alike."""
    got = []
    monkeypatch.setattr("winnow.serve.main.serve", lambda config, score, pick, images: got.append(images))
    assert cli.main(["serve", "--model", "m", "--max-image-bytes", "5000"]) == 0
    (tmp_path / "w.yaml").write_text("images:\n  max_bytes: 7000\n")
    assert cli.main(["serve", "--model", "m", "--config", str(tmp_path / "w.yaml")]) == 0
    assert cli.main(["serve", "--model", "m"]) == 0
    assert [images.max_bytes for images in got] == [5000, 7000, 20 * 1024 * 1024]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--model", "m", "--image-paths-outside"])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("winnow serve: error: unrecognized arguments: --image-paths-outside"), last
    (tmp_path / "out.yaml").write_text("images:\n  paths_outside: true\n")
    assert cli.main(["serve", "--model", "m", "--config", str(tmp_path / "out.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"winnow: error: {tmp_path / 'out.yaml'}: images.paths_outside: winnow serve reads no image paths "
        "(a request's are data: URLs)\n"
    )
    assert len(got) == 3
