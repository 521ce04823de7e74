"""A sampling loop for n completions per prompt: one shared prefill, and a KV cache that
sheds finished rows.

Why not ``model.generate(num_return_sequences=n)``: that repeats every prompt n times
*before* the prefill, so each prompt is encoded n times, and it keeps stepping rows that
have already sampled EOS until the whole batch is done. Here the B prompts are encoded
once, the cache is copied n-fold (``batch_repeat_interleave``), and each step drops the
rows that just finished (``batch_select_indices``), so the work per step tracks the
sequences still running. The logits warpers are transformers' own, so temperature, top_k
and top_p mean what they mean in ``generate``.

Two CPU costs that ``generate`` pays per step are avoided as well (measured on SmolLM2,
64 rows): ``DynamicCache`` grows by ``torch.cat``, copying the whole cache every step
(~15% of a step); ``ReservedLayer`` writes into room reserved up front instead. And
``torch.multinomial`` over a 49k vocabulary takes ~40 ms per step; inverse-CDF sampling
(a cumsum and a binary search) draws from the same distribution in ~2 ms.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import Cache, DynamicCache, LogitsProcessorList
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


def make_warpers(temperature: float, top_p: float, top_k: int) -> LogitsProcessorList:
    """Temperature, then top-k, then top-p: the order ``generate`` applies them in.

    ``top_k=0`` and ``top_p=1`` switch those filters off. (``generate`` given ``top_k=None``
    would instead fall back to its default top_k of 50.)
    """
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p))
    return warpers


@torch.inference_mode()
def sample(
    lm,
    prompts: list[list[int]],
    *,
    n: int,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> list[list[int]]:
    """Sample ``n`` completions for each of the B prompts (lists of token ids).

    Returns B*n token lists, prompt-major: entry b*n + j is sample j of prompt b. Each
    list ends at (and includes) the first EOS, or has ``max_new_tokens`` tokens.
    ``temperature=0`` is greedy decoding: pass ``n=1`` then, as all n samples would agree.
    Randomness comes from torch's global generator: seed it for reproducible samples.
    """
    device = lm.device
    warpers = make_warpers(temperature, top_p, top_k) if temperature > 0 else None
    eos = torch.tensor(sorted(eos_ids), device=device)
    cache = _new_cache(lm.config.get_text_config(decoder=True), reserve=max_new_tokens)
    cache_kw = _cache_kwarg(lm)

    # Prefill the B prompts once; only the last position's logits are needed.
    ids, mask = left_pad(prompts, pad_id, device)  # (B, L)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L): padding does not shift positions
    logits = lm(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    ).logits[:, -1, :]  # (B, V)

    # Copy each prompt's cache, mask and logits to its n samples: (B, ...) -> (B*n, ...).
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits, mask = logits.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
    next_pos = mask.sum(-1)  # (A,) position of each active row's next token
    rows = torch.arange(len(prompts) * n, device=device)  # (A,) output row of each active row
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: (rows, tokens), both (A,)

    for step in range(max_new_tokens):
        tokens = pick(logits, warpers)  # (A,)
        steps.append((rows, tokens))
        running = ~torch.isin(tokens, eos)  # (A,)
        if step == max_new_tokens - 1 or not running.any():
            break
        if not running.all():  # drop rows that sampled EOS from the cache and the batch
            keep = fill_holes(running)
            cache.batch_select_indices(keep)
            rows, tokens, mask, next_pos = rows[keep], tokens[keep], mask[keep], next_pos[keep]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        logits = lm(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            use_cache=True,
            **{cache_kw: cache},
        ).logits[:, -1, :]
        next_pos = next_pos + 1
    return _collect(steps, len(prompts) * n)


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, both shape (B, L) with L the longest prompt.

    Padding goes on the left so that every row's next token lands in the same column.
    """
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def fill_holes(running: torch.Tensor) -> torch.Tensor:
    """Rows to keep, ordered so that few rows move: shape (k,) for k running rows.

    ``running``: (A,) bool. Running rows among the first k stay where they are; the
    running rows beyond k move into the holes left by finished ones. With
    ``ReservedLayer`` only the moved rows are copied, not the whole cache.

    >>> fill_holes(torch.tensor([True, False, True, False, True])).tolist()
    [0, 4, 2]
    """
    k = int(running.sum())
    keep = torch.arange(k, device=running.device)
    holes = (~running[:k]).nonzero().squeeze(1)
    keep[holes] = running[k:].nonzero().squeeze(1) + k
    return keep


def pick(logits: torch.Tensor, warpers: LogitsProcessorList | None) -> torch.Tensor:
    """One token per row from logits (A, V): argmax when greedy, else a warped sample.

    Sampling inverts the CDF: the first token whose cumulative probability exceeds
    u ~ U(0, total). A token with probability 0 (cut by top-k/top-p) adds nothing to the
    cumsum, so it is never the first to exceed u; u is kept strictly below the total so
    that some token always does.
    """
    if warpers is None:
        return logits.argmax(-1)
    probs = torch.softmax(warpers(None, logits.float()), dim=-1)  # type: ignore[arg-type]  # (A, V); these warpers ignore input_ids
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]  # (A, 1), 1 up to rounding
    u = torch.minimum(torch.rand_like(total) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


def _collect(steps: list[tuple[torch.Tensor, torch.Tensor]], num_rows: int) -> list[list[int]]:
    """Per-step (rows, tokens) pairs -> one token list per output row, in step order."""
    out: list[list[int]] = [[] for _ in range(num_rows)]
    for rows, tokens in steps:
        for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
            out[row].append(token)
    return out


def _new_cache(config, reserve: int) -> Cache:
    """``ReservedLayer``s for a model of plain full-attention layers (Llama, Qwen2, ...); for
    sliding-window or linear-attention layers, transformers' own ``DynamicCache``."""
    kinds = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    if getattr(config, "sliding_window", None) or any(kind != "full_attention" for kind in kinds):
        return DynamicCache(config=config)
    return Cache(layers=[ReservedLayer(reserve) for _ in kinds])


def _cache_kwarg(lm) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` in 5.x; take whichever forward has."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


class ReservedLayer(DynamicLayer):
    """A KV cache layer that reserves room for ``reserve`` more tokens after the prefill.

    Keys and values live in buffers of shape (A, heads, prompt_len + reserve, head_dim);
    ``self.keys`` / ``self.values`` are views of the filled part, so everything
    ``DynamicLayer`` derives from them (sequence length, mask sizes) still holds. A
    decode step writes one column in place instead of concatenating a new cache.
    Subclassing is transformers' way to plug in a cache layer; only storage changes.
    """

    def __init__(self, reserve: int):
        super().__init__()
        self.reserve = reserve
        self._kbuf: Any = None  # (A, heads, capacity, head_dim) once the prefill arrives
        self._vbuf: Any = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        filled = self.keys.shape[-2] if self._kbuf is not None and self.keys is not None else 0
        new = key_states.shape[-2]
        if self._kbuf is None or filled + new > self._kbuf.shape[-2]:  # first call, or out of room: grow
            shape = (*key_states.shape[:2], filled + new + self.reserve, key_states.shape[-1])
            kbuf, vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
            if filled:
                kbuf[:, :, :filled], vbuf[:, :, :filled] = self._kbuf[:, :, :filled], self._vbuf[:, :, :filled]
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, filled : filled + new] = key_states
        self._vbuf[:, :, filled : filled + new] = value_states
        self.keys, self.values = self._kbuf[:, :, : filled + new], self._vbuf[:, :, : filled + new]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized and self._kbuf is not None and self.keys is not None:
            self._kbuf = self._kbuf.repeat_interleave(repeats, dim=0)
            self._vbuf = self._vbuf.repeat_interleave(repeats, dim=0)
            self._narrow(self._kbuf.shape[0], self.keys.shape[-2])

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Row i becomes old row ``indices[i]``; only rows that move are copied."""
        if not self.is_initialized or self._kbuf is None or self.keys is None:
            return
        moved = (indices != torch.arange(len(indices), device=indices.device)).nonzero().squeeze(1)
        if len(moved):  # the right side is gathered into a new tensor first, so overlaps are safe
            self._kbuf[moved] = self._kbuf[indices[moved]]
            self._vbuf[moved] = self._vbuf[indices[moved]]
        self._narrow(len(indices), self.keys.shape[-2])

    def reset(self) -> None:
        self._kbuf = self._vbuf = None
        super().reset()

    def _narrow(self, batch: int, filled: int) -> None:
        """Keep rows [0, batch) of the buffers (a view, no copy) and point keys/values at them."""
        self._kbuf, self._vbuf = self._kbuf[:batch], self._vbuf[:batch]
        self.keys, self.values = self._kbuf[:, :, :filled], self._vbuf[:, :, :filled]
