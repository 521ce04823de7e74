"""Row types and JSONL files.

Every row carries its keys: a completion and its reward are found by
(``prompt_id``, ``sample_index``), never by position in a list.
Writes go to a temp file in the same folder and are renamed into place, so a crash never
leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from winnow.confidence import TokenLogprobs
from winnow.errors import WinnowError, where

BOM = b"\xef\xbb\xbf"
TMP_SUFFIX = ".tmp"
"""Every temp file ends so (``.<name>.<random>.tmp``): a resumed stage removes those a kill left."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: plain text or a chat conversation (exactly one of the two is set), and
    the row's other columns (a reference answer, unit tests), which reward functions get."""

    id: str
    text: str | None = None
    messages: tuple[dict, ...] | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    """Column name -> JSON value, in file order; empty when the row holds only id and prompt."""
    images: tuple = ()
    """``winnow.images.Image`` values, one per ``{"type": "image"}`` part of ``messages``, in
    order (TRL's form); empty for a prompt without images."""

    def as_messages(self) -> list[dict]:
        """The prompt as chat messages: a text prompt becomes one user turn."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.text}]

    def texts(self) -> list[str]:
        """The text of each message in order, a message of content parts as its text parts
        joined (its images left out).

        >>> Prompt(id="a", messages=({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]},)).texts()
        ['hi']
        """
        return [
            m["content"] if isinstance(m["content"], str) else "".join(p.get("text", "") for p in m["content"])
            for m in self.as_messages()
        ]

    def to_row(self) -> dict:
        """The row of ``generate/prompts.jsonl``; other columns go under ``columns`` and images
        under ``images``, each left out when there are none, so a file of ids and prompts gives
        the same rows (and hash) as ever."""
        row: dict[str, Any] = {"id": self.id}
        if self.messages is not None:
            row["messages"] = [dict(m) for m in self.messages]
        else:
            row["prompt"] = self.text
        if self.columns:
            row["columns"] = dict(self.columns)
        if self.images:  # by run-dir path, which names the bytes: the row's hash covers them
            row["images"] = [image.path for image in self.images]
        return row

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
    logprobs: TokenLogprobs | None = None
    """Per-token log-probabilities and confidence, when the backend was asked for them; never
    part of ``to_row`` as such (the generate stage keeps a summary: ``confidence.row_columns``)."""

    def to_row(self) -> dict:
        return {
            "prompt_id": self.prompt_id,
            "sample_index": self.sample_index,
            "model": self.model,
            "text": self.text,
            "num_tokens": self.num_tokens,
            "finish_reason": self.finish_reason,
        }


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; bad JSON or bad UTF-8 names the line.

    UTF-8 with or without a byte-order mark (as some editors write it).
    """
    with open(path, "rb") as f:
        yield from parse_jsonl(f, path)


def parse_jsonl(lines: Iterable[bytes], path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of JSONL given as byte lines; ``path`` names them in errors."""
    for lineno, raw in enumerate(lines, start=1):
        if lineno == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise WinnowError(
                f"{where(path, lineno)}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
            ) from None
        if not line.strip():
            continue
        obj = _loads_line(line, path, lineno)
        if not isinstance(obj, dict):
            raise WinnowError(f"{where(path, lineno)}: expected a JSON object, got {type(obj).__name__}")
        if "\\ud" in line.lower():  # only an escape can make a lone surrogate; skip the walk otherwise
            _refuse_surrogates(obj, path, lineno, "")
        yield lineno, obj


def _loads_line(line: str, path: Path, lineno: int) -> Any:
    """One JSON value; what json.loads raises besides a decode error is named too."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise WinnowError(f"{where(path, lineno)}: malformed JSON: {e.msg} (column {e.colno})") from None
    except ValueError as e:  # an integer of more digits than Python converts (4300)
        raise WinnowError(f"{where(path, lineno)}: number too long ({e})") from None
    except RecursionError:
        raise WinnowError(f"{where(path, lineno)}: nested too deeply to read") from None


def _refuse_surrogates(value: Any, path: Path, lineno: int, field: str) -> None:
    """A lone surrogate (``"\\ud800"``) is valid JSON but no UTF-8 can hold it: every later
    write would fail, so it is refused here, naming the field."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise WinnowError(
                f"{where(path, lineno, field or None)}: lone surrogate in text (not valid Unicode)"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_surrogates(key, path, lineno, field)
            _refuse_surrogates(item, path, lineno, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_surrogates(item, path, lineno, f"{field}[{i}]")


def read_text(path: Path) -> str:
    """A UTF-8 text file (a leading byte-order mark is dropped); bad bytes name the file."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise WinnowError(f"{where(path, line)}: not valid UTF-8 (byte {data[e.start]:#04x})") from None


def read_json(path: Path) -> Any:
    """A JSON file written by winnow; a damaged one is named, never a traceback."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise WinnowError(f"{path}: damaged (not valid JSON: {e.msg} at line {e.lineno})") from None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_mode() -> int:
    """The mode a new file gets under this process's umask (mkstemp alone gives 0600)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a new folder gets under this process's umask (mkdtemp alone gives 0700)."""
    return 0o777 & ~_umask()


def honour_umask(folder: Path) -> None:
    """Give a folder made by mkdtemp, and what a library saved in it, the umask's modes
    (mkdtemp makes 0700, and safetensors writes weights 0600)."""
    folder.chmod(dir_mode())
    for path in folder.rglob("*"):
        path.chmod(dir_mode() if path.is_dir() else file_mode())


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[Callable[[bytes], Any]]:
    """Write ``path`` via a temp file and rename: readers see all or nothing.

    Yields ``write(bytes)``, so a large output can be written a row at a time and never held
    whole. The one atomic write: every writer below (and the streamed stages') goes through it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            yield f.write
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_writer``)."""
    with atomic_writer(path) as write:
        write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows))


def atomic_write_json(path: Path, obj: Any) -> None:
    # allow_nan=False: NaN or Infinity is not JSON; a summary that holds one is a bug to catch here.
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")


def reward_to_json(value: float) -> float | None:
    """NaN (unscored) is written as JSON null."""
    return None if math.isnan(value) else float(value)


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses included): a stage's identity.

    >>> config_hash({"b": 1, "a": [2.0]}) == config_hash({"a": [2.0], "b": 1})
    True
    """
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_record(path: Path, **extra) -> dict:
    """What the manifest says of a file: size, sha256, and rows (JSONL) or shape (.npy)."""
    record = {"bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}
    if path.suffix == ".jsonl" and "rows" not in record:
        record["rows"] = _count_rows(path)
    if path.suffix == ".npy":
        record["shape"] = list(np.load(path, mmap_mode="r").shape)
    return record


def _count_rows(path: Path) -> int:
    """Non-blank lines of a JSONL file, read in 1 MiB blocks (an output may be GBs)."""
    rows, tail = 0, b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            rows += sum(1 for line in lines if line.strip())
    return rows + (1 if tail.strip() else 0)


def check_file(path: Path, record: dict) -> str | None:
    """None when ``path`` matches its record, else what is wrong, in words."""
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return "its record in the manifest is damaged"
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a file"
    if sha256_file(path) == record["sha256"]:
        return None
    if "rows" in record:
        rows = _count_rows(path)
        if rows != record["rows"]:
            return f"{rows} rows, the manifest records {record['rows']}"
    if "shape" in record:
        try:
            shape = list(np.load(path, mmap_mode="r").shape)
        except (ValueError, OSError):
            return "not a readable .npy array"
        if shape != record["shape"]:
            return f"shape {tuple(shape)}, the manifest records {tuple(record['shape'])}"
    return "content differs from the manifest (sha256)"
