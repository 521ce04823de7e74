"""Real HTTP servers for tests, on 127.0.0.1 and a free port: ``winnow serve`` as a process,
the same app in a thread of the test process (no second model import), and a fake
OpenAI-compatible server of the tests' own that can misbehave on purpose."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from helpers import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Return once ``url``/health answers 200; fail if ``proc`` (the server) exits first, with
    what it wrote, or if ``timeout`` seconds pass."""

    def healthy() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        return False

    wait_for(healthy, timeout, f"{url} to answer /health", proc=proc, poll_s=0.2)


@contextlib.contextmanager
def serve_process(args: list[str], env: dict | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m winnow serve ARGS --port FREE``; yields (root URL, process) at once, before
    the server is up (call ``wait_healthy``; a test can do other work while it starts); SIGTERM at exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "winnow", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
        # one torch thread: tiny models gain nothing from two, and a shared machine's
        # oversubscribed cores make OpenMP's spinning threads many times slower
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {}), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """A FastAPI app under uvicorn in a thread of this process; yields its root URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout=30)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def gated(model) -> Iterator[threading.Event]:
    """Every forward of ``model`` (a torch module) waits until the yielded event is set: a
    backend held mid-call, so a test decides when it goes on instead of racing it."""
    gate = threading.Event()
    handle = model.register_forward_pre_hook(lambda *args: gate.wait(60) and None)
    try:
        yield gate
    finally:
        gate.set()
        handle.remove()


@contextlib.contextmanager
def counted(model, delay_s: float = 0.0) -> Iterator[list[float]]:
    """Yields a list that gets the time of every forward of ``model`` (one per decode step
    after the prefill); ``delay_s`` slows each forward, so that a tiny model's request lasts
    long enough to be interrupted."""
    steps: list[float] = []

    def hook(*args) -> None:
        steps.append(time.monotonic())
        if delay_s:
            time.sleep(delay_s)

    handle = model.register_forward_pre_hook(hook)
    try:
        yield steps
    finally:
        handle.remove()


class FakeServer:
    """An OpenAI-compatible server whose answers are a pure function of the request.

    Text of choice j: ``"<prompt> seed=<seed> j=<j>"`` (chat: the last message's content),
    so the same request always gets the same answer, and rows show which seed was sent.
    ``fault(count, body) -> None | "drop" | status | seconds`` decides, per request (count =
    requests so far, from 0), to answer normally, close the connection without answering,
    fail with that HTTP status (an int), answer after a delay (a float), or answer with
    what a function makes of the healthy answer (``edit(payload) -> JSON value | bytes``,
    sent with status 200: a reply that breaks the API's promises). ``refuse_n``: answer 400 to n > 1 (a server without n support).
    """

    def __init__(self, fault: Callable[[int, dict], object] | None = None, refuse_n: bool = False):
        self.fault = fault or (lambda count, body: None)
        self.refuse_n = refuse_n
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        n = body.get("n", 1)
        if self.refuse_n and n > 1:
            return 400, {"error": {"message": "n > 1 is not supported", "type": "invalid_request_error"}}
        if path.endswith("/chat/completions"):
            prompt = body["messages"][-1]["content"]
        else:
            prompt = body["prompt"]
        choices = []
        for j in range(n):
            text = f"{prompt} seed={body.get('seed')} j={j}"
            words = len(text.split())
            finish = "length" if words >= body.get("max_tokens", 16) else "stop"
            choice: dict = {"index": j, "finish_reason": finish}
            if path.endswith("/chat/completions"):
                choice["message"] = {"role": "assistant", "content": text}
                if body.get("logprobs"):
                    choice["logprobs"] = {"content": [{"token": w, "logprob": 0.0} for w in text.split()]}
            else:
                choice["text"] = text
                if body.get("logprobs") is not None:
                    choice["logprobs"] = {"tokens": text.split(), "token_logprobs": [0.0] * words}
            choices.append(choice)
        total = sum(len(c.get("text", c.get("message", {}).get("content", "")).split()) for c in choices)
        usage = {"prompt_tokens": 3, "completion_tokens": total, "total_tokens": 3 + total}
        return 200, {"id": "x", "object": "text_completion", "created": 0, "model": body["model"], "choices": choices,
                     "usage": usage}  # fmt: skip

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict) -> None:
                self._send_bytes(status, json.dumps(payload).encode())

            def _send_bytes(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out
                    self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0,
                                                              "owned_by": "test"}]})  # fmt: skip

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    count = len(fake.requests)
                    fake.requests.append(body)
                fault = fake.fault(count, body)
                if fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all: a dropped connection
                    self.close_connection = True
                    return
                if isinstance(fault, float):
                    time.sleep(fault)
                    fault = None
                if callable(fault):
                    edited = fault(fake.answer(self.path, body)[1])
                    self._send_bytes(200, edited if isinstance(edited, bytes) else json.dumps(edited).encode())
                    return
                if fault is not None:
                    self._send(int(fault), {"error": {"message": f"injected {fault}", "type": "server_error"}})
                    return
                self._send(*fake.answer(self.path, body))

        return Handler


def scripted_judge(reply: Callable[[str], str]) -> FakeServer:
    """A ``FakeServer`` that answers each chat request with ``reply(its last message)``: a
    judge whose verdicts the test writes, behind the real client and its reply checks."""

    def fault(count: int, body: dict):
        def edit(payload: dict) -> dict:
            payload["choices"][0]["message"]["content"] = reply(body["messages"][-1]["content"])
            payload["usage"] = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
            return payload

        return edit

    return FakeServer(fault)
