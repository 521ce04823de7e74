"""The images of an export whose prompts had images, in the form TRL's vision-language
trainers read: an ``images`` column holding each row's images (a list per row, the
``datasets`` Image feature, which ``load_dataset`` decodes to ``PIL.Image`` values), beside
conversational prompts whose messages hold one ``{"type": "image"}`` part per image, in order.

An Arrow column has one type, so in such an export every prompt's message content is a list
of parts (``{"type": "text", "text": ...}`` for text, ``{"type": "image", "text": null}`` for
an image), the form TRL's ``prepare_multimodal_messages`` takes; a text prompt beside them
becomes one text part and an empty ``images`` list. A run without images is exported as
before, byte for byte: none of this applies to it.

The bytes are the run's stored images (``RUN/images/<sha256>.<ext>``, each checked against
its hash when the prompts are read back); an image shared by many rows is written once per
row group, in the column's dictionary (``writer_options``). A batch holds at most
``BATCH_BYTES`` of image bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from winnow.errors import WinnowError
from winnow.records import Prompt

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


def stored(prompts: list[Prompt]) -> dict[str, bytes]:
    """Each distinct image of ``prompts`` by its run-dir path (``images/<sha256>.<ext>``)."""
    return {image.path: image.data for p in prompts for image in p.images}


def batch_rows(prompts: list[Prompt], rows: int) -> int:
    """Rows a batch may hold so that its image bytes stay under ``BATCH_BYTES`` (at least 1).

    >>> from winnow.images import Image
    >>> big = Prompt(id="a", messages=({"role": "user", "content": []},), images=(Image("images/x.png", bytes(40 << 20)),))
    >>> batch_rows([big], 8192), batch_rows([Prompt(id="b", text="x")], 8192)
    (1, 8192)
    """
    largest = max((sum(len(i.data) for i in p.images) for p in prompts), default=0)
    return max(1, min(rows, BATCH_BYTES // largest)) if largest else rows


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


def cells(paths: list[str], images: dict[str, bytes], *, where: str) -> list[dict]:
    """A row's ``images`` cell: each path's bytes and file name (``where`` names the row in an error)."""
    out = []
    for path in paths:
        if path not in images:
            raise WinnowError(f"{where}: field 'images': {path} is not an image of the run's prompts")
        out.append({"bytes": images[path], "path": Path(path).name})
    return out


def row_with_images(row: dict, images: dict[str, bytes], *, where: str) -> dict:
    """A row of ``select/selected.jsonl`` or ``pairs.jsonl`` as an image config holds it."""
    row["prompt"] = as_parts(row["prompt"])
    row["images"] = cells(row.get("images", []), images, where=where)
    return row


def with_features(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the ``datasets`` features in its metadata, so that ``load_dataset``
    reads ``images`` as a list of Image values (decoded to ``PIL.Image``), not bytes."""
    import datasets

    features = datasets.Features.from_arrow_schema(schema)
    features["images"] = datasets.List(datasets.Image())
    meta = {"info": {"features": features.to_dict()}}
    return schema.with_metadata({b"huggingface": json.dumps(meta).encode("utf-8")})
