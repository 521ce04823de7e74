"""Build the backend (and the reward, for Best-of-N) and run the app under uvicorn."""

from __future__ import annotations

import logging

from winnow.config import ScoreConfig, ServeConfig
from winnow.errors import WinnowError
from winnow.generate import make_backend


def build_app(config: ServeConfig, score: ScoreConfig | None = None):
    """The FastAPI app for ``config``; Best-of-N mode when ``score`` names a reward."""
    config.validate()
    try:
        from winnow.serve.app import create_app
    except ImportError as e:
        raise WinnowError(f"winnow serve needs the serve extra: pip install 'winnow[serve]' ({e})") from None
    backend = make_backend(
        config.backend,
        config.model,
        device=config.device,
        batch_size=config.batch_size,
        client=config.client_settings(),
    )
    reward, reward_name = None, None
    if score is not None:
        from winnow.stages.score import make_reward

        score.validate()
        reward, reward_name = make_reward(score)
    return create_app(backend, config, backend_name=config.backend, reward=reward, reward_name=reward_name)


def serve(config: ServeConfig, score: ScoreConfig | None = None) -> None:
    """Serve until SIGINT/SIGTERM; requests in flight finish first (uvicorn's graceful shutdown)."""
    import uvicorn

    app = build_app(config, score)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mode = f"Best-of-N with {score_name(score)}, best_of {config.best_of}" if score else "plain sampling"
    name = config.served_model_name or config.model
    print(f"winnow serve: {name!r} ({config.backend}) on http://{config.host}:{config.port}/v1 ({mode})", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=None)


def score_name(score: ScoreConfig) -> str:
    if len(score.rewards()) > 1:
        return " + ".join(spec for _, spec in score.rewards())
    return score.reward_model or (f"judge {score.judge_model}" if score.reward_judge else score.rewards()[0][1])
