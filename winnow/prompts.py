"""Reading prompts: JSONL with line-level errors, or Parquet/JSON/saved datasets via ``datasets``.

Rows are ``{"id"?, "prompt": str}`` or ``{"id"?, "messages": [{"role", "content"}, ...]}``.
A message's content is a string or a list of content parts: ``{"type": "text", "text": ...}``
and images, in either form users have: TRL's ``{"type": "image"}`` placeholders with the row's
``images`` column (paths relative to the prompts file's folder, or ``data:`` URLs), or OpenAI's
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``. Both are stored
in TRL's form (``winnow.images``); a text prompt with images becomes one user message whose
images come before the text, as TRL places them.
Every other column (a reference answer, unit tests, instructions to check) is kept with the
prompt and reaches reward functions as a keyword argument, one list per column, as TRL
passes dataset columns; a column named like an argument of that call is refused.
A row without an id gets ``row-<index>`` (its 0-based position), which is stable across
reads of the same file; duplicate ids are an error, because grouping by a non-unique key
silently merges prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow import images as img
from winnow.errors import WinnowError, where
from winnow.records import Prompt, read_jsonl

ROLES = ("system", "user", "assistant")
"""Chat roles a prompt may hold; a chat template would silently drop any other."""
RESERVED_COLUMNS = ("prompts", "completions", "prompt_ids", "sample_indices")
"""Names reward functions already receive: a column so named would collide with them."""


@dataclass(frozen=True)
class ImageRules:
    """Where a prompts file's images may come from, and how large they may be."""

    folder: Path
    """The prompts file's folder: image paths are relative to it."""
    outside: bool = False
    """Accept image paths that lead outside ``folder`` (off: a prompts file names only its own files)."""
    max_bytes: int = img.MAX_IMAGE_BYTES
    """Largest image accepted, in bytes of the encoded file."""


def load_prompts(
    path: str | Path,
    *,
    prompt_column: str = "prompt",
    id_column: str = "id",
    split: str | None = None,
    image_paths_outside: bool = False,
    max_image_bytes: int = img.MAX_IMAGE_BYTES,
) -> list[Prompt]:
    """Load prompts from ``path`` in file order. Raises WinnowError naming file, line and field.

    Images are read and decoded here, before any work (``ImageRules`` for the two options)."""
    path = Path(path)
    if max_image_bytes < 1:
        raise WinnowError(f"--max-image-bytes must be at least 1, got {max_image_bytes}")
    rules = ImageRules(path.parent, outside=image_paths_outside, max_bytes=max_image_bytes)
    if not path.exists():
        raise WinnowError(f"prompts file does not exist: {path}")
    if not (path.is_file() or path.is_dir()):  # a FIFO or device would block or never end
        raise WinnowError(f"{path}: not a regular file (nor a saved dataset folder)")
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
    else:
        rows = _dataset_rows(path, split)
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for index, (line, row) in enumerate(rows):
        prompt = _parse_row(row, index, path, line, prompt_column, id_column, rules)
        if prompt.id in seen:
            raise WinnowError(
                f"{where(path, line, id_column)}: duplicate id {prompt.id!r} (first seen on line {seen[prompt.id]})"
            )
        seen[prompt.id] = line
        prompts.append(prompt)
    if not prompts:
        raise WinnowError(f"{path}: no prompts found")
    _check_id_column_used(path, prompts, id_column)
    return prompts


def prompt_from_row(
    row: dict, index: int, *, image_paths_outside: bool = False, max_image_bytes: int = img.MAX_IMAGE_BYTES
) -> Prompt:
    """One row of the prompts-file shape given in memory (``winnow.run(..., [{"id": "x1",
    "prompt": "...", "answer": "72"}])``), read as ``load_prompts`` reads a line (its image
    paths relative to the working folder): other columns kept; no id gives ``row-<index>``;
    an error names ``prompts[index]`` and the field.

    >>> prompt_from_row({"id": "x1", "prompt": "2+2?", "answer": "4"}, 0)
    Prompt(id='x1', text='2+2?', messages=None, columns={'answer': '4'}, images=())
    """
    rules = ImageRules(Path.cwd(), outside=image_paths_outside, max_bytes=max_image_bytes)
    return _parse_row(row, index, f"prompts[{index}]", None, "prompt", "id", rules)


def chat_with_images(
    messages: list, *, id: str, name: str | None = None, max_image_bytes: int = img.MAX_IMAGE_BYTES
) -> Prompt:
    """Chat messages whose content may be parts (OpenAI's form: images as ``image_url``
    parts with ``data:`` URLs) as the prompt ``id`` in the stored form; a bad message or
    image raises WinnowError naming ``name`` (default: the id) and the field."""
    rules = ImageRules(Path.cwd(), max_bytes=max_image_bytes)  # no images column: no paths to resolve
    parsed, inline = _parse_messages(messages, name or id, None, rules)
    return Prompt(id=id, messages=parsed, images=inline)


def _check_id_column_used(path: Path, prompts: list[Prompt], id_column: str) -> None:
    """An id column named by the user that no row has is a typo, not a request for row-N ids."""
    if id_column != "id" and all(p.id == f"row-{i}" for i, p in enumerate(prompts)):
        raise WinnowError(f"{path}: --id-column {id_column!r}: no row has this column")


def _dataset_rows(path: Path, split: str | None):
    """Rows of a Parquet/JSON file or a ``save_to_disk`` folder; 'line' is the 1-based row."""
    import datasets

    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        elif path.suffix == ".parquet":
            ds = datasets.load_dataset("parquet", data_files=str(path))
        elif path.suffix == ".json":
            ds = datasets.load_dataset("json", data_files=str(path))
        else:
            raise WinnowError(f"{path}: unknown prompts format (use .jsonl, .json, .parquet or a dataset folder)")
    except WinnowError:
        raise
    except Exception as e:  # noqa: BLE001 -- datasets raises many types; the user needs the file named
        raise WinnowError(f"{path}: could not read as a dataset: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        name = split or ("train" if "train" in ds else next(iter(ds)))
        if name not in ds:
            raise WinnowError(f"{path}: no split {name!r} (have {sorted(ds)})")
        ds = ds[name]
    for i, row in enumerate(ds):
        yield i + 1, row


def _parse_row(
    row: dict, index: int, path: Path | str, line: int | None, prompt_column: str, id_column: str, rules: ImageRules
) -> Prompt:
    raw_id = row.get(id_column)
    if raw_id is None:
        pid = f"row-{index}"
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id) != "":
        pid = str(raw_id)
    else:
        raise WinnowError(f"{where(path, line, id_column)}: id must be a non-empty string or integer, got {raw_id!r}")

    columns = _other_columns(row, path, line, consumed={id_column, prompt_column, "messages", "images"})
    listed = _listed_images(row.get("images"), path, line, rules)
    has_text = prompt_column != "messages" and row.get(prompt_column) is not None
    if has_text and row.get("messages") is not None:
        raise WinnowError(
            f"{where(path, line)}: both '{prompt_column}' and 'messages' given; a row holds one or the other"
        )
    if has_text:
        text = row[prompt_column]
        if not isinstance(text, str):
            raise WinnowError(f"{where(path, line, prompt_column)}: expected a string, got {type(text).__name__}")
        if not text.strip():
            raise WinnowError(f"{where(path, line, prompt_column)}: prompt is empty")
        if listed:  # TRL's place for images a prompt does not place: before the text
            parts = [*({"type": "image"} for _ in listed), _text_part(text)]
            return Prompt(id=pid, messages=({"role": "user", "content": parts},), columns=columns, images=listed)
        return Prompt(id=pid, text=text, columns=columns)
    if row.get("messages") is not None:
        messages, inline = _parse_messages(row["messages"], path, line, rules)
        return Prompt(id=pid, messages=messages, columns=columns, images=_placed(messages, listed, inline, path, line))
    raise WinnowError(f"{where(path, line, prompt_column)}: missing prompt (need '{prompt_column}' or 'messages')")


def _text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def _listed_images(refs, path: Path | str, line: int | None, rules: ImageRules) -> tuple:
    """The row's ``images`` column (TRL's form) read and checked; () when absent."""
    if refs is None:
        return ()
    if not isinstance(refs, list):
        raise WinnowError(f"{where(path, line, 'images')}: expected a list of image paths or data: URLs")
    return tuple(
        img.from_reference(
            ref,
            folder=rules.folder,
            name=where(path, line, f"images[{i}]"),
            outside=rules.outside,
            max_bytes=rules.max_bytes,
        )
        for i, ref in enumerate(refs)
    )


def _placed(messages: tuple[dict, ...], listed: tuple, inline: tuple, path: Path | str, line: int | None) -> tuple:
    """The row's images in placeholder order: those of the ``images`` column (one per
    ``{"type": "image"}`` part) or those given inline as ``image_url`` parts, never both."""
    if not listed:
        return inline
    if inline:
        raise WinnowError(
            f"{where(path, line, 'images')}: the row also has image_url parts; give images one way, not both"
        )
    slots = sum(
        1 for m in messages if isinstance(m["content"], list) for part in m["content"] if part["type"] == "image"
    )
    if slots != len(listed):
        raise WinnowError(
            f"{where(path, line, 'images')}: {len(listed)} images but {slots} {{'type': 'image'}} parts in messages"
        )
    return listed


def _other_columns(row: dict, path: Path | str, line: int | None, consumed: set[str]) -> dict[str, Any]:
    """The row's columns besides id and prompt, in file order; each must be JSON."""
    columns = {}
    for name, value in row.items():
        if name in consumed:
            continue
        if name in RESERVED_COLUMNS:
            raise WinnowError(
                f"{where(path, line, name)}: column name is reserved (reward functions receive "
                f"{', '.join(RESERVED_COLUMNS)} as arguments); rename the column"
            )
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise WinnowError(
                f"{where(path, line, name)}: value is not JSON ({type(value).__name__}: {e}); "
                "columns reach reward functions and run files as JSON"
            ) from None
        columns[name] = value
    return columns


def _parse_messages(messages, path: Path | str, line: int | None, rules: ImageRules) -> tuple[tuple[dict, ...], tuple]:
    """(messages, images given inline as ``image_url`` parts, in order); each message's
    content a string or a list of text and ``{"type": "image"}`` parts."""
    if not isinstance(messages, list) or not messages:
        raise WinnowError(f"{where(path, line, 'messages')}: expected a non-empty list of messages")
    parsed: list[dict] = []
    inline: list[img.Image] = []
    for i, m in enumerate(messages):
        ok = isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), (str, list))
        if not ok:
            raise WinnowError(
                f"{where(path, line, f'messages[{i}]')}: expected {{'role': str, 'content': str or list of parts}}"
            )
        if m["role"] not in ROLES:
            raise WinnowError(
                f"{where(path, line, f'messages[{i}]')}: unknown role {m['role']!r} (use {', '.join(ROLES)})"
            )
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise WinnowError(
                f"{where(path, line, f'messages[{i}]')}: unknown key {extra[0]!r} (a message has role and content)"
            )
        content = m["content"]
        if isinstance(content, list):
            content = [
                _part(p, where(path, line, f"messages[{i}].content[{k}]"), rules, inline) for k, p in enumerate(content)
            ]
        parsed.append({"role": m["role"], "content": content})
    if not any(_has_content(m["content"]) for m in parsed):
        raise WinnowError(f"{where(path, line, 'messages')}: all messages are empty")
    return tuple(parsed), tuple(inline)


def _part(part, name: str, rules: ImageRules, inline: list) -> dict:
    """One content part in the stored form; an ``image_url`` part's image is appended to ``inline``."""
    kind = part.get("type") if isinstance(part, dict) else None
    keys = set(part) if isinstance(part, dict) else set()
    if kind == "text" and keys == {"type", "text"} and isinstance(part["text"], str):
        return _text_part(part["text"])
    if kind == "image" and keys <= {"type", "image"} and part.get("image") is None:  # TRL writes "image": None
        return {"type": "image"}
    if kind == "image_url" and keys == {"type", "image_url"}:
        url = part["image_url"].get("url") if isinstance(part["image_url"], dict) else None
        if not isinstance(url, str) or set(part["image_url"]) - {"url", "detail"}:
            raise WinnowError(f"{name}: expected {{'type': 'image_url', 'image_url': {{'url': 'data:...'}}}}")
        if part["image_url"].get("detail", "auto") != "auto":  # a resolution the processor decides, not the row
            raise WinnowError(f"{name}: image_url detail {part['image_url']['detail']!r} is not supported (use auto)")
        inline.append(img.from_data_url(url, name=name, max_bytes=rules.max_bytes))
        return {"type": "image"}
    raise WinnowError(
        f"{name}: expected a content part {{'type': 'text', 'text': str}}, {{'type': 'image'}} "
        "or {'type': 'image_url', 'image_url': {'url': ...}}"
    )


def _has_content(content: str | list[dict]) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    return any(p["type"] == "image" or p["text"].strip() for p in content)
