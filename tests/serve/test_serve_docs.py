"""The test-time compute page's server example runs as written: its ``winnow serve`` command
read by the real CLI (the tiny policy for ``smollm2``, ``length`` for ``vader``), the app it
configures served in this process on a free port (no second model import;
tests/serve/test_serve_cli.py starts ``winnow serve`` as a process), and its request body
posted as shown, answered as the page says."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import httpx
from serving import serve_in_thread

from winnow import cli
from winnow.serve import main as serve_main

PAGE = Path(__file__).resolve().parents[2] / "docs" / "howto" / "test-time-compute.md"
SECTION = "## The server as a test-time compute endpoint"


def section() -> str:
    text = PAGE.read_text()
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def test_the_pages_server_example_runs_as_written(tiny_policy, monkeypatch):
    text = section()
    (command,) = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for line in block.splitlines()]
    (request,) = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.S)]
    words = shlex.split(command)
    assert words[:2] == ["winnow", "serve"] and words[-2:] == ["--port", "8000"]
    swap = {"smollm2": str(tiny_policy), "vader": "length"}
    args = [swap.get(w, w) for w in words[2:-2]] + ["--device", "cpu"]
    configured = []
    monkeypatch.setattr(
        serve_main, "serve", lambda config, score, pick=None, images=None: configured.append((config, score))
    )
    assert cli.main(["serve", *args]) == 0
    ((config, score),) = configured
    with serve_in_thread(serve_main.build_app(config, score)) as url:
        r = httpx.post(f"{url}/v1/completions", json=request | {"model": str(tiny_policy)}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    candidates = body["candidates"]
    # the page: min(8, 256 // 48) = 5 candidates, usage counts them all, within the budget
    assert len(candidates) == min(request["best_of"], request["budget"] // request["max_tokens"]) == 5
    assert body["usage"]["completion_tokens"] == sum(c["num_tokens"] for c in candidates) <= request["budget"]
    assert [c["index"] for c in candidates] == list(range(5))
    assert [c["reward"] for c in candidates] == [float(len(c["text"])) for c in candidates]  # length
    assert body["choices"][0]["text"] == candidates[body["selected_index"]]["text"]
