"""A sequence-classification reward model wrapped to the reward contract.

Batching follows the chapter's advice: tokenize once, sort by length so that rows of a
batch are of similar length, pack batches under a token budget (padding included, and at
most a small share of it), score, and restore the original order. Padding is on the right
with an attention mask, so a row's position ids, and therefore its score, do not depend on
what else is in its batch.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from winnow.errors import WinnowError
from winnow.models import load_tokenizer, pick_device, resolve_model


class ClassifierReward:
    """``ClassifierReward(path)(prompts, completions) -> list[float]`` from a 1-label head.

    batch_tokens, max_batch_size and max_padding shape the batches: see ``plan_batches``.
    """

    def __init__(
        self,
        path: str,
        *,
        device: str = "auto",
        batch_tokens: int = 16384,
        max_batch_size: int = 64,
        max_padding: float = 0.02,
    ):
        from transformers import AutoModelForSequenceClassification

        folder = resolve_model(path)
        self.name = path
        self.device = pick_device(device)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.max_padding = max_padding
        self.tokenizer = load_tokenizer(folder)
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
        if self.model.config.num_labels != 1:
            raise WinnowError(f"reward model {path} has {self.model.config.num_labels} labels; expected 1")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self.stats = {"real_tokens": 0, "padded_tokens": 0, "batches": 0, "oom_retries": 0}

    def tokenize(self, prompts: list, completions: list[str]) -> list[list[int]]:
        """Render each (prompt, completion) with the RM's own chat template and tokenize once."""
        tok = self.tokenizer
        ids = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if tok.chat_template:
                messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
                messages = messages + [{"role": "assistant", "content": completion}]
                text = tok.apply_chat_template(messages, tokenize=False)
                row = tok(text, add_special_tokens=False)["input_ids"]  # the template wrote BOS
            else:
                if not isinstance(prompt, str):
                    raise WinnowError(f"reward model {self.name} has no chat template for chat-message prompts")
                row = tok(prompt + "\n" + completion, add_special_tokens=True)["input_ids"]
            ids.append(row[: self.max_length] if self.max_length else row)
        return ids

    def __call__(self, prompts: list, completions: list[str], **kw) -> list[float]:
        ids = self.tokenize(prompts, completions)
        scores = np.full(len(ids), np.nan, dtype=np.float64)
        plan = plan_batches([len(x) for x in ids], self.batch_tokens, self.max_batch_size, self.max_padding)
        for batch in tqdm(plan, desc="reward model", unit="batch", leave=False):
            scores[batch] = self._score_with_retry([ids[i] for i in batch])
        return scores.tolist()

    def _score_with_retry(self, rows: list[list[int]]) -> np.ndarray:
        """Score rows; on CUDA out-of-memory split the batch in half and try again."""
        try:
            return self._score(rows)
        except torch.OutOfMemoryError:
            if len(rows) == 1:
                raise
            self.stats["oom_retries"] += 1
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            half = len(rows) // 2
            return np.concatenate([self._score_with_retry(rows[:half]), self._score_with_retry(rows[half:])])

    @torch.inference_mode()
    def _score(self, rows: list[list[int]]) -> np.ndarray:
        batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.device)
        self.stats["batches"] += 1
        self.stats["real_tokens"] += sum(len(r) for r in rows)
        self.stats["padded_tokens"] += int(batch["input_ids"].numel()) - sum(len(r) for r in rows)
        logits = self.model(**batch).logits  # (b, 1)
        return logits[:, 0].float().cpu().numpy()


def plan_batches(
    lengths: list[int], batch_tokens: int, max_batch_size: int, max_padding: float = 0.02
) -> list[np.ndarray]:
    """Group row indices into batches of similar length under a padded-token budget.

    lengths: shape (R,). Rows are taken longest first (so a batch that does not fit in
    memory shows up at once), and a batch grows while (rows + 1) * longest <= batch_tokens,
    rows <= max_batch_size, and its padding stays within max_padding * batch_tokens. The
    last rule matters in the long tail of lengths, where rows are sparse and filling the
    budget would pad a batch heavily; a batch far under the budget (cheap to pad) is not
    split. A row longer than the budget gets a batch of its own. Returns index arrays
    covering 0..R-1 exactly once.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    allowance = max_padding * batch_tokens
    batches: list[np.ndarray] = []
    current: list[int] = []
    width, padding = 0, 0
    for i in order:
        n = lengths[i]
        if current and (
            (len(current) + 1) * width > batch_tokens
            or len(current) >= max_batch_size
            or padding + width - n > allowance
        ):
            batches.append(np.array(current))
            current = []
        if not current:
            width, padding = n, 0  # longest first: the first row sets the batch's width
        padding += width - n
        current.append(i)
    if current:
        batches.append(np.array(current))
    return batches
