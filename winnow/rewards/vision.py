"""A sequence-classification reward model that reads images, scored through its processor.

A reward model folder whose config has a ``vision_config`` (Gemma 3's
``Gemma3ForSequenceClassification``, say) is loaded with its ``AutoProcessor`` and
``AutoModelForSequenceClassification``. Each row, (prompt, completion), is the prompt's
messages plus the completion as the assistant's turn, written by the processor's chat
template (an ``{"type": "image"}`` part becomes the model's image marker), and the processor
expands each marker to the row's image tokens and makes the pixel inputs.

Batching follows the text path (``classifier.plan_batches``): rows sorted by token length,
batched under a token budget, scores put back in the rows' order. The processor is called
once per row to count its tokens and once per batch to make the batch's tensors, because how
pixel inputs are stacked differs by architecture and only the processor knows it. Padding is
on the right with an attention mask and the score is read at each row's last real token, so
a row's score does not depend on its batch. There is no shared prefix or packing here: an
image's tokens sit inside the prompt, and the cache paths of the text reward model do not
carry pixel inputs, so every row is scored in full. A row longer than the model's context is
left unscored (None).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from tqdm.auto import tqdm

from winnow.config.fields import REWARD_PREFIX_SHARING
from winnow.errors import WinnowError
from winnow.models import load_processor, pick_device, resolve_dtype
from winnow.rewards.classifier import plan_batches


class VisionClassifierReward:
    """``VisionClassifierReward(folder)(prompts, completions, images=...) -> list[float | None]``.

    folder: a local model folder (already resolved) whose config has a ``vision_config``.
    images: per row, that row's images as ``PIL.Image`` values (empty, or the keyword left
    out, for a row without any). batch_tokens, max_batch_size and max_padding shape the
    batches as for the text path. prefix_sharing: ``auto`` and ``off`` both score every row
    in full; ``on`` and ``packed`` are refused (nothing is shared across image rows).
    """

    def __init__(
        self,
        folder,
        *,
        name: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int = 16384,
        max_batch_size: int = 64,
        max_padding: float = 0.02,
        prefix_sharing: str = "auto",
    ):
        from transformers import AutoModelForSequenceClassification

        if prefix_sharing not in REWARD_PREFIX_SHARING:
            raise WinnowError(
                f"reward prefix sharing must be one of {', '.join(REWARD_PREFIX_SHARING)}, got {prefix_sharing!r}"
            )
        if prefix_sharing in ("on", "packed"):
            raise WinnowError(
                f"reward model {name} reads images: --reward-prefix-sharing {prefix_sharing} is not available "
                "for it (every row is scored in full); use auto or off"
            )
        self.name = name
        self.device = pick_device(device)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.max_padding = max_padding
        self.prefix_sharing = prefix_sharing
        self.processor = load_processor(folder)
        self.processor.tokenizer.padding_side = "right"  # positions, hence scores, independent of the batch
        if not self.processor.chat_template:
            raise WinnowError(f"reward model {name}: its processor has no chat template")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=resolve_dtype(dtype, self.device))
        except ValueError as e:  # transformers' "Unrecognized configuration class ..."
            raise WinnowError(
                f"reward model {name} cannot be loaded for sequence classification: {str(e).splitlines()[0]}"
            ) from None
        if model.config.num_labels != 1:
            raise WinnowError(f"reward model {name} has {model.config.num_labels} labels; expected 1")
        self.model = model.to(self.device).eval()
        text = model.config.get_text_config()
        self.max_length = int(getattr(text, "max_position_embeddings", 0) or 0) or None
        self.stats: dict = {"real_tokens": 0, "padded_tokens": 0, "batches": 0}
        self.path_counts: Counter[str] = Counter()
        self.last_paths: list[str] = []
        """After a call: how each row was scored, ``full`` or ``too_long``."""
        self.last_tokens_saved: list[int] = []
        """After a call: 0 for every row (no prompt is shared)."""

    def render(self, prompt, completion: str) -> str:
        """One row as the processor's chat template writes it, one image marker per image part."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return self.processor.apply_chat_template(
            messages + [{"role": "assistant", "content": completion}], tokenize=False
        )

    def encode(self, texts: list[str], images: list[list], rows: list[int], kw: dict) -> dict:
        """The processor's tensors for a batch of rendered rows (right-padded), ``rows`` naming
        them in an error. The template wrote BOS, so no special tokens are added again."""
        try:
            return self.processor(
                text=texts,
                images=images if any(images) else None,
                padding=True,
                add_special_tokens=False,
                return_tensors="pt",
            )
        except ValueError as e:  # e.g. a prompt with more image parts than images
            ids = kw.get("prompt_ids") or []
            where = f"prompt_id {ids[rows[0]]!r}" if len(rows) == 1 and ids else f"row {rows[0]}"
            raise WinnowError(
                f"reward model {self.name}: its processor refused {where}: {str(e).splitlines()[0]}"
            ) from None

    def __call__(self, prompts: list, completions: list[str], images: list | None = None, **kw) -> list[float | None]:
        images = [list(row) for row in images] if images is not None else [[] for _ in completions]
        texts = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        lengths = [
            self.encode([t], [im], [i], kw)["input_ids"].shape[1]
            for i, (t, im) in enumerate(zip(texts, images, strict=True))
        ]
        scores = np.full(len(texts), np.nan, dtype=np.float64)
        fits = [i for i, n in enumerate(lengths) if not self.max_length or n <= self.max_length]
        plan = plan_batches([lengths[i] for i in fits], self.batch_tokens, self.max_batch_size, self.max_padding)
        for batch in tqdm(plan, desc="reward model (images)", unit="batch", leave=False):
            picked = [fits[j] for j in batch]
            inputs = self.encode([texts[i] for i in picked], [images[i] for i in picked], picked, kw)
            scores[picked] = self._forward(inputs)
        fit = set(fits)
        self.last_paths = ["full" if i in fit else "too_long" for i in range(len(texts))]
        self.last_tokens_saved = [0] * len(texts)
        self.path_counts.update(self.last_paths)
        return [None if np.isnan(s) else float(s) for s in scores]

    @torch.inference_mode()
    def _forward(self, inputs) -> np.ndarray:
        """Scores of one batch, shape (b,), read at each row's last real token (by the mask:
        the model's own pooling looks for the pad token, which may be EOS)."""
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        mask = inputs["attention_mask"]  # (b, T), ones then zeros
        self.stats["batches"] += 1
        self.stats["real_tokens"] += int(mask.sum())
        self.stats["padded_tokens"] += int(mask.numel() - mask.sum())
        base = getattr(self.model, self.model.base_model_prefix)
        hidden = base(**inputs).last_hidden_state  # (b, T, hidden)
        last = hidden[torch.arange(mask.shape[0], device=mask.device), mask.sum(dim=1) - 1]
        return self.model.score(last)[:, 0].float().cpu().numpy()
