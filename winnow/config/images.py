"""``images``: where a prompts file's images may come from, and how large they may be."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from winnow.config.fields import bounded, check_fields

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Largest image accepted by default (bytes of the encoded file; OpenAI's limit per image).
The one value: ``winnow.images`` takes it from here for requests and the Python API."""


@dataclass
class ImagesConfig:
    """``images``: how a prompts file's images are read (when the prompts are loaded, before
    any work), by every command that reads prompts.

    Not part of any stage's config hash: these options decide which prompts files are
    accepted, not what is sampled from an accepted one. What was accepted is hashed already:
    each image's sha256 is in its path, which is in the prompts' hash (the generate stage's
    ``prompts_hash``), so a rerun under other limits that accepts the same images samples
    the same rows, and one that would read other bytes is refused as a changed config."""

    section: ClassVar[str] = "images"

    paths_outside: bool = False
    """Accept image paths that lead outside the prompts file's folder (``..``, an absolute
    path, a link out); off, a prompts file names only files under its own folder."""
    max_bytes: int = bounded(MAX_IMAGE_BYTES, ge=1)
    """Largest image a prompt may hold, in bytes of its encoded file (20 MiB, OpenAI's limit
    per image); a larger one is refused naming its row."""

    def validate(self) -> None:
        check_fields(self)
