"""Shared-prefix reward scoring: the N completions of a prompt read the prompt once.

In a causal decoder the hidden state at a token depends only on the tokens before it, so
the prompt's keys and values are the same in all N rows that start with it. Run the prompt
once (the prefill), keep its KV cache, run each completion as a continuation of that cache,
and read the score head at the completion's last token: the scores equal those of the full
rows (float rounding aside, ~1e-6 in float32), for (N - 1) * prompt_len fewer tokens.

One chunk of G prompts of similar length, planned under the token budget like plain rows:

- prefill: the prompts right-padded to (G, Pmax); every layer's keys and values are kept,
  each (G, kv_heads, Pmax, head_dim), with the padding mask (G, Pmax);
- continuation batches: the chunk's completions sorted by length and planned like plain
  rows, (R, W). A row's past is its prompt's cache, gathered by index one layer at a time
  (``SharedPrefixLayer``); its attention mask (R, Pmax + W) is its prompt's padding mask then
  its own; its position ids go on from its prompt's real length.

The token budget counts each prompt once, in its chunk's prefill (G * Pmax), and each
continuation batch's tails (R * W); the gathered prompt keys add R * Pmax per layer, for
one layer at a time.

Only where it is exact: the caller checks that each row's token ids start with its
rendered prompt's ids (a tokenizer may merge tokens across the boundary), and only the
architectures in ``ARCHITECTURES`` (tested against the plain path) take this path. Layers
with a sliding window are exact only while every key is inside the window, so a batch
whose Pmax + W exceeds it is handed back to the plain path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Cache
from transformers.cache_utils import DynamicLayer

from winnow.generate.decode import cache_kwarg

# Decoder sequence classifiers whose cache this path has been checked against the plain
# path with (tests/rewards/test_prefix.py). Hybrids with linear-attention or state-space
# layers keep a recurrent state, not keys and values, and are not listed.
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2")


def unsupported_reason(model) -> str | None:
    """Why ``model`` cannot share a prompt's cache across rows, or None when it can."""
    from transformers.modeling_layers import GenericForSequenceClassification

    config = model.config
    model_type = getattr(config, "model_type", "?")
    if model_type not in ARCHITECTURES or not isinstance(model, GenericForSequenceClassification):
        return (
            f"architecture {model_type!r} ({type(model).__name__}) is not one the shared-prefix path "
            f"is tested on ({', '.join(ARCHITECTURES)})"
        )
    if not getattr(config, "is_causal", True):
        return f"{type(model).__name__} is configured for bidirectional attention"
    return None


@dataclass
class Group:
    """One prompt's rows in a call: ``prompt`` token ids, and for each row its index in the
    call and its ``tail`` (the row's ids after the prompt, at least one token)."""

    prompt: list[int]
    rows: list[int]
    tails: list[list[int]]


def group_rows(
    prompt_ids: list[list[int]], row_ids: list[list[int]], candidates: list[int]
) -> tuple[list[Group], list[int], list[int]]:
    """Group ``candidates`` (row indices) by their prompt's token ids.

    Returns (groups of two or more rows, rows whose ids do not start with their prompt's
    ids or have nothing after it, rows whose prompt has no other row here). Grouping is by
    token ids, not prompt text: two rows share a cache exactly when their prefixes are the
    same ids.
    """
    by_prompt: dict[tuple[int, ...], Group] = {}
    mismatched = []
    for i in candidates:
        prompt, row = prompt_ids[i], row_ids[i]
        if len(row) <= len(prompt) or row[: len(prompt)] != prompt:
            mismatched.append(i)
            continue
        group = by_prompt.setdefault(tuple(prompt), Group(prompt, [], []))
        group.rows.append(i)
        group.tails.append(row[len(prompt) :])
    groups = [g for g in by_prompt.values() if len(g.rows) > 1]
    alone = [g.rows[0] for g in by_prompt.values() if len(g.rows) == 1]
    return groups, mismatched, alone


@dataclass
class Prefix:
    """A chunk's prefilled prompts: per-layer keys and values (G, kv_heads, Pmax, head_dim),
    the padding mask (G, Pmax) and the real lengths (G,)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    lengths: torch.Tensor


def right_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids, mask), both (len(rows), longest), padded on the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def prefill(base, prompts: list[list[int]], *, pad_id: int, device) -> Prefix:
    """Run G prompts through the base model (no score head) and keep every layer's KV."""
    ids, mask = right_pad(prompts, pad_id, device)
    layers = [DynamicLayer() for _ in range(base.config.num_hidden_layers)]
    base(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_kwarg(base): Cache(layers=list(layers))})
    keys = [layer.keys for layer in layers if layer.keys is not None]
    values = [layer.values for layer in layers if layer.values is not None]
    if len(keys) != len(layers) or len(values) != len(layers):  # every layer of ARCHITECTURES attends
        raise RuntimeError(f"{type(base).__name__}: a layer kept no keys and values in the prefill")
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    return Prefix(keys, values, mask, lengths)


@torch.inference_mode()
def score_tails(base, head, prefix: Prefix, owners: list[int], tails: list[list[int]], *, pad_id: int, device):
    """Scores of R continuation rows, shape (R,): row r continues prompt ``owners[r]`` of
    ``prefix`` with the token ids ``tails[r]``; the head reads each row's last real token."""
    ids, tail_mask = right_pad(tails, pad_id, device)
    rows = torch.tensor(owners, device=device)
    mask = torch.cat([prefix.mask.index_select(0, rows), tail_mask], dim=1)  # (R, Pmax + W)
    positions = prefix.lengths.index_select(0, rows)[:, None] + torch.arange(ids.shape[1], device=device)
    cache = Cache(layers=[SharedPrefixLayer(k, v, rows) for k, v in zip(prefix.keys, prefix.values, strict=True)])
    out = base(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_kwarg(base): cache})
    last = tail_mask.sum(dim=1) - 1
    pooled = out.last_hidden_state[torch.arange(len(tails), device=device), last]  # (R, hidden)
    return head(pooled)[:, 0].float().cpu().numpy()


class SharedPrefixLayer(DynamicLayer):
    """A read-only cache layer whose row r has prompt ``rows[r]``'s prefilled keys and values.

    keys, values: (G, kv_heads, Pmax, head_dim); rows: (R,) indices into G. ``update``
    returns each row's prompt KV followed by the new tokens' and stores nothing, so the
    gathered (R, kv_heads, Pmax + W, head_dim) copy lives for one layer at a time. Everything
    ``DynamicLayer`` derives from ``self.keys`` (sequence length Pmax, mask sizes) still holds.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor):
        super().__init__()
        self.keys, self.values, self.rows = keys, values, rows
        self.prefix_keys, self.prefix_values = keys, values
        self.device = keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys = torch.cat([self.prefix_keys.index_select(0, self.rows), key_states], dim=-2)
        values = torch.cat([self.prefix_values.index_select(0, self.rows), value_states], dim=-2)
        return keys, values


def sliding_window(config) -> int | None:
    """The model's attention window, or None when every layer sees the whole sequence."""
    window = getattr(config, "sliding_window", None)
    return int(window) if window else None


def flatten(groups: list[Group]) -> tuple[list[int], list[int], list[list[int]]]:
    """The groups' rows in one list each: (index of the row's group, row index in the call, tail)."""
    owners: list[int] = []
    rows: list[int] = []
    tails: list[list[int]] = []
    for k, g in enumerate(groups):
        owners += [k] * len(g.rows)
        rows += g.rows
        tails += g.tails
    return owners, rows, tails
