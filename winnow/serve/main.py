"""Build the backend (and the reward, for Best-of-N) and run the app under uvicorn."""

from __future__ import annotations

import errno
import logging
import math
import socket

from winnow.config import ImagesConfig, PickConfig, ScoreConfig, ServeConfig
from winnow.errors import WinnowError, install_hint
from winnow.generate import make_backend
from winnow.remote import upstream_client
from winnow.serve.reward import refuse_unserved, server_applier


def build_app(
    config: ServeConfig,
    score: ScoreConfig | None = None,
    pick: PickConfig | None = None,
    images: ImagesConfig | None = None,
):
    """The FastAPI app for ``config``; Best-of-N mode when ``score`` names a reward, its answer
    picked by a judge when ``pick`` says ``select_by: judge``; ``images``: how large a
    request's image may be (``images.max_bytes``; a request names no paths)."""
    config.validate()
    if images is not None:
        images.validate()
    judge = picking_judge(pick, score)
    try:
        from winnow.serve.app import create_app
    except ImportError as e:
        raise WinnowError(f"winnow serve needs the serve extra: {install_hint('serve')} ({e})") from None
    backend = make_backend(
        config.backend,
        config.model,
        device=config.device,
        batch_size=config.batch_size,
        client=upstream_client(config),
    )
    reward = None
    if score is not None:
        score.validate()
        reward = server_applier(score)
    return create_app(backend, config, backend_name=config.backend, reward=reward, judge=judge, images=images)


def picking_judge(pick: PickConfig | None, score: ScoreConfig | None):
    """The judge that picks (``winnow.rewards.pick.Judge``) ``pick`` names; None without one.
    It picks among Best-of-N's candidates, so it needs a reward (one line otherwise)."""
    if pick is None:
        return None
    pick.validate()
    if pick.select_by != "judge":
        return None
    if score is None:
        raise WinnowError(
            "pick.select_by: a judge picks among Best-of-N's candidates; serve with a reward "
            "(--reward-fn, --reward-model, ...) to sample them"
        )
    from winnow.rewards.pick import judge_of

    return judge_of(pick)


def serve(
    config: ServeConfig,
    score: ScoreConfig | None = None,
    pick: PickConfig | None = None,
    images: ImagesConfig | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. Requests in flight get ``shutdown_grace_s`` to finish
    (uvicorn's graceful shutdown); then the server exits, even with a backend call or a
    reward that never returns (they run in daemon threads, which do not hold the process)."""
    import uvicorn

    config.validate()
    if score is not None:  # before the port and the model: a refused option is one line at once
        score.validate()
        refuse_unserved(score)
    picking_judge(pick, score)  # a judge without a reward is one line before the port too
    sock = listen(config.host, config.port)  # before the model loads: a busy port fails at once
    app = build_app(config, score, pick, images)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mode = f"Best-of-N with {score_name(score)}, best_of {config.best_of}" if score else "plain sampling"
    if score and pick and pick.select_by == "judge":
        mode += f", picked by judge {pick.judge_model}"
    name = config.served_model_name or config.model
    print(f"winnow serve: {name!r} ({config.backend}) on http://{config.host}:{config.port}/v1 ({mode})", flush=True)
    settings = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=math.ceil(config.shutdown_grace_s))
    uvicorn.Server(settings).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one line (exit 2) when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart past TIME_WAIT
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        reason = "is already in use" if e.errno == errno.EADDRINUSE else f"cannot be listened on ({e.strerror})"
        raise WinnowError(f"serve.port: {host}:{port} {reason}") from None
    sock.set_inheritable(True)
    return sock


def score_name(score: ScoreConfig) -> str:
    if len(score.rewards()) > 1:
        return " + ".join(spec for _, spec in score.rewards())
    return score.reward_model or (f"judge {score.judge_model}" if score.reward_judge else score.rewards()[0][1])
