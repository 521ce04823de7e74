"""``/metrics`` in Prometheus' text format, one registry per app (so two servers in one
process, as in the tests, count apart).

Names follow Prometheus' conventions (``_total`` counters, ``_seconds`` histograms):

- ``winnow_requests_total{endpoint, status}``: answered requests by HTTP status (499: the
  client went away before its answer);
- ``winnow_queue_depth``: requests waiting for the backend; ``winnow_running_requests``;
- ``winnow_batch_size``: requests per backend call;
- ``winnow_candidates_total``: completions sampled (every Best-of-N candidate counts);
- ``winnow_prompt_tokens_total``, ``winnow_completion_tokens_total``: the served model's;
- ``winnow_judge_calls_total``, ``winnow_judge_prompt_tokens_total``,
  ``winnow_judge_completion_tokens_total``: a judge that picks (``select_by: judge``), what
  each answer's ``judge_usage`` says (another model, at another price: counted apart);
- ``winnow_time_to_first_token_seconds{stream}`` and ``winnow_request_latency_seconds{stream}``:
  from the request's arrival to its first content byte / to its last byte;
- ``winnow_chosen_reward``: Best-of-N, the reward of each answer returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
REWARDS = (-10, -1, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1, 2, 5, 10, 100, 1000)


class Metrics:
    """The server's counters; ``queue_depth`` and ``running`` are read when scraped."""

    def __init__(self, queue_depth: Callable[[], int], running: Callable[[], int]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("winnow_requests", "Answered requests", ["endpoint", "status"], registry=r)
        Gauge("winnow_queue_depth", "Requests waiting for the backend", registry=r).set_function(queue_depth)
        Gauge("winnow_running_requests", "Requests in the backend call under way", registry=r).set_function(running)
        self.batch_size = Histogram("winnow_batch_size", "Requests per backend call", buckets=SIZES, registry=r)
        self.candidates = Counter("winnow_candidates", "Completions sampled", registry=r)
        self.prompt_tokens = Counter("winnow_prompt_tokens", "Prompt tokens of answered requests", registry=r)
        self.completion_tokens = Counter("winnow_completion_tokens", "Completion tokens sampled", registry=r)
        self.judge_calls = Counter("winnow_judge_calls", "Calls of the judge that picks", registry=r)
        self.judge_prompt_tokens = Counter(
            "winnow_judge_prompt_tokens", "Prompt tokens of the judge that picks", registry=r
        )
        self.judge_completion_tokens = Counter(
            "winnow_judge_completion_tokens", "Completion tokens of the judge that picks", registry=r
        )
        self.ttft = Histogram(
            "winnow_time_to_first_token_seconds",
            "Arrival to first content byte",
            ["stream"],
            buckets=SECONDS,
            registry=r,
        )
        self.latency = Histogram(
            "winnow_request_latency_seconds", "Arrival to last byte", ["stream"], buckets=SECONDS, registry=r
        )
        self.reward = Histogram(
            "winnow_chosen_reward", "Reward of each answer returned (Best-of-N)", buckets=REWARDS, registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def answered(
        self,
        *,
        candidates: int,
        prompt_tokens: int,
        completion_tokens: int,
        rewards: list[float | None],
        arrived: float,
        streamed: bool,
        first_at: float | None = None,
        judge: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        """Count one request answered in full: ``rewards`` are those of the answers returned
        (None = unscored, not counted); ``arrived`` and ``first_at`` (its first content byte;
        None = the answer came in one piece) are ``time.perf_counter()`` readings; ``judge``:
        the calls, prompt tokens and completion tokens of the judge that picked, if one did."""
        now = time.perf_counter()
        label = "true" if streamed else "false"
        self.candidates.inc(candidates)
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
        calls, judge_prompt, judge_completion = judge
        self.judge_calls.inc(calls)
        self.judge_prompt_tokens.inc(judge_prompt)
        self.judge_completion_tokens.inc(judge_completion)
        self.ttft.labels(label).observe((first_at or now) - arrived)
        self.latency.labels(label).observe(now - arrived)
        for r in rewards:
            if r is not None:
                self.reward.observe(r)


class CountStatus:
    """ASGI middleware counting every HTTP answer by endpoint and status.

    A plain ASGI wrapper (not Starlette's ``BaseHTTPMiddleware``, which wraps ``receive``
    and would hide a client's disconnect from the routes). The status is taken from the
    response's start; a request whose client left before any answer counts as 499.
    """

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [499]

        async def watch(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
