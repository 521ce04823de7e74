"""``export``: what ``winnow export`` writes of a finished run (a dataset folder with its card,
or the fine-tuned checkpoint with its model card) and where it uploads it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from winnow.config.fields import check_fields
from winnow.errors import WinnowError

TrainedStage = Literal["sft", "dpo"]
"""The stages that leave a checkpoint (``export.stage``)."""
LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
"""A license id as the Hub's card metadata takes it: ``apache-2.0``, ``mit``, ``cc-by-4.0``, ``other``."""
REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
"""A Hub repository id: ``owner/name``."""


@dataclass
class ExportConfig:
    """``winnow export``: a finished run as a dataset the ``datasets`` library loads (Parquet,
    with a card saying how it was made), or its fine-tuned checkpoint with a model card."""

    section: ClassVar[str] = "export"

    all_scored: bool = False
    """Also write every completion of the score stage (config ``all``: each sample with its
    reward, null where unscored), not only the selected rows and pairs."""
    license: str | None = None
    """License id for the card's metadata (``apache-2.0``, ``cc-by-4.0``, ``other``...); unset
    leaves it out of the metadata, and the card says that none was given."""
    model_card: bool = False
    """Export the run's fine-tuned checkpoint (its sft or dpo stage) with a model card,
    instead of the data."""
    stage: TrainedStage | None = field(default=None, metadata={"noun": "trained stage"})
    """With model_card: the trained stage to export; unset: the one the run has."""
    push_to_hub: str | None = None
    """Then upload the folder to this Hub repository (``owner/name``; a dataset repository, a
    model repository with model_card) with huggingface_hub, which finds the token (HF_TOKEN,
    or ``hf auth login``)."""
    private: bool = False
    """With push_to_hub: create the repository private (an existing one keeps its setting)."""

    def validate(self) -> None:
        check_fields(self)
        if self.license is not None and not LICENSE.fullmatch(self.license):
            raise WinnowError(f"export.license: expected a license id such as apache-2.0, got {self.license!r}")
        if self.push_to_hub is not None and not REPO.fullmatch(self.push_to_hub):
            raise WinnowError(f"export.push_to_hub: expected a repository id owner/name, got {self.push_to_hub!r}")
        if self.stage is not None and not self.model_card:
            raise WinnowError("export.stage: names the checkpoint to export; it applies with model_card only")
        if self.all_scored and self.model_card:
            raise WinnowError("export.all_scored: applies to the data; model_card exports the checkpoint")
        if self.private and self.push_to_hub is None:
            raise WinnowError("export.private: applies with push_to_hub only")
