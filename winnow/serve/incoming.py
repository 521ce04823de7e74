"""Reading a request: the bearer key, the body (capped in size), its JSON validated
against the pydantic model, and the client's disconnect.

Each refusal is an ``ApiError`` in the OpenAI error body: 401 for the key, 400 naming the
field (or ``request_too_large`` / ``invalid_json``) for the body.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from winnow.config import ServeConfig
from winnow.errors import WinnowError
from winnow.serve.work import ApiError

M = TypeVar("M", bound=BaseModel)


def api_key(config: ServeConfig) -> bytes | None:
    """``Bearer <key>`` from the variable ``serve.api_key_env`` names; None = no key asked."""
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise WinnowError(f"serve.api_key_env: environment variable {config.api_key_env} is not set or empty")
    return f"Bearer {key}".encode()


def authorize(request: Request, expected: bytes | None) -> None:
    """Constant-time comparison of the Authorization header with ``Bearer <key>``."""
    if expected is None:
        return
    got = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(got, expected):
        raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(400, f"the request body is larger than {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(400, f"the request body is larger than {limit} bytes", code="request_too_large")
    return bytes(body)


def parse(model: type[M], body: bytes) -> M:
    """Validate a JSON body against its pydantic model; malformed JSON or a bad field -> 400."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, f"malformed JSON: {first['msg']}", code="invalid_json") from None
        union_tags = ("str", "int", "float", "bool")  # pydantic names the member of a union it tried
        loc = [str(x) for x in first["loc"] if str(x) not in union_tags and not str(x).startswith("list[")]
        param = ".".join(loc) or None
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        if first["type"].endswith("_type"):  # strict types: say what came, as it came ("4" is a string)
            got = json.dumps(first["input"])
            message += f", got {got if len(got) <= 60 else got[:57] + '...'}"
        raise ApiError(400, f"{param}: {message}", param=param) from None


async def disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
