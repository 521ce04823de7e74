"""Packed reward scoring: several prompts' continuations in one row, almost no padding.

The shared-prefix path (``winnow.rewards.prefix``) reads each prompt once but still pads:
prompts to the chunk's longest, continuations to their batch's longest. Packing lays
segments end to end instead. A segment is one prompt followed by its completions' tails::

    [prompt_a | tail_a1 | tail_a2 | ... ][prompt_b | tail_b1 | ...][pad]

and rows of ``width`` tokens are filled with segments one after another, so only the end
of a row is padding. One forward pass scores every tail. The linear layers run over the
packed rows as they are; attention (``block_attention``, registered with transformers'
AttentionInterface for the call) runs per *unit* instead of over the row: a prompt's
tokens see the earlier tokens of their prompt, a tail's tokens their prompt and the
earlier tokens of their tail (never another tail or another segment). So attention costs
what it would in the unit's own full row, not W^2 as a dense 4-D mask over a W-token row
does (at W = 1,024 that was ~1.3x the work of the rest of a SmolLM2-sized model).
Positions restart at 0 for each prompt and go on from the prompt's length in each tail,
so every tail sees exactly what it would see as a full row, and the score head reads it
at its last token. The scores equal the full rows' (float rounding aside).

A prompt whose tails do not all fit in the rest of a row goes on in the next row, behind
the prompt again (``plan_rows``). Only decoder classifiers pooled at the last token
(``GenericForSequenceClassification``) whose attention goes through the AttentionInterface
take this path; the caller checks the scores against full rows on a probe first.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from winnow.rewards.prefix import Group


@dataclass
class Segment:
    """One prompt and some of its tails; ``rows`` are their row indices in the call."""

    prompt: list[int]
    rows: list[int]
    tails: list[list[int]]

    def __len__(self) -> int:
        return len(self.prompt) + sum(len(t) for t in self.tails)


def plan_rows(groups: list[Group], width: int) -> tuple[list[list[Segment]], list[int]]:
    """Fill rows of ``width`` tokens with segments, left to right.

    A row takes the groups in order: a group's prompt, then its longest remaining tails
    that fit; what does not fit goes on in a later row behind the prompt again. So a row
    ends with less room than the shortest tail left, and padding is a few tokens a row.
    Returns (rows of segments, call rows that fit in no row: prompt + tail > width).
    """
    pending: list[tuple[list[int], list[tuple[int, list[int]]]]] = []
    too_long: list[int] = []
    for g in groups:
        items = sorted(zip(g.rows, g.tails, strict=True), key=lambda rt: -len(rt[1]))
        too_long += [r for r, t in items if len(g.prompt) + len(t) > width]
        items = [(r, t) for r, t in items if len(g.prompt) + len(t) <= width]
        if items:
            pending.append((g.prompt, items))
    rows: list[list[Segment]] = []
    while pending:
        room, row = width, []
        for prompt, items in pending:
            if len(prompt) + len(items[-1][1]) > room:  # not even its shortest tail fits
                continue
            seg = Segment(prompt, [], [])
            room -= len(prompt)
            kept = []
            for r, t in items:  # longest first
                if len(t) <= room:
                    seg.rows.append(r)
                    seg.tails.append(t)
                    room -= len(t)
                else:
                    kept.append((r, t))
            items[:] = kept
            row.append(seg)
            if room <= 1:
                break
        rows.append(row)
        pending = [(p, items) for p, items in pending if items]
    return rows, too_long


ATTENTION = "winnow_packed"
"""The name the block attention below is registered under in transformers' AttentionInterface."""


@dataclass
class Blocks:
    """Who attends to whom in a batch of packed rows, as gather indices into its B * W tokens.

    A *unit* is a prompt (its tokens see the earlier tokens of that prompt) or a tail (its
    tokens see their prompt and the earlier tokens of the tail). U units, each padded to
    the longest: ``queries`` (U, Lq) and ``keys`` (U, Lk) are flat token indices,
    ``mask`` (U, 1, Lq, Lk) which keys each query sees; ``take`` (Q,) picks the real
    queries out of the (U * Lq) outputs and ``into`` (Q,) says where they go among B * W.
    """

    queries: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor
    take: torch.Tensor
    into: torch.Tensor


def layout(packed: list[list[Segment]], width: int, pad_id: int):
    """A batch of packed rows: ids, positions (B, W); its ``Blocks``; and for each scored
    tail (call row, packed row, index of its last token in the row)."""
    b = len(packed)
    ids = np.full((b, width), pad_id, dtype=np.int64)
    pos = np.zeros((b, width), dtype=np.int64)
    units: list[tuple[np.ndarray, np.ndarray, int]] = []  # (query indices, key indices, prompt keys)
    reads: list[tuple[int, int, int]] = []
    for r, row_segs in enumerate(packed):
        at = r * width  # flat index of the row's first token
        for s in row_segs:
            p = len(s.prompt)
            prompt = np.arange(at, at + p)
            ids.flat[at : at + p] = s.prompt
            pos.flat[at : at + p] = np.arange(p)
            units.append((prompt, prompt, 0))
            at += p
            for row, tail in zip(s.rows, s.tails, strict=True):
                n = len(tail)
                ids.flat[at : at + n] = tail
                pos.flat[at : at + n] = p + np.arange(n)
                units.append((np.arange(at, at + n), np.concatenate([prompt, np.arange(at, at + n)]), p))
                at += n
                reads.append((row, r, at - 1 - r * width))
    lq, lk = max(len(q) for q, _, _ in units), max(len(k) for _, k, _ in units)
    queries = np.zeros((len(units), lq), dtype=np.int64)
    keys = np.zeros((len(units), lk), dtype=np.int64)
    mask = np.zeros((len(units), lq, lk), dtype=bool)
    mask[:, :, 0] = True  # a padding query sees one key: no row of the softmax is empty
    take = []
    for u, (q, k, seen) in enumerate(units):
        n = len(q)
        queries[u, :n], keys[u, : len(k)] = q, k
        mask[u, :n, :seen] = True  # a tail sees all of its prompt
        mask[u, :n, seen : seen + n] = np.tril(np.ones((n, n), dtype=bool))  # and itself, causally
        take.append(u * lq + np.arange(n))
    blocks = Blocks(
        torch.from_numpy(queries),
        torch.from_numpy(keys),
        torch.from_numpy(mask[:, None]),
        torch.from_numpy(np.concatenate(take)),
        torch.from_numpy(np.concatenate([q for q, _, _ in units])),
    )
    return ids, pos, blocks, reads


def block_attention(module, query, key, value, attention_mask, *, scaling=None, winnow_blocks=None, **kwargs):
    """Attention over the units of packed rows only (an AttentionInterface function).

    query (B, H, W, D), key and value (B, Hkv, W, D), as transformers hands them over;
    returns (B, W, H, D) as its own attention functions do. Each unit gathers its queries
    and keys and attends among them alone, so the work grows with the units' sizes, not
    with W^2 as a dense 4-D mask over the row would. ``softcap`` (Gemma 2) is applied;
    a sliding window needs nothing: ``plan_rows`` keeps every unit inside it.
    """
    blocks: Blocks = winnow_blocks
    b, h, w, d = query.shape
    hkv = key.shape[1]
    flat = lambda x: x.transpose(1, 2).reshape(b * w, x.shape[1], d)  # noqa: E731 -- (B*W, heads, D)
    q = flat(query)[blocks.queries].transpose(1, 2)  # (U, H, Lq, D)
    k = flat(key)[blocks.keys].transpose(1, 2)  # (U, Hkv, Lk, D)
    v = flat(value)[blocks.keys].transpose(1, 2)
    softcap = kwargs.get("softcap")
    if softcap is None:
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=blocks.mask, scale=scaling, enable_gqa=hkv != h
        )
    else:
        k, v = k.repeat_interleave(h // hkv, dim=1), v.repeat_interleave(h // hkv, dim=1)
        logits = torch.tanh(q @ k.transpose(-1, -2) * (scaling or d**-0.5) / softcap) * softcap
        logits = logits.masked_fill(~blocks.mask, torch.finfo(logits.dtype).min)
        out = torch.softmax(logits.float(), dim=-1).to(q.dtype) @ v
    out = out.transpose(1, 2).reshape(-1, h, d)  # (U * Lq, H, D)
    result = out.new_zeros(b * w, h, d)
    result[blocks.into] = out[blocks.take]
    return result.view(b, w, h, d), None


@contextmanager
def attending_in_blocks(base):
    """Run ``base`` with ``block_attention`` for the duration (its mask building is skipped:
    transformers builds no mask for an attention it has no mask function for)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, block_attention)
    before = base.config._attn_implementation
    base.config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        base.config._attn_implementation = before


@torch.inference_mode()
def score_packed(base, head, packed: list[list[Segment]], width: int, *, pad_id: int, device, dtype):
    """Scores of every tail in ``packed`` rows: (call rows, scores, real tokens, all tokens)."""
    ids, pos, blocks, reads = layout(packed, width, pad_id)
    blocks = Blocks(*(t.to(device) for t in vars(blocks).values()))
    with attending_in_blocks(base):
        out = base(
            input_ids=torch.from_numpy(ids).to(device),
            position_ids=torch.from_numpy(pos).to(device),
            winnow_blocks=blocks,
        )
    hidden = out.last_hidden_state  # (B, W, hidden)
    rows = [row for row, _, _ in reads]
    picked = hidden[torch.tensor([r for _, r, _ in reads]), torch.tensor([t for _, _, t in reads])]
    real = sum(len(s) for row_segs in packed for s in row_segs)
    return rows, head(picked)[:, 0].float().cpu().numpy(), real, len(packed) * width


def plan_even(groups: list[Group], width: int) -> tuple[list[list[Segment]], int, list[int]]:
    """``plan_rows`` with the width trimmed so the rows come out about equally full: the
    same number of rows as at ``width``, the last one no longer mostly padding.

    Returns (rows, the width used, call rows too long for ``width``)."""
    rows, too_long = plan_rows(_copy(groups), width)
    if len(rows) <= 1:
        used = max((sum(len(s) for s in row) for row in rows), default=1)
        return rows, used, too_long
    real = sum(len(s) for row in rows for s in row)
    longest = max(len(g.prompt) + max(len(t) for t in g.tails) for g in groups if g.tails)
    w = max(longest, -(-real // len(rows)))
    while w < width:
        tried, _ = plan_rows(_copy(groups), w)
        if len(tried) <= len(rows):
            return tried, w, too_long
        w = min(width, w + max(1, w // 100))
    return rows, width, too_long


def _copy(groups: list[Group]) -> list[Group]:
    return [Group(g.prompt, list(g.rows), list(g.tails)) for g in groups]
