"""Training a vision-language model on rows that carry images, in TRL's format.

A row of ``select/selected.jsonl`` or ``select/pairs.jsonl`` names its images by path
relative to the run dir, each stored once under its sha256 (``"images":
["images/<sha256>.png"]``), with one ``{"type": "image"}`` placeholder for each in its prompt's
messages. Before any model loads, every path is checked and bounded (``image_paths``); the
dataset then holds the checked paths and each image is decoded only when its batch is
collated, so the images of a large run are never all in memory. The model is loaded as
generate loads it (``models.load_vision_lm``) and its processor is TRL's ``processing_class``: TRL's
vision collator turns the messages and images into ``pixel_values`` and token ids, with the
loss on completion tokens only, as for text.

Rows without images on a text model take the text path unchanged (``dataset``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path, PurePosixPath

from winnow import images
from winnow.errors import WinnowError, where
from winnow.images import FOLDER, read_stored
from winnow.images import Image as Stored

MAX_STORED_BYTES = 64 << 20
"""A stored image file above this size is refused before it is read (generate stores images
of at most ``--max-image-bytes``, 20 MiB unless raised)."""


def image_paths(rows: list[dict], run_dir: str | Path, source: Path) -> list[dict]:
    """``rows`` with each ``images`` entry replaced by its checked absolute path.

    rows: the rows of ``source`` (a file winnow wrote, one row a line), in order; a row
    without ``images`` (or with ``[]``) is returned as it is. Each path must be
    ``images/<name>`` in ``run_dir``, a regular file (no link) of at most
    ``MAX_STORED_BYTES``, whose bytes hash to the sha256 its name holds, and an image
    of at most ``images.MAX_IMAGE_PIXELS``; the row's prompt holds one ``{"type": "image"}`` part for
    each (``placeholders``). Raises WinnowError naming the file, line and field, e.g.
    ``select/selected.jsonl:3: field 'images[0]': images/ab.png not found in run``.
    """
    folder = Path(run_dir)
    checked: dict[str, str] = {}  # an image many rows share is read once
    out = []
    for lineno, row in enumerate(rows, start=1):
        names = row.get("images")
        if not names:
            out.append(row)
            continue
        if not isinstance(names, list):
            raise WinnowError(f"{where(source, lineno, 'images')}: expected a list of paths, got {names!r}")
        if (found := placeholders(row.get("prompt"))) != len(names):
            raise WinnowError(
                f'{where(source, lineno, "prompt")}: {found} {{"type": "image"}} part(s) for {len(names)} '
                "image(s); the images fill the prompt's image parts in order, one each"
            )
        for j, name in enumerate(names):
            if not isinstance(name, str) or name not in checked:
                checked[name] = str(checked_image(folder, name, where(source, lineno, f"images[{j}]")))
        out.append({**row, "images": [checked[name] for name in names]})
    return out


def placeholders(prompt: object) -> int:
    """How many ``{"type": "image"}`` parts the messages ``prompt`` hold (0 for anything else).

    >>> placeholders([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a"}]}])
    1
    >>> placeholders([{"role": "user", "content": "no parts"}])
    0
    """
    if not isinstance(prompt, list):
        return 0
    contents = [m.get("content") for m in prompt if isinstance(m, dict)]
    return sum(
        1
        for c in contents
        if isinstance(c, list)
        for part in c
        if isinstance(part, dict) and part.get("type") == "image"
    )


def checked_image(run_dir: Path, name: object, place: str) -> Path:
    """The absolute path of the stored image ``name`` (``images/<sha256>.<ext>``), read with
    bounds and its bytes checked against its name (``images.read_stored``); ``place``
    prefixes the one-line WinnowError it raises otherwise."""
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if len(parts) != 2 or parts[0] != FOLDER or parts[1] in (".", ".."):
        raise WinnowError(f"{place}: {name!r} is not a path {FOLDER}/<sha256>.<ext> in the run dir")
    path = run_dir / FOLDER / parts[1]
    try:
        info = os.lstat(path)
        link = (run_dir / FOLDER).is_symlink()
    except FileNotFoundError:
        raise WinnowError(f"{place}: {name} not found in {run_dir}") from None
    if link or not stat.S_ISREG(info.st_mode):
        raise WinnowError(f"{place}: {name} in {run_dir} is not a regular file (links are not followed)")
    if info.st_size > MAX_STORED_BYTES:
        raise WinnowError(f"{place}: {name} is {info.st_size} bytes, over the {MAX_STORED_BYTES} allowed")
    try:
        read_stored(run_dir, str(name))
    except WinnowError as e:
        raise WinnowError(f"{place}: {e}") from None
    check_pixels(path, str(name), place)
    return path.resolve()


def check_pixels(path: Path, name: str, place: str) -> None:
    """Refuse a file PIL cannot read as an image, or one over ``images.MAX_IMAGE_PIXELS``
    (the limit prompts are read under), read from its header: nothing is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise WinnowError(f"{place}: {name} is not a readable image ({' '.join(str(e).split())})") from None
    if width * height > images.MAX_IMAGE_PIXELS:
        raise WinnowError(f"{place}: {name} is {width}x{height} pixels, over the {images.MAX_IMAGE_PIXELS} allowed")


def dataset(columns: list[dict], *, vision: bool, source: str, model: Path):
    """The ``datasets.Dataset`` TRL trains on.

    columns: one dict a row of TRL's columns (``prompt``, ``completion`` or ``chosen`` and
    ``rejected``), with ``images`` (checked absolute paths, ``image_paths``) where the row
    has any. A text model: the columns as they are, without ``images`` (refused, naming
    ``source``, when a row has some). A vision-language model: every row gets ``images``
    (``[]`` where it has none), decoded when a batch reads them (``decoded_images``), and
    every message's content is a list of parts (Arrow needs one type a column, and TRL's
    collator fills the ``{"type": "image"}`` parts in order).
    """
    import datasets

    if not vision:
        with_images = sum(1 for row in columns if row.get("images"))
        if with_images:
            raise WinnowError(
                f"{where(source, field='images')}: {with_images} of {len(columns)} rows carry images but {model} is "
                "a text-only model (its config has no vision_config); give a vision-language model"
            )
        return datasets.Dataset.from_list([{k: v for k, v in row.items() if k != "images"} for row in columns])
    rows = [{k: (v if k == "images" else as_parts(v)) for k, v in {"images": [], **row}.items()} for row in columns]
    return datasets.Dataset.from_list(rows).with_transform(decoded_images)


def decoded_images(batch: dict) -> dict:
    """A batch of the dataset (column -> values) whose ``images`` (per row, checked paths)
    are decoded as generate and the rewards decode them (``images.Image.pil``: RGB, an alpha
    channel dropped), so the model learns from the pixels it sampled from; a processor's own
    conversion would put transparent pixels on white instead."""
    rows = batch["images"]
    return {**batch, "images": [[Stored(path=p, data=Path(p).read_bytes()).pil() for p in row] for row in rows]}


def as_parts(messages: list[dict]) -> list[dict]:
    """Messages whose string contents are turned into one text part each.

    >>> as_parts([{"role": "user", "content": "hi"}, {"role": "user", "content": [{"type": "image"}]}])
    [{'role': 'user', 'content': [{'type': 'text', 'text': 'hi'}]}, {'role': 'user', 'content': [{'type': 'image'}]}]
    """
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m.get("content"), str) else m
        for m in messages
    ]


IMAGE_TOKENS_CUT = ("Image features and image tokens do not match", "image placeholder tokens")
"""What transformers' vision-language models and TRL's trainers say when truncation cut
image tokens out of a prompt."""


@contextlib.contextmanager
def image_tokens_kept(section: str, max_length: int):
    """Turn the error a model raises when ``max_length`` cut a prompt's image tokens (its
    image features then outnumber them) into one line naming the option."""
    try:
        yield
    except ValueError as e:
        if not any(words in str(e) for words in IMAGE_TOKENS_CUT):
            raise
        raise WinnowError(
            f"{section}.max_length: {max_length} tokens cut off the image tokens of a prompt; raise --max-length"
        ) from None
