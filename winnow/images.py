"""Images of vision-language prompts: decoded once, addressed by their sha256, stored once.

A prompt's images are ``Image`` values: the path they have in a run dir
(``images/<sha256>.<ext>``, the extension from the decoded format, never from a file name)
and their bytes. Rows name images by that path only, so a run dir holds each image once
however many prompts, samples or stages refer to it, and a row's hash covers its images'
hashes. Images come from a prompts file (a path under the file's folder, or a ``data:`` URL),
from a request (a ``data:`` URL), or back from a run dir (``read_stored``); each is decoded
fully before it is accepted, so an unreadable one is refused with the row that names it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from winnow.config.images import MAX_IMAGE_BYTES  # the one default (``images.max_bytes``)
from winnow.errors import WinnowError
from winnow.records import Prompt, atomic_write_bytes

MAX_IMAGE_PIXELS = 64_000_000
"""Most pixels an image may have (read from its header, before it is decoded): a small file
can decode to gigabytes."""
FOLDER = "images"
"""The run dir's folder of images (one file per distinct image)."""
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff"}
"""Decoded format -> file extension and ``data:`` URL media type (``image/<ext>``, jpeg for jpg)."""


@dataclass(frozen=True)
class Image:
    """One image: its run-dir path (which names its content) and its encoded bytes.

    Two images are equal when their paths are, i.e. when their bytes are.
    """

    path: str
    """``images/<sha256 of the bytes>.<ext>``, relative to the run dir."""
    data: bytes = field(repr=False, compare=False)

    def pil(self):
        """The image decoded as an RGB ``PIL.Image`` (what processors and reward functions take)."""
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(self.data)) as img:
            return img.convert("RGB")

    def data_url(self) -> str:
        """The image as a ``data:`` URL, as OpenAI's ``image_url`` content part carries it."""
        ext = self.path.rsplit(".", 1)[1]
        media = "jpeg" if ext == "jpg" else ext
        return f"data:image/{media};base64,{base64.b64encode(self.data).decode('ascii')}"


def decode(data: bytes, *, name: str, max_bytes: int = MAX_IMAGE_BYTES) -> Image:
    """``data`` checked as an image (at most ``max_bytes``, fully decodable, a format of
    ``EXTENSIONS``); ``name`` says where it came from in the error, which is one line."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if len(data) > max_bytes:
        raise WinnowError(f"{name}: image of {len(data)} bytes, larger than the limit of {max_bytes}")
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise WinnowError(f"{name}: image of {width}x{height} pixels, more than {MAX_IMAGE_PIXELS:,}")
            img.load()  # decode every pixel: a truncated file fails here, not in the backend
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as e:
        raise WinnowError(f"{name}: not a readable image ({' '.join(str(e).split())})") from None
    if fmt not in EXTENSIONS:
        raise WinnowError(f"{name}: image format {fmt} not accepted (use {', '.join(EXTENSIONS)})")
    return Image(path=f"{FOLDER}/{hashlib.sha256(data).hexdigest()}.{EXTENSIONS[fmt]}", data=data)


def from_data_url(url: str, *, name: str, max_bytes: int = MAX_IMAGE_BYTES) -> Image:
    """An image from a ``data:image/...;base64,`` URL (the only URL accepted: no network).

    >>> from_data_url("https://example.com/a.png", name="row 1").path
    Traceback (most recent call last):
    winnow.errors.WinnowError: row 1: only data: URLs of base64 images are accepted, got 'https://example.com/a.png'
    """
    head, _, payload = url.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise WinnowError(f"{name}: only data: URLs of base64 images are accepted, got {url[:40]!r}")
    if len(payload) > max_bytes * 4 // 3 + 4:  # refuse before decoding a huge string
        raise WinnowError(f"{name}: image larger than the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise WinnowError(f"{name}: the data: URL is not valid base64") from None
    return decode(data, name=name, max_bytes=max_bytes)


def from_file(ref: str, *, folder: Path, name: str, outside: bool = False, max_bytes: int = MAX_IMAGE_BYTES) -> Image:
    """An image named by ``ref``, a path relative to ``folder`` (the prompts file's), read as
    a regular file of at most ``max_bytes``. A path that leaves ``folder`` (``..``, an
    absolute path, a link out) is refused unless ``outside``."""
    path = (folder / ref).resolve()
    if not outside and not path.is_relative_to(folder.resolve()):
        raise WinnowError(
            f"{name}: image path {ref!r} is outside the prompts file's folder {folder} "
            "(pass --image-paths-outside, or images: {paths_outside: true} in YAML, to allow it)"
        )
    return decode(_read_bounded(path, name=name, max_bytes=max_bytes), name=name, max_bytes=max_bytes)


def from_reference(ref, *, folder: Path, name: str, outside: bool = False, max_bytes: int = MAX_IMAGE_BYTES) -> Image:
    """An entry of a prompts row's ``images`` column: a ``data:`` URL or a path (``from_file``)."""
    if not isinstance(ref, str) or not ref:
        raise WinnowError(f"{name}: expected a path or a data: URL, got {ref!r}")
    if ref.startswith("data:"):
        return from_data_url(ref, name=name, max_bytes=max_bytes)
    if "://" in ref:
        raise WinnowError(f"{name}: only paths and data: URLs are accepted (no downloads), got {ref[:60]!r}")
    return from_file(ref, folder=folder, name=name, outside=outside, max_bytes=max_bytes)


def store(run_dir: str | Path, prompts: list[Prompt], *, shared: str | Path | None = None) -> int:
    """Write each image of ``prompts`` not yet in ``run_dir/images/`` (atomically, once
    however many prompts hold it); returns how many files were written. A file already there
    is kept when it holds the bytes its name hashes, and written anew when it does not (a
    damaged one is mended by rerunning the stage).

    ``shared``: the run dir that holds the one copy for ``run_dir`` (the run dir an adaptive
    step's folder or a later round's is nested in, or the first evaluated model's folder for
    the others): each image is stored there first and
    hard-linked here, so the disk holds its bytes once while every run dir stays whole on its
    own (``winnow verify``, resume, a copy or move of either read plain files; a copy made
    elsewhere holds its own bytes). Where the file system cannot link, the image is copied."""
    written = 0
    for image in {i.path: i for p in prompts for i in p.images}.values():
        target = Path(run_dir) / image.path
        if _holds(target, image.path):
            continue
        source = Path(shared) / image.path if shared is not None else None
        if source is not None and source != target:
            if not _holds(source, image.path):
                atomic_write_bytes(source, image.data)
            if _link(source, target):
                written += 1
                continue
        atomic_write_bytes(target, image.data)
        written += 1
    return written


def _holds(path: Path, name: str) -> bool:
    """Whether ``path`` is a regular file whose bytes hash to the sha256 in ``name``."""
    return path.is_file() and not path.is_symlink() and _sha256_file(path) == Path(name).stem


def _link(source: Path, target: Path) -> bool:
    """``target`` made a hard link to ``source`` (a temp link renamed into place, so a reader
    never sees half a file); False where the file system refuses links (then nothing changed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.link")
    try:
        temp.unlink(missing_ok=True)
        os.link(source, temp)
        os.replace(temp, target)
    except OSError:
        temp.unlink(missing_ok=True)
        return False
    return True


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def stored_summary(prompts: list[Prompt]) -> dict:
    """What a generate manifest says of the prompts' images: distinct files and their bytes
    (each stored once), and how many prompts hold any; empty when none does.

    >>> stored_summary([Prompt(id="a", text="x")])
    {}
    """
    distinct = {i.path: len(i.data) for p in prompts for i in p.images}
    if not distinct:
        return {}
    with_images = sum(1 for p in prompts if p.images)
    return {"images": {"files": len(distinct), "bytes": sum(distinct.values()), "prompts": with_images}}


def read_stored(run_dir: str | Path, path: str) -> Image:
    """The image a run dir's row names (``images/<sha256>.<ext>``), its bytes checked against
    the hash in its name: a damaged or replaced file is named, never used."""
    parts = Path(path).parts
    if len(parts) != 2 or parts[0] != FOLDER or path.count(".") != 1:
        raise WinnowError(f"{Path(run_dir)}: image path {path!r} is not of the form {FOLDER}/<sha256>.<ext>")
    full = Path(run_dir) / path
    data = _read_bounded(full, name=str(full), max_bytes=1 << 40)
    if hashlib.sha256(data).hexdigest() != Path(path).stem:
        raise WinnowError(f"{full}: damaged (its sha256 is not the one in its name); rerun `winnow generate`")
    return Image(path=path, data=data)


def decoded(per_row: list[tuple[Image, ...]]) -> list[list]:
    """The ``images`` keyword of a reward call: per row, its prompt's images as RGB
    ``PIL.Image`` values ([] for a prompt without images). Each distinct image is decoded
    once per call, so the n rows of one prompt share the same objects: a reward that edits
    an image in place must copy it first."""
    pil: dict[str, object] = {}
    for image in (i for row in per_row for i in row):
        if image.path not in pil:
            pil[image.path] = image.pil()
    return [[pil[i.path] for i in row] for row in per_row]


def openai_messages(prompt: Prompt) -> list[dict]:
    """The prompt's messages as OpenAI's chat API takes them: each ``{"type": "image"}`` part
    becomes ``{"type": "image_url", "image_url": {"url": <data: URL>}}`` of the next image."""
    messages = prompt.as_messages()
    if not prompt.images:
        return messages
    queue = iter(prompt.images)
    for m in messages:
        if isinstance(m["content"], list):
            m["content"] = [
                {"type": "image_url", "image_url": {"url": next(queue).data_url()}} if part["type"] == "image" else part
                for part in m["content"]
            ]
    return messages


def stored_prompt(run_dir: str | Path, row: dict) -> Prompt:
    """The prompt of a row of a run dir's ``generate/prompts.jsonl`` (``Prompt.to_row``'s
    inverse), its images read back from ``run_dir`` (``read_stored``)."""
    columns = row.get("columns") or {}  # the prompt row's other columns (reference answers)
    if "messages" not in row:
        return Prompt(id=row["id"], text=row["prompt"], columns=columns)
    images = tuple(read_stored(run_dir, path) for path in row.get("images", ()))
    return Prompt(id=row["id"], messages=tuple(row["messages"]), columns=columns, images=images)


def _read_bounded(path: Path, *, name: str, max_bytes: int) -> bytes:
    """A regular file's bytes (no FIFO or device), refused when larger than ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise WinnowError(f"{name}: cannot read image {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise WinnowError(f"{name}: {path} is not a regular file")
        data = f.read(min(info.st_size, max_bytes) + 1)  # one byte more shows a file that grew
        if info.st_size > max_bytes or len(data) > max_bytes:
            raise WinnowError(
                f"{name}: image of {max(info.st_size, len(data))} bytes, larger than the limit of {max_bytes}"
            )
        return data
