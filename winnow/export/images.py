"""The images of an export whose prompts had images, in the form TRL's vision-language
trainers read: an ``images`` column holding each row's images (a list per row, the
``datasets`` Image feature, which ``load_dataset`` decodes to ``PIL.Image`` values), beside
conversational prompts whose messages hold one ``{"type": "image"}`` part per image, in order.

An Arrow column has one type, so in such an export every prompt's message content is a list
of parts (``{"type": "text", "text": ...}`` for text, ``{"type": "image", "text": null}`` for
an image), the form TRL's ``prepare_multimodal_messages`` takes; a text prompt beside them
becomes one text part and an empty ``images`` list. A run without images is exported as
before, byte for byte: none of this applies to it.

The bytes are the run's stored images (``RUN/images/<sha256>.<ext>``), read a batch of rows
at a time (``RunImages``), each checked against its hash as it is read: memory holds one
batch's images, never the run's (10^5 prompts with an image each are gigabytes). An image
shared by many rows is read once per batch and written once per row group, in the column's
dictionary (``writer_options``). A batch holds at most ``BATCH_BYTES`` of image bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from winnow.errors import WinnowError
from winnow.images import read_stored, stored_prompt
from winnow.records import Prompt
from winnow.stream import iter_lines, loads, verified_shard

PART = pa.struct([("type", pa.string()), ("text", pa.string())])
"""A content part: ``{"type": "text", "text": ...}`` or ``{"type": "image", "text": null}``."""
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.list_(PART))]))
"""A conversation whose contents are lists of parts (TRL's conversational vision format)."""
IMAGES = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
"""A row's images as Arrow holds ``datasets``' ``List(Image())``: the encoded file, and its name."""
BATCH_BYTES = 64 << 20
"""Image bytes a batch of rows holds at most (a batch of 8,192 rows of 1 MB images would be 8 GB)."""
DICTIONARY_BYTES = 64 << 20
"""Parquet's dictionary page limit for image configs: large enough that the distinct images of
a row group are each stored once (pyarrow's default, 1 MB, holds a few)."""
BYTES_COLUMN = "images.list.element.bytes"
"""The Parquet column of the images' bytes: no min/max statistics, which would copy two
images into every page header and the footer."""


def writer_options(schema: pa.Schema) -> dict:
    """``pq.ParquetWriter``'s options for a config with images (``{}`` for one without):
    the dictionary sized for images, statistics on every column but the images' bytes."""
    if "images" not in schema.names:
        return {}
    columns = [path for path in _leaves(schema) if path != BYTES_COLUMN]
    return {"dictionary_pagesize_limit": DICTIONARY_BYTES, "write_statistics": columns}


def _leaves(schema: pa.Schema) -> list[str]:
    """The Parquet paths of the leaf columns (a list's items are ``list.element``).

    >>> _leaves(pa.schema([("a", pa.string()), ("images", IMAGES)]))
    ['a', 'images.list.element.bytes', 'images.list.element.path']
    """

    def walk(prefix: str, kind: pa.DataType) -> list[str]:
        if pa.types.is_list(kind):
            return walk(f"{prefix}.list.element", kind.value_type)
        if pa.types.is_struct(kind):
            return [leaf for f in kind for leaf in walk(f"{prefix}.{f.name}", f.type)]
        return [prefix]

    return [leaf for f in schema for leaf in walk(f.name, f.type)]


def run_prompts(run_dir: Path, manifest: dict) -> tuple[list[Prompt], list[tuple[str, ...]]]:
    """The prompts of a finished generate stage (matrix row order), checked, without their
    images' bytes, and beside them each prompt's image paths (``images/<sha256>.<ext>``;
    ``()`` for a prompt without images): ``RunImages`` reads the bytes when a batch needs them."""
    path = run_dir / "generate" / "prompts.jsonl"
    data = verified_shard(path, manifest["files"].get("prompts.jsonl"), stage="generate")
    prompts, paths = [], []
    for lineno, _, line in iter_lines(data):
        row = loads(line, path, lineno)
        paths.append(tuple(row.pop("images", ())))  # popped: stored_prompt reads no bytes
        prompts.append(stored_prompt(run_dir, row))
    return prompts, paths


class RunImages:
    """A run's stored images, read from ``RUN/images`` a batch of rows at a time.

    ``paths``: each prompt's image paths (``run_prompts``), in matrix row order. What is held
    between batches is the paths alone; each batch's distinct images are read once
    (``images.read_stored``: regular files, bytes checked against the sha256 in their name)
    and let go with the batch.
    """

    def __init__(self, run_dir: Path, paths: Sequence[tuple[str, ...]]):
        self.run_dir, self.paths = run_dir, paths
        self.known = {path for row in paths for path in row}
        """Every distinct image of the run's prompts: what a selected row may name."""

    def batch_rows(self, rows: int) -> int:
        """Rows a batch may hold so that its image bytes stay under ``BATCH_BYTES`` (at least
        1), from the stored files' sizes (a file missing here is named when it is read)."""
        size = {path: _size(self.run_dir / path) for path in self.known}
        largest = max((sum(size[p] for p in row) for row in self.paths), default=0)
        return max(1, min(rows, BATCH_BYTES // largest)) if largest else rows

    def check(self, paths: list[str], *, where: str) -> list[str]:
        """``paths`` (a selected row's ``images``), each one of the run's prompts' images."""
        for path in paths:
            if path not in self.known:
                raise WinnowError(f"{where}: field 'images': {path} is not an image of the run's prompts")
        return paths

    def cells(self, rows: Sequence[Sequence[str]]) -> list[list[dict]]:
        """Each row's ``images`` cell (its images' bytes and file names), for one batch of
        rows: each distinct image is read once."""
        data = {path: read_stored(self.run_dir, path).data for path in {p for row in rows for p in row}}
        return [[{"bytes": data[p], "path": Path(p).name} for p in row] for row in rows]

    def column(self, prompt_rows: np.ndarray) -> pa.Array:
        """The ``images`` column of a batch whose rows are of the prompts ``prompt_rows``
        (matrix row indices, shape (B,)): each prompt's cell made once, taken per row."""
        distinct, back = np.unique(prompt_rows, return_inverse=True)
        cells = pa.array(self.cells([self.paths[i] for i in distinct]), type=IMAGES)
        return cells.take(pa.array(back.reshape(-1)))


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def as_parts(messages: list[dict]) -> list[dict]:
    """Messages with every content as a list of parts (a string becomes one text part).

    >>> as_parts([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}, {"role": "assistant", "content": "a cat"}])
    [{'role': 'user', 'content': [{'type': 'image', 'text': None}, {'type': 'text', 'text': 'what?'}]}, {'role': 'assistant', 'content': [{'type': 'text', 'text': 'a cat'}]}]
    """
    out = []
    for m in messages:
        content = m["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        out.append({"role": m["role"], "content": [{"type": p["type"], "text": p.get("text")} for p in parts]})
    return out


def row_with_images(row: dict, images: RunImages, *, where: str) -> dict:
    """A row of ``select/selected.jsonl`` or ``pairs.jsonl`` as an image config holds it, its
    images still paths (checked): ``RunImages.cells`` reads them for the row's batch."""
    row["prompt"] = as_parts(row["prompt"])
    row["images"] = images.check(row.get("images", []), where=where)
    return row


def with_features(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``datasets`` features in its metadata, so that ``load_dataset``
    reads ``images`` as a list of Image values (decoded to ``PIL.Image``), not bytes."""
    import datasets

    features = datasets.Features.from_arrow_schema(schema)
    features["images"] = datasets.List(datasets.Image())
    meta = {"info": {"features": features.to_dict()}}
    return schema.with_metadata({b"huggingface": json.dumps(meta).encode("utf-8")})
