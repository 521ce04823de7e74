"""Row types and JSONL files.

Every row carries its keys: a completion and its reward are found by
(``prompt_id``, ``sample_index``), never by position in a list.
Writes go to a temp file in the same folder and are renamed into place, so a crash never
leaves a half-written file behind.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from winnow.errors import WinnowError, where


@dataclass(frozen=True)
class Prompt:
    """One prompt: plain text or a chat conversation (exactly one of the two is set)."""

    id: str
    text: str | None = None
    messages: tuple[dict, ...] | None = None

    def as_messages(self) -> list[dict]:
        """The prompt as chat messages: a text prompt becomes one user turn."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.text}]

    def to_row(self) -> dict:
        if self.messages is not None:
            return {"id": self.id, "messages": [dict(m) for m in self.messages]}
        return {"id": self.id, "prompt": self.text}

    @property
    def content(self) -> str | list[dict]:
        """What reward functions receive as the prompt: the text, or the message list."""
        return self.text if self.text is not None else self.as_messages()


@dataclass(frozen=True)
class Completion:
    """One sampled completion; ``sample_index`` is its column in the M x N matrices."""

    prompt_id: str
    sample_index: int
    model: str
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS sampled) or "length" (max_new_tokens reached)

    def to_row(self) -> dict:
        return asdict(self)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; bad JSON names the line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise WinnowError(f"{where(path, lineno)}: malformed JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise WinnowError(f"{where(path, lineno)}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file and rename: readers see all or nothing.

    The one atomic write; the text, JSON, JSONL and .npy writers below go through it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def reward_to_json(value: float) -> float | None:
    """NaN (unscored) is written as JSON null."""
    return None if math.isnan(value) else float(value)
