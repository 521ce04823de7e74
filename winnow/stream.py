"""Reading a run directory one shard at a time, keeping numbers and not texts.

A stage that holds every completion row in one process needs memory in proportion to the
text of the whole run (about 2 KB a completion once parsed). The readers here never hold
more than one shard's rows: a scan of the generate shards keeps, per cell of the (M, C)
matrix, only numbers (where the row lies on disk, its token count, whether it was cut,
a 64-bit hash of its text), and a row is read back from its shard by offset when a stage
writes it out (``CompletionIndex.row``).

Memory: about 30 bytes a cell, so 16 million completions (10^6 prompts x 16) take about
0.5 GB of arrays, whatever the texts' length.

JSONL stays the shard format (readable by ``jq``, ``datasets`` and ``pandas``); lines are
parsed with msgspec, 11x faster than the json module on completion rows, and 36x when
decoded into a typed struct that leaves the text out, which is how a scan that needs no
text reads them (``benchmarks/bench_scale.py --formats``). Writers keep the json module,
so files are byte-identical to those written before.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from winnow.errors import WinnowError, where
from winnow.executors import shard_file
from winnow.images import stored_prompt
from winnow.records import BOM, Prompt, atomic_writer, check_file
from winnow.replies import ended_on_its_own
from winnow.rundir import completed_manifest, verified_bytes

NO_ROW = -1
"""``CompletionIndex.shard`` of a cell with no completion (a prompt too long for a model)."""


def loads(line: bytes, path: Path | str, lineno: int) -> dict:
    """One JSONL line as an object; bad JSON names the file and line."""
    try:
        obj = _DECODE(line)
    except msgspec.DecodeError as e:
        raise WinnowError(f"{where(path, lineno)}: malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise WinnowError(f"{where(path, lineno)}: expected a JSON object, got {type(obj).__name__}")
    return obj


_DECODE = msgspec.json.Decoder().decode


class _Numbers(msgspec.Struct):
    """What a scan without texts reads of a completion row (the text is skipped, not decoded)."""

    prompt_id: str
    sample_index: int
    num_tokens: int
    finish_reason: str


class _NumbersAndText(_Numbers):
    text: str


def _decode_as(kind: type, line: bytes, path: Path, lineno: int):
    try:
        return msgspec.json.decode(line, type=kind)
    except msgspec.DecodeError as e:  # ValidationError is one: a wrong type names its field
        raise WinnowError(f"{where(path, lineno)}: {e}; rerun `winnow generate`") from None


def iter_lines(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, line) of each non-blank line of JSONL bytes."""
    offset = len(BOM) if data.startswith(BOM) else 0
    lineno = 0
    size = len(data)
    while offset < size:
        end = data.find(b"\n", offset)
        end = size if end < 0 else end + 1
        lineno += 1
        line = data[offset:end]
        if line.strip():
            yield lineno, offset, line
        offset = end


def verified_shard(path: Path, record: dict | None, *, stage: str) -> bytes:
    """A shard's bytes, read once and checked against its record (sha256)."""
    if record is not None and isinstance(record.get("sha256"), str) and path.is_file():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == record["sha256"]:
            return data
    return verified_bytes(path, record, stage=stage)  # names what is wrong


def iter_shard_rows(folder: Path, names: list[str], records: dict, *, stage: str) -> Iterator[dict]:
    """The rows of recorded shards ``names`` in order, one shard in memory at a time."""
    for name in names:
        path = shard_file(folder, name)
        data = verified_shard(path, records.get(path.name), stage=stage)
        for lineno, _, line in iter_lines(data):
            yield loads(line, path, lineno)


def text_hash(text: str) -> int:
    """64-bit hash of a completion's text: equal texts, equal hashes (dedup by hash, not text)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def jsonl_line(row: dict) -> bytes:
    """One row as records.atomic_write_jsonl writes it (json module, so bytes do not change)."""
    return (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def load_prompts(run_dir: str | Path, manifest: dict) -> list[Prompt]:
    """The prompts of a finished generate stage (matrix row order), checked."""
    folder = Path(run_dir) / "generate"
    path = folder / "prompts.jsonl"
    data = verified_shard(path, manifest["files"].get("prompts.jsonl"), stage="generate")
    out = []
    for lineno, _, line in iter_lines(data):
        out.append(stored_prompt(run_dir, loads(line, path, lineno)))
    return out


def generate_shards(run_dir: str | Path, manifest: dict) -> list[str]:
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not isinstance(manifest.get("num_columns"), int):
        folder = Path(run_dir) / "generate"
        raise WinnowError(f"{folder / 'manifest.json'}: damaged (no shard list); rerun `winnow generate` to rebuild it")
    return shards


@dataclass
class CompletionIndex:
    """Where each completion of a generate stage lies, and its numbers; no texts.

    Every array is (M, C): row i is prompt i of ``generate/prompts.jsonl``, column j is
    sample_index j. ``order`` lists the filled cells (flat index i*C+j) in the order the
    rows come in the shards, so sums over completions add up in the same order as a pass
    over the rows would.
    """

    folder: Path
    prompts: list[Prompt]
    shards: list[Path]
    shard: np.ndarray  # int32, index into ``shards``; NO_ROW where no completion
    offset: np.ndarray  # int64, byte offset of the row's line
    length: np.ndarray  # int32, bytes of the line
    num_tokens: np.ndarray  # int32
    cut: np.ndarray  # bool: not ended on its own (finish_reason other than "stop": "length", "content_filter"...)
    hashes: np.ndarray | None  # uint64 text hashes (``text_hash``), when asked for
    order: np.ndarray  # int64 (K,)
    _files: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @property
    def num_columns(self) -> int:
        return int(self.shard.shape[1])

    def __len__(self) -> int:
        return int(self.order.size)

    def row(self, i: int, j: int) -> dict | None:
        """The completion row of cell (i, j), read from its shard; None when there is none."""
        s = int(self.shard[i, j])
        if s == NO_ROW:
            return None
        return self._read(s, int(self.offset[i, j]), int(self.length[i, j]))

    def _read(self, s: int, offset: int, length: int) -> dict:
        fd = self._files.get(s)
        if fd is None:
            if len(self._files) >= 64:  # a few descriptors, not one per shard
                os.close(self._files.popitem(last=False)[1])
            fd = os.open(self.shards[s], os.O_RDONLY)
            self._files[s] = fd
        else:
            self._files.move_to_end(s)
        return loads(os.pread(fd, length, offset), self.shards[s], 0)

    def close(self) -> None:
        while self._files:
            os.close(self._files.popitem()[1])

    def __del__(self) -> None:  # descriptors of an index dropped without close()
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing to report to
            pass


def scan_generations(run_dir: str | Path, *, hashes: bool = False) -> tuple[CompletionIndex, dict]:
    """Index a finished generate stage in one pass over its shards: (index, manifest).

    hashes: also hash every text (for dedup and duplicate counts).
    """
    manifest = completed_manifest(run_dir, "generate")
    folder = Path(run_dir) / "generate"
    prompts = load_prompts(run_dir, manifest)
    names = generate_shards(run_dir, manifest)
    m, c = len(prompts), int(manifest["num_columns"])
    row_of = {p.id: i for i, p in enumerate(prompts)}
    shard = np.full((m, c), NO_ROW, dtype=np.int32)
    offset = np.zeros((m, c), dtype=np.int64)
    length = np.zeros((m, c), dtype=np.int32)
    tokens = np.zeros((m, c), dtype=np.int32)
    cut = np.zeros((m, c), dtype=bool)
    text_hashes = np.zeros((m, c), dtype=np.uint64) if hashes else None
    order = np.empty(m * c, dtype=np.int64)  # a list of Python ints would take 36 bytes each
    filled = 0
    paths = []
    kind = _NumbersAndText if hashes else _Numbers
    for s, name in enumerate(names):
        path = shard_file(folder, name)
        paths.append(path)
        data = verified_shard(path, manifest["files"].get(path.name), stage="generate")
        for lineno, start, line in iter_lines(data):
            row = _decode_as(kind, line, path, lineno)
            i, j = row_of.get(row.prompt_id), row.sample_index
            if i is None or not 0 <= j < c:
                raise WinnowError(
                    f"{where(path, lineno)}: key ({row.prompt_id!r}, {j!r}) "
                    f"is not a cell of this run's {m} x {c} matrix; rerun `winnow generate`"
                )
            shard[i, j], offset[i, j], length[i, j] = s, start, len(line)
            tokens[i, j] = row.num_tokens
            cut[i, j] = not ended_on_its_own(row.finish_reason)
            if text_hashes is not None:
                text_hashes[i, j] = text_hash(row.text)
            if filled == order.size:  # more rows than cells: a repeated key
                raise WinnowError(f"{where(path, lineno)}: more rows than the {m} x {c} matrix has cells")
            order[filled] = i * c + j
            filled += 1
    index = CompletionIndex(
        folder, prompts, paths, shard, offset, length, tokens, cut, text_hashes, order[:filled].copy()
    )
    return index, manifest


def dedup_by_hash(rewards: np.ndarray, hashes: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``winnow.select.dedup`` on text hashes: rewards with a repeated text in its row set
    to NaN, the earliest sample kept. All (M, C); returns a new float64 matrix."""
    r = np.array(rewards, dtype=float, copy=True)
    if r.size == 0:
        return r
    # Sort each row by hash, stably, so equal texts sit together earliest column first.
    key = np.where(present, hashes, np.uint64(0))
    order = np.argsort(key, axis=1, kind="stable")
    sorted_key = np.take_along_axis(key, order, axis=1)
    sorted_present = np.take_along_axis(present, order, axis=1)
    repeat = np.zeros_like(present)
    same = (sorted_key[:, 1:] == sorted_key[:, :-1]) & sorted_present[:, 1:] & sorted_present[:, :-1]
    np.put_along_axis(repeat, order[:, 1:], same, axis=1)
    r[repeat] = np.nan
    return r


def write_rows(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as JSONL, one at a time, atomically; returns the number written."""
    count = 0
    with atomic_writer(path) as write:
        for row in rows:
            write(jsonl_line(row))
            count += 1
    return count


def check_jsonl(path: Path, record: dict, *, stage: str) -> None:
    """Check a (possibly large) recorded file without reading it whole into memory."""
    problem = check_file(path, record)
    if problem:
        raise WinnowError(f"{path}: {problem}; rerun `winnow {stage}` on this run dir to remake it")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSONL file read line by line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if raw.strip():
                yield lineno, loads(raw, path, lineno)


def load_scored_index(run_dir: str | Path, *, hashes: bool = False) -> tuple[CompletionIndex, np.ndarray, dict]:
    """What selection reads, streamed: the completion index, the reward matrix float64 (M, C)
    and the score manifest (``winnow.rundir.load_scored`` without the texts)."""
    index, generated = scan_generations(run_dir, hashes=hashes)
    manifest = completed_manifest(run_dir, "score")
    path = Path(run_dir) / "score" / "rewards.npy"
    verified_shard(path, manifest["files"].get("rewards.npy"), stage="score")
    rewards = np.load(path)
    expected = (len(index.prompts), generated["num_columns"])
    if rewards.shape != expected:  # recorded, yet not this generate stage's shape: score ran on another one
        raise WinnowError(f"{path}: shape {rewards.shape}, expected {expected}; rerun `winnow score` to remake it")
    return index, rewards, manifest


class Cells:
    """The completion indexes of one or more rounds side by side, as one (M, C_1 + ... + C_R)
    set of cells: the numbers of every cell, and its row read back on demand."""

    def __init__(self, parts: list[CompletionIndex]):
        self.parts = parts
        self.prompts = parts[0].prompts
        self.starts = np.cumsum([0] + [p.num_columns for p in parts])
        join = (lambda arrays: arrays[0]) if len(parts) == 1 else (lambda arrays: np.concatenate(arrays, axis=1))
        self.present = join([p.shard != NO_ROW for p in parts])
        self.cut = join([p.cut for p in parts])
        self.num_tokens = join([p.num_tokens for p in parts])
        self.size = join([p.length for p in parts])
        hashes = [p.hashes for p in parts]
        self.hashes = join(hashes) if all(h is not None for h in hashes) else None
        self.row_of = {p.id: i for i, p in enumerate(self.prompts)}

    def row(self, i: int, j: int) -> dict | None:
        k = int(np.searchsorted(self.starts, j, side="right")) - 1
        return self.parts[k].row(i, j - int(self.starts[k]))

    def by_key(self) -> KeyView:
        return KeyView(self)

    def close(self) -> None:
        for p in self.parts:
            p.close()


class KeyView(Mapping):
    """(prompt_id, column) -> completion row, read from disk when asked: the ``by_key`` dict
    the selection code takes, without the texts in memory."""

    def __init__(self, cells: Cells):
        self.cells = cells

    def __getitem__(self, key: tuple[str, int]) -> dict:
        prompt_id, j = key
        i = self.cells.row_of.get(prompt_id)
        row = None if i is None or not 0 <= j < self.cells.present.shape[1] else self.cells.row(i, j)
        if row is None:
            raise KeyError(key)
        return row

    def __iter__(self) -> Iterator[tuple[str, int]]:
        ids = [p.id for p in self.cells.prompts]
        for i, j in zip(*np.nonzero(self.cells.present), strict=True):
            yield ids[int(i)], int(j)

    def __len__(self) -> int:
        return int(self.cells.present.sum())
