"""winnow/serve/app.py and routes.py over a scripted backend, in process (Starlette's test
client runs the app's lifespan, so the batcher loop runs as under uvicorn): every route's
exact body, Best-of-N ranking by the score stage's applier, and every error in the OpenAI
error body with its status. The same server over a real model and real HTTP is
test_serve.py's."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from winnow.config import ScoreConfig, ServeConfig
from winnow.records import Completion
from winnow.rewards.apply import RewardApplier
from winnow.serve.app import create_app


class ScriptedBackend:
    """Sample j of any prompt is ``"a" * (j + 1) + " s<seed>"``, j + 2 tokens, ended on its own;
    a prompt is as many tokens as it has words. A prompt holding "fail" makes the call raise."""

    model = "scripted"

    def __init__(self):
        self.calls: list[tuple[list[str], int, int]] = []  # (prompt ids, n, seed) of each generate call

    def context_length(self) -> int:
        return 4096

    def prompt_lengths(self, prompts) -> list[int]:
        return [len(str(p.content).split()) for p in prompts]

    def generate(self, prompts, sampling, seed, watch=None) -> list[Completion]:
        self.calls.append(([p.id for p in prompts], sampling.n, seed))
        if any("fail" in str(p.content) for p in prompts):
            raise RuntimeError("device lost")
        return [
            Completion(p.id, j, self.model, "a" * (j + 1) + f" s{seed}", j + 2, "stop")
            for p in prompts
            for j in range(sampling.n)
        ]


def client(*, reward: bool = False, **serve) -> TestClient:
    applier = RewardApplier(ScoreConfig(reward_fn="length")) if reward else None  # length: characters
    app = create_app(ScriptedBackend(), ServeConfig(model="m", **serve), backend_name="hf", reward=applier)
    # a server error is answered (500) and then raised again by Starlette, for the server's log
    return TestClient(app, raise_server_exceptions=False)


def error(response) -> tuple[int, dict]:
    return response.status_code, response.json()["error"]


def test_health_and_models():
    with client(served_model_name="tiny") as c:
        assert c.get("/health").json() == {"status": "ok", "model": "tiny", "queued": 0, "running": 0}
        models = c.get("/v1/models").json()
        assert models["object"] == "list" and [(m["id"], m["owned_by"]) for m in models["data"]] == [("tiny", "winnow")]


def test_a_completion_is_the_backends_samples_with_their_usage():
    with client() as c:
        r = c.post("/v1/completions", json={"model": "m", "prompt": "one two three", "n": 2, "seed": 7})
        got = r.json()
        assert r.status_code == 200 and got["object"] == "text_completion" and got["model"] == "m"
        assert [(x["index"], x["text"], x["finish_reason"]) for x in got["choices"]] == [
            (0, "a s7", "stop"),
            (1, "aa s7", "stop"),
        ]
        assert got["usage"] == {"prompt_tokens": 3, "completion_tokens": 2 + 3, "total_tokens": 8}
        assert "candidate_rewards" not in got and all("reward" not in x for x in got["choices"])
        assert c.app.state.backend.calls == [([got["id"]], 2, 7)]


def test_a_chat_completion_answers_with_messages():
    with client() as c:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "seed": 3, "max_tokens": 5}
        got = c.post("/v1/chat/completions", json=body).json()
        assert got["object"] == "chat.completion" and got["id"].startswith("chatcmpl-")
        assert [x["message"] for x in got["choices"]] == [{"role": "assistant", "content": "a s3"}]
        assert got["usage"]["completion_tokens"] == 2


def test_best_of_n_returns_the_n_best_ranked_by_the_reward():
    """best_of 3 candidates "a s7", "aa s7", "aaa s7" score 4, 5, 6 (characters): the 2 best, best first."""
    with client(reward=True) as c:
        body = {"model": "m", "prompt": "one two three", "n": 2, "best_of": 3, "seed": 7}
        got = c.post("/v1/completions", json=body).json()
        assert [(x["index"], x["text"], x["reward"]) for x in got["choices"]] == [(0, "aaa s7", 6.0), (1, "aa s7", 5.0)]
        assert got["candidate_rewards"] == [4.0, 5.0, 6.0]  # every candidate, in sampling order
        # usage counts every candidate sampled, not only those returned
        assert got["usage"] == {"prompt_tokens": 3, "completion_tokens": 2 + 3 + 4, "total_tokens": 12}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "expected"),
    [
        ("post", "/v1/completions", {"model": "other", "prompt": "x"}, 404,
         {"message": "model 'other' is not served here (it serves 'm')", "type": "invalid_request_error",
          "param": "model", "code": "model_not_found"}),
        ("get", "/v2/x", None, 404,
         {"message": "no route /v2/x (this server has /v1/chat/completions, /v1/completions, /v1/models)",
          "type": "invalid_request_error", "param": None, "code": "unknown_url"}),
        ("get", "/v1/completions", None, 405,
         {"message": "method GET is not allowed on /v1/completions", "type": "invalid_request_error",
          "param": None, "code": "method_not_allowed"}),
        ("post", "/v1/completions", {"model": "m", "prompt": "fail now", "seed": 1}, 500,
         {"message": "the backend failed: RuntimeError", "type": "server_error", "param": None, "code": None}),
    ],
)  # fmt: skip
def test_every_error_is_the_openai_error_body(method, path, body, status, expected):
    with client() as c:
        r = getattr(c, method)(path, **({"json": body} if body else {}))
        assert error(r) == (status, expected)
        if status == 405:
            assert r.headers["allow"] == "POST"
        assert c.get("/health").json()["queued"] == 0  # nothing left behind


def test_malformed_json_and_a_bad_field_name_what_is_wrong():
    with client() as c:
        status, err = error(c.post("/v1/completions", content=b"{bad"))
        assert (status, err["code"]) == (400, "invalid_json") and err["message"].startswith("malformed JSON: ")
        status, err = error(c.post("/v1/completions", json={"model": "m", "prompt": "x", "n": 0}))
        assert (status, err["param"]) == (400, "n") and err["message"].startswith("n: ")


def test_the_api_key_guards_every_route_but_health(monkeypatch):
    monkeypatch.setenv("WINNOW_TEST_KEY", "sesame")
    with client(api_key_env="WINNOW_TEST_KEY") as c:
        assert c.get("/health").status_code == 200
        for r in (
            c.get("/v1/models"),
            c.get("/metrics"),
            c.post("/v1/completions", json={"model": "m", "prompt": "x"}),
        ):
            assert error(r) == (401, {"message": "missing or wrong API key (send 'Authorization: Bearer <key>')",
                                      "type": "invalid_request_error", "param": None, "code": "invalid_api_key"})  # fmt: skip
        ok = c.get("/v1/models", headers={"Authorization": "Bearer sesame"})
        assert ok.status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "Bearer sesame2"}).status_code == 401
