"""A sequence-classification reward model wrapped to the reward contract.

Batching: tokenize once, sort by length so that rows of a
batch are of similar length, pack batches under a token budget (padding included, and at
most a small share of it), score, and restore the original order. Padding is on the right
with an attention mask, so a row's position ids, and therefore its score, do not depend on
what else is in its batch.

The score is read at each row's last real token, its EOS included. transformers' own
pooling takes the last token that is not the pad token, so with EOS as the pad token (what
tokenizers without one get) it would skip a row's closing EOS; decoder heads are therefore
pooled by the attention mask here, and other models get a pad token of their own. A row
longer than the model's context is not cut: it is left unscored (None) and counted.

A prompt's completions share one prefill where that is exact (``winnow.rewards.prefix``);
``summary()`` says how many rows took each path and the tokens that saved.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
import torch
from tqdm.auto import tqdm

from winnow.config.fields import REWARD_PREFIX_SHARING
from winnow.errors import WinnowError
from winnow.models import load_tokenizer, pick_device, resolve_dtype, resolve_model
from winnow.rewards import packed as pk
from winnow.rewards import prefix as pf

# How a row was scored: as a continuation of its prompt's shared prefill, in full (with the
# reason when sharing was on), or not at all (longer than the model's context).
PATHS = (
    "shared_prefix",
    "packed",
    "full",
    "full_prefix_mismatch",
    "full_single_completion",
    "full_sliding_window",
    "too_long",
)
PAD_TOKEN = "<|winnow_pad|>"


class ClassifierReward:
    """``ClassifierReward(path)(prompts, completions) -> list[float | None]`` from a 1-label head.

    batch_tokens, max_batch_size and max_padding shape the batches: see ``plan_batches``.
    prefix_sharing: ``auto`` takes the fastest exact path the model allows: packed where its
    probe passes (a prompt whose completions overflow one packed row shares its prefill
    instead, so that it is read once), else the shared prefix, else every row in full, with
    a note; ``on`` insists on the shared prefix (an architecture it does not know is an
    error), ``off`` scores every row in full, ``packed`` lays several prompts' completions
    end to end in rows of up to ``pack_width`` tokens, one forward pass a row
    (``winnow.rewards.packed``: each prompt read once, no padding, attention per prompt and
    completion; like ``on``, an error where the model does not allow it).
    """

    def __init__(
        self,
        path: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int = 16384,
        max_batch_size: int = 64,
        max_padding: float = 0.02,
        prefix_sharing: str = "auto",
        pack_width: int = 1024,
    ):
        from transformers import AutoModelForSequenceClassification
        from transformers.modeling_layers import GenericForSequenceClassification

        if prefix_sharing not in REWARD_PREFIX_SHARING:
            raise WinnowError(
                f"reward prefix sharing must be one of {', '.join(REWARD_PREFIX_SHARING)}, got {prefix_sharing!r}"
            )
        folder = resolve_model(path)
        self.name = path
        self.device = pick_device(device)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.max_padding = max_padding
        self.tokenizer = load_tokenizer(folder)
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=resolve_dtype(dtype, self.device))
        if self.model.config.num_labels != 1:
            raise WinnowError(f"reward model {path} has {self.model.config.num_labels} labels; expected 1")
        # Decoder heads are pooled here, by the attention mask; other models pool themselves,
        # by the pad token, so that token must never be a real one (EOS above all).
        self.pool_by_mask = isinstance(self.model, GenericForSequenceClassification)
        if not self.pool_by_mask:
            self._give_distinct_pad_token()
        self.pad_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self.window = pf.sliding_window(self.model.config)
        self.prefix_sharing = prefix_sharing
        self.pack_width = pack_width
        self.packs = False
        """Whether rows are packed (``packed``, or ``auto`` where the packed probe passed)."""
        self.prefix_note = self._choose_path()
        self.stats: dict = {"real_tokens": 0, "padded_tokens": 0, "batches": 0, "oom_retries": 0}
        self.path_counts: Counter[str] = Counter()
        self.tokens_saved = 0
        self.last_paths: list[str] = []
        """After a call: how each row was scored, one of ``PATHS``."""
        self.last_tokens_saved: list[int] = []
        """After a call: prompt tokens each row did not recompute (its prompt's length for
        every shared-prefix row but the first of its prompt in a chunk, else 0)."""

    def _choose_path(self) -> str | None:
        """Probe the paths ``prefix_sharing`` allows, fastest first; set ``self.packs`` and
        return why rows are scored in full (None: the prefix is shared or rows are packed).
        ``on`` and ``packed`` refuse a model that cannot take them; ``auto`` falls back, with a note."""
        how = self.prefix_sharing
        note: str | None = "off" if how == "off" else pf.unsupported_reason(self.model)
        if not note:
            note = self._probe_shared_prefix()
        if not note and how in ("packed", "auto"):
            packed_note = self._probe_packed()
            self.packs = packed_note is None
            if how == "packed":
                note = packed_note
            elif packed_note:
                print(
                    f"winnow: reward model {self.name}: sharing each prompt's prefill, not packing: {packed_note}",
                    file=sys.stderr,
                )
        if note and how in ("on", "packed"):
            raise WinnowError(f"reward model {self.name}: --reward-prefix-sharing {how}, but {note}")
        if note and how == "auto":
            self._note(note)
        return note

    def _note(self, why: str) -> None:
        print(f"winnow: reward model {self.name}: scoring every row in full: {why}", file=sys.stderr)

    def _probe_shared_prefix(self) -> str | None:
        """Score two short rows both ways once; None if they agree, else why not to share.

        The listed architectures are tested against the full path, but the cache interface
        they plug into belongs to transformers: this catches a version where sharing would
        silently change scores (or fail) before any real row depends on it.
        """
        prompt = self.prompt_ids(["Say something."])[0]
        tails = [prompt[-3:], prompt[:1]]  # any ids of this vocabulary will do
        try:
            prefix = pf.prefill(self._base, [prompt], pad_id=self.pad_id, device=self.device)
            shared = pf.score_tails(
                self._base, self.model.score, prefix, [0, 0], tails, pad_id=self.pad_id, device=self.device
            )
        except Exception as e:  # noqa: BLE001 -- whatever breaks, the full path is the answer
            return f"the shared-prefix path failed on a probe ({type(e).__name__}: {e})"
        full = self._forward([prompt + t for t in tails])
        if not np.allclose(shared, full, rtol=1e-3, atol=1e-4):
            return f"the shared-prefix path does not reproduce full-row scores here ({shared} vs {full})"
        return None

    def _probe_packed(self) -> str | None:
        """Score three short rows of two prompts packed and in full once; None if they agree."""
        a, b = self.prompt_ids(["Say something.", "Say more."])
        group_a, group_b = pf.Group(a, [0, 1], [a[-3:], a[:1]]), pf.Group(b, [2], [b[:2]])
        try:
            (row,), _ = pk.plan_rows([group_a, group_b], len(a) + len(b) + 6)
            rows, got, _ = pk.score_packed(
                self._base, self.model.score, row, device=self.device, dtype=self.model.dtype
            )
        except Exception as e:  # noqa: BLE001 -- whatever breaks, say so before any real row depends on it
            return f"the packed path failed on a probe ({type(e).__name__}: {e})"
        full_rows = {0: a + a[-3:], 1: a + a[:1], 2: b + b[:2]}
        full = self._forward([full_rows[r] for r in rows])
        if not np.allclose(got, full, rtol=1e-3, atol=1e-4):
            return f"the packed path does not reproduce full-row scores here ({got} vs {full})"
        return None

    def _give_distinct_pad_token(self) -> None:
        tok = self.tokenizer
        if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
            tok.add_special_tokens({"pad_token": PAD_TOKEN})
            self.model.resize_token_embeddings(len(tok))  # the new row is only ever read under a zero mask
        self.model.config.pad_token_id = tok.pad_token_id

    # ------------------------------------------------------------------ rendering

    def tokenize(self, prompts: list, completions: list[str]) -> list[list[int]]:
        """Render each (prompt, completion) with the RM's own chat template and tokenize once."""
        tok = self.tokenizer
        if tok.chat_template:
            texts = [
                tok.apply_chat_template(_messages(p) + [{"role": "assistant", "content": c}], tokenize=False)
                for p, c in zip(prompts, completions, strict=True)
            ]
            return tok(texts, add_special_tokens=False)["input_ids"]  # the template wrote BOS
        texts = [self._plain_prompt(p) + c for p, c in zip(prompts, completions, strict=True)]
        return tok(texts, add_special_tokens=True)["input_ids"]

    def prompt_ids(self, prompts: list) -> list[list[int]]:
        """Each prompt rendered as ``tokenize`` renders it, up to where the completion starts
        (the assistant turn's header); rendered once per distinct prompt."""
        tok = self.tokenizer
        keys = [p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in prompts]
        unique = dict(zip(keys, prompts, strict=True))
        if tok.chat_template:
            texts = [
                tok.apply_chat_template(_messages(p), add_generation_prompt=True, tokenize=False)
                for p in unique.values()
            ]
            ids = tok(texts, add_special_tokens=False)["input_ids"]
        else:
            ids = tok([self._plain_prompt(p) for p in unique.values()], add_special_tokens=True)["input_ids"]
        by_key = dict(zip(unique, ids, strict=True))
        return [by_key[k] for k in keys]

    def _plain_prompt(self, prompt) -> str:
        if not isinstance(prompt, str):
            raise WinnowError(f"reward model {self.name} has no chat template for chat-message prompts")
        return prompt + "\n"

    # ------------------------------------------------------------------ scoring

    def __call__(self, prompts: list, completions: list[str], **kw) -> list[float | None]:
        if any(kw.get("images") or ()):  # its tokenizer would read an image part as text
            raise WinnowError(
                f"prompts with images are not supported by a reward model ({self.name}), which scores text; "
                "use a reward function, which gets the images, or a vision-language judge"
            )
        ids = self.tokenize(prompts, completions)
        scores = np.full(len(ids), np.nan, dtype=np.float64)
        paths = ["full"] * len(ids)
        saved = [0] * len(ids)
        fits = [i for i, row in enumerate(ids) if not self.max_length or len(row) <= self.max_length]
        for i in set(range(len(ids))) - set(fits):
            paths[i] = "too_long"
        full = fits
        if self.prefix_sharing == "packed":
            full = self._score_packed(prompts, ids, fits, scores, paths, saved)
        elif self.packs:  # auto: packed, with a fall back to the full path as below
            full = self._score_shared(prompts, ids, fits, scores, paths, saved, packed=True)
        elif not self.prefix_note:
            full = self._score_shared(prompts, ids, fits, scores, paths, saved)
        self._score_full(full, ids, scores)
        self.last_paths, self.last_tokens_saved = paths, saved
        self.path_counts.update(paths)
        self.tokens_saved += sum(saved)
        return [None if np.isnan(s) else float(s) for s in scores]

    def _score_shared(
        self, prompts, ids, fits: list[int], scores, paths: list[str], saved: list[int], *, packed: bool = False
    ) -> list[int]:
        """Score the rows of ``fits`` that can share their prompt's prefill (``packed``: most
        of them packed, see ``_score_packed``); returns the rest."""
        try:
            if packed:
                return self._score_packed(prompts, ids, fits, scores, paths, saved, whole_only=True)
            groups, mismatched, alone = pf.group_rows(self.prompt_ids(prompts), ids, fits)
            for i in mismatched:
                paths[i] = "full_prefix_mismatch"
            for i in alone:
                paths[i] = "full_single_completion"
            far = self._score_groups(groups, scores, paths, saved)
            return sorted(mismatched + alone + far)
        except (torch.OutOfMemoryError, WinnowError):
            raise
        except Exception as e:  # auto promises the full path, never a crash (re-raised above when it can)
            if self.prefix_sharing == "on":
                raise
            self.prefix_note = f"the {'packed' if packed else 'shared-prefix'} path failed ({type(e).__name__}: {e})"
            self.packs = False
            self._note(self.prefix_note)
            for i in fits:
                paths[i], saved[i] = "full", 0
            return fits

    def _score_packed(
        self, prompts, ids, fits: list[int], scores, paths: list[str], saved: list[int], *, whole_only: bool = False
    ) -> list[int]:
        """Score the rows of ``fits`` packed (``winnow.rewards.packed``); returns the rest.

        ``whole_only`` (``auto``): a prompt whose completions do not all fit in one row with
        it would be read once per row it spans; those share one prefill instead (the
        shared-prefix path reads a long prompt once and pads little among long completions).
        """
        groups, mismatched, alone = pf.group_rows(self.prompt_ids(prompts), ids, fits)
        for i in mismatched:
            paths[i] = "full_prefix_mismatch"
        # a prompt and tail longer than the window would not see what they see in a full row
        width = min(self.pack_width, self.window) if self.window else self.pack_width
        far: list[int] = []
        if whole_only:
            split = [g for g in groups if len(g.prompt) + sum(len(t) for t in g.tails) > width]
            groups = [g for g in groups if len(g.prompt) + sum(len(t) for t in g.tails) <= width]
            far = self._score_groups(split, scores, paths, saved)
        # a prompt with one completion gains nothing from sharing, but packs as well as any
        groups += [pf.Group(ids[i][: len(ids[i]) - 1], [i], [ids[i][-1:]]) for i in alone]
        rows, too_long = pk.plan_rows(groups, width)
        for row in tqdm(rows, desc="reward model (packed)", unit="row", leave=False):
            done, got, tokens = pk.score_packed(
                self._base, self.model.score, row, device=self.device, dtype=self.model.dtype
            )
            self._count(tokens, tokens)
            scores[done] = got
        for g in groups:
            for k, r in enumerate(g.rows):
                if r not in too_long:
                    paths[r] = "packed"
                    saved[r] = len(g.prompt) if k else 0  # about: a prompt split over rows is read again
        return sorted(mismatched + too_long + far)

    def _score_full(self, rows: list[int], ids: list[list[int]], scores: np.ndarray) -> None:
        """Score whole rows (indices into ids) in planned batches; write into scores."""
        plan = plan_batches([len(ids[i]) for i in rows], self.batch_tokens, self.max_batch_size, self.max_padding)
        for batch in tqdm(plan, desc="reward model", unit="batch", leave=False):
            picked = [rows[j] for j in batch]
            scores[picked] = self._score_with_retry([ids[i] for i in picked])

    def _score_with_retry(self, rows: list[list[int]]) -> np.ndarray:
        """Score rows; on CUDA out-of-memory split the batch in half and try again."""
        return self._split_on_oom(self._score, rows)

    def _split_on_oom(self, fn, items: list):
        """fn(items) -> np.ndarray of len(items); on out-of-memory, halves, recursively."""
        try:
            return fn(items)
        except torch.OutOfMemoryError:
            if len(items) == 1:
                raise
            self.stats["oom_retries"] += 1
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            half = len(items) // 2
            return np.concatenate([self._split_on_oom(fn, items[:half]), self._split_on_oom(fn, items[half:])])

    @torch.inference_mode()
    def _score(self, rows: list[list[int]]) -> np.ndarray:
        """Scores of whole rows, shape (len(rows),), read at each row's last real token."""
        self._count(sum(len(r) for r in rows), len(rows) * max(len(r) for r in rows))
        return self._forward(rows)

    @torch.inference_mode()
    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        ids, mask = pf.right_pad(rows, self.pad_id, self.device)
        if not self.pool_by_mask:
            return self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu().numpy()
        hidden = self._base(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, T, hidden)
        last = hidden[torch.arange(len(rows), device=ids.device), mask.sum(dim=1) - 1]
        return self.model.score(last)[:, 0].float().cpu().numpy()

    @property
    def _base(self):
        return getattr(self.model, self.model.base_model_prefix)

    def _count(self, real: int, padded: int) -> None:
        self.stats["batches"] += 1
        self.stats["real_tokens"] += real
        self.stats["padded_tokens"] += padded - real

    def _score_groups(
        self, groups: list[pf.Group], scores: np.ndarray, paths: list[str], saved: list[int]
    ) -> list[int]:
        """Score each group's rows as continuations of its prompt's prefill, writing scores,
        paths and tokens saved; returns the rows left for the full path (past a sliding window)."""
        far: list[int] = []
        if self.window:  # a row longer than the window is not a continuation of a shared cache
            for g in groups:
                keep = [len(g.prompt) + len(t) <= self.window for t in g.tails]
                far += [r for r, k in zip(g.rows, keep, strict=True) if not k]
                g.rows = [r for r, k in zip(g.rows, keep, strict=True) if k]
                g.tails = [t for t, k in zip(g.tails, keep, strict=True) if k]
            groups = [g for g in groups if g.rows]
        chunks = plan_batches([len(g.prompt) for g in groups], self.batch_tokens, self.max_batch_size, self.max_padding)
        for chunk in tqdm(chunks, desc="reward model (shared prefix)", unit="chunk", leave=False):
            far += self._score_chunk([groups[i] for i in chunk], scores)
        for i in far:
            paths[i] = "full_sliding_window"
        for g in groups:
            shared = [r for r in g.rows if paths[r] != "full_sliding_window"]
            for r in shared:
                paths[r] = "shared_prefix"
            for r in shared[1:]:  # a chunk holds all of a prompt's rows: one prefill each
                saved[r] = len(g.prompt)
        return far

    def _score_chunk(self, groups: list[pf.Group], scores: np.ndarray) -> list[int]:
        """One prefill for the groups' prompts, then their rows in batches sorted by tail length."""
        try:
            prefix = pf.prefill(self._base, [g.prompt for g in groups], pad_id=self.pad_id, device=self.device)
        except torch.OutOfMemoryError:
            if len(groups) == 1:
                raise
            self.stats["oom_retries"] += 1
            half = len(groups) // 2
            return self._score_chunk(groups[:half], scores) + self._score_chunk(groups[half:], scores)
        self._count(sum(len(g.prompt) for g in groups), prefix.mask.numel())
        owners, rows, tails = pf.flatten(groups)
        far = []
        for batch in plan_batches([len(t) for t in tails], self.batch_tokens, self.max_batch_size, self.max_padding):
            if self.window and prefix.mask.shape[1] + max(len(tails[j]) for j in batch) > self.window:
                far += [rows[j] for j in batch]  # a padded prompt would push keys out of the window
                continue
            items = [(owners[j], tails[j]) for j in batch]
            scores[[rows[j] for j in batch]] = self._split_on_oom(lambda part: self._score_tails(prefix, part), items)
        return far

    def _score_tails(self, prefix: pf.Prefix, items: list[tuple[int, list[int]]]) -> np.ndarray:
        owners, tails = [o for o, _ in items], [t for _, t in items]
        real = sum(len(t) for t in tails)
        self._count(real, len(tails) * max(len(t) for t in tails))
        return pf.score_tails(
            self._base, self.model.score, prefix, owners, tails, pad_id=self.pad_id, device=self.device
        )

    def summary(self) -> dict:
        """What this object's calls did: rows per path, prompt tokens saved, batches, tokens."""
        return {
            "prefix_sharing": self.prefix_sharing,
            "prefix_note": self.prefix_note,
            "rows": {p: self.path_counts[p] for p in PATHS if self.path_counts[p]},
            "prompt_tokens_saved": self.tokens_saved,
            **self.stats,
        }


def _messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


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
