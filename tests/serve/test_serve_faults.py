"""``winnow serve`` when clients or the reward misbehave: clients that give up leave nothing
queued, a reward that hangs is cut off (504) and cannot keep the server from stopping on
SIGTERM, every setting is bounded, and a busy port is one line and exit 2."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import signal
import socket
import threading
import time

import httpx
import pytest
from helpers import wait_for
from serving import counted, free_port, serve_in_thread, serve_process, wait_healthy

from winnow import cli
from winnow.config import ScoreConfig, ServeConfig
from winnow.config.fields import bounds
from winnow.errors import WinnowError
from winnow.serve.main import build_app

HANGING_REWARD = """
import threading
from pathlib import Path

def reward(prompts, completions, **kw):
    Path(__file__).with_suffix(".entered").touch()  # tells the test the reward was called
    threading.Event().wait()  # never returns
"""


@pytest.mark.parametrize("best_of", [None, 16])
def test_clients_that_give_up_leave_no_work_queued(tiny_policy, best_of):
    """40 clients (max_tokens 200; n 8, or Best-of-N with best_of 16) that give up after
    0.5 s, against a queue of 8: once they have gone the queue is empty, the backend idle,
    and a new request is answered at once, not refused with 429 while their work drains."""
    config = ServeConfig(model=str(tiny_policy), device="cpu", max_queue=8, max_batch_prompts=1, batch_window_ms=0,
                         max_tokens=256, max_best_of=16)  # fmt: skip
    app = build_app(config, ScoreConfig(reward_fn="length") if best_of else None)
    body = {"model": str(tiny_policy), "prompt": "hello", "max_tokens": 200} | (
        {"best_of": best_of} if best_of else {"n": 8}
    )
    with serve_in_thread(app) as url, counted(app.state.backend.lm, delay_s=0.005) as steps:

        async def impatient():
            async with httpx.AsyncClient(timeout=0.5) as http:

                async def one():
                    with contextlib.suppress(httpx.TimeoutException):
                        return (await http.post(f"{url}/v1/completions", json=body)).status_code
                    return "gave up"

                return await asyncio.gather(*(one() for _ in range(40)))

        outcomes = asyncio.run(impatient())
        gone = time.monotonic()
        wait_for(lambda: not app.state.batcher.pending and app.state.batcher.running == 0, 5,
                 "queue empty and backend idle")  # fmt: skip
        idle_after = time.monotonic() - gone
        started = len(steps)
        answer = httpx.post(f"{url}/v1/completions", json=body | {"max_tokens": 4, "n": 1, "best_of": 1}, timeout=30)
    assert outcomes.count("gave up") >= 8 and set(outcomes) <= {"gave up", 429}
    assert answer.status_code == 200 and idle_after < 1.0
    assert len(steps) - started <= 4 + 1  # only the new request's prefill and steps ran


def test_a_reward_that_hangs_is_cut_off_and_the_server_goes_on(tiny_policy, tmp_path):
    (tmp_path / "hang.py").write_text(HANGING_REWARD)
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=2)
    app = build_app(config, ScoreConfig(reward_fn=f"{tmp_path / 'hang.py'}:reward", reward_timeout=0.5))
    with serve_in_thread(app) as url:
        for _ in range(2):  # the second is not stuck behind the first
            start = time.monotonic()
            r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 3}, timeout=30)
            assert r.status_code == 504 and time.monotonic() - start < 5
            assert r.json()["error"]["code"] == "reward_timeout" and "0.5 s" in r.json()["error"]["message"]
        streamed = httpx.post(f"{url}/v1/completions", timeout=30,
                              json={"model": "tiny", "prompt": "x", "max_tokens": 3, "stream": True})  # fmt: skip
        assert b'"code":"reward_timeout"' in streamed.content and streamed.content.endswith(b"data: [DONE]\n\n")
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": "tiny", "queued": 0, "running": 0}


def test_sigterm_stops_the_server_within_its_grace_with_a_wedged_reward(tiny_policy, tmp_path):
    """A real process whose reward never returns (and whose time limit is long): SIGTERM
    while a request waits on it ends the process within the grace period and a little."""
    (tmp_path / "hang.py").write_text(HANGING_REWARD)
    args = ["--model", str(tiny_policy), "--device", "cpu", "--reward-fn", f"{tmp_path / 'hang.py'}:reward",
            "--reward-timeout", "3600", "--shutdown-grace-s", "2"]  # fmt: skip
    with serve_process(args) as (url, proc):
        wait_healthy(url, proc)

        def request() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server goes away under it
                body = {"model": str(tiny_policy), "prompt": "x", "max_tokens": 2}
                httpx.post(f"{url}/v1/completions", json=body, timeout=60)

        thread = threading.Thread(target=request, daemon=True)
        thread.start()
        wait_for((tmp_path / "hang.entered").exists, 60, "the request in the reward")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - signalled
    assert took < 2 + 5, took
    assert code in (0, -signal.SIGTERM)


NUMERIC = sorted(f.name for f in dataclasses.fields(ServeConfig) if f.type in ("int", "float") and f.name != "port")


@pytest.mark.parametrize("name", NUMERIC)
def test_every_serve_setting_is_bounded(name):
    low, high = bounds(ServeConfig, name)["ge"], bounds(ServeConfig, name)["le"]
    for bad in (math.inf, math.nan, high * 10 + 1, low - 1):
        config = ServeConfig(**{name: bad})
        with pytest.raises(WinnowError, match=f"serve.{name}"):
            config.validate()


def test_batch_window_inf_is_refused_on_the_command_line(capsys):
    assert cli.main(["serve", "--model", "m", "--batch-window-ms", "inf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "serve.batch_window_ms" in err


def test_a_port_in_use_is_one_line_and_exit_2(tiny_policy, capsys):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        code = cli.main(["serve", "--model", str(tiny_policy), "--device", "cpu", "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [err] and f"127.0.0.1:{port} is already in use" in err
