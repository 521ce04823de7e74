"""Packed reward scoring: several prompts' continuations in one row, almost no padding.

The shared-prefix path (``winnow.rewards.prefix``) reads each prompt once but still pads:
prompts to the chunk's longest, continuations to their batch's longest. Packing lays
segments end to end instead. A segment is one prompt followed by its completions' tails::

    [prompt_a | tail_a1 | tail_a2 | ... ][prompt_b | tail_b1 | ...][pad]

and rows of ``width`` tokens are filled with segments one after another, so only the end
of a row is padding. One forward pass scores every tail: a 4-D attention
mask lets a prompt token see the earlier tokens of its own prompt, and a tail token its
own prompt and the earlier tokens of its own tail (never another tail or another
segment); positions restart at 0 for each prompt and go on from the prompt's length in
each tail, so every tail sees exactly what it would see as a full row, and the score head
reads it at its last token. The scores equal the full rows' (float rounding aside).

A prompt whose tails do not all fit in the rest of a row goes on in the next row, behind
the prompt again (``plan_rows``). Only decoder classifiers pooled at the last token (``GenericForSequence
Classification``) whose attention takes an explicit 4-D mask take this path; the caller
checks the scores against full rows on a probe first.
"""

from __future__ import annotations

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


def layout(packed: list[list[Segment]], width: int, pad_id: int):
    """Tensors of a batch of packed rows: ids, positions (B, W); the boolean mask
    (B, 1, W, W); and for each scored tail (call row, packed row, index of its last token)."""
    b = len(packed)
    ids = np.full((b, width), pad_id, dtype=np.int64)
    pos = np.zeros((b, width), dtype=np.int64)
    seg = np.full((b, width), -1, dtype=np.int64)  # -1: padding
    part = np.zeros((b, width), dtype=np.int64)  # 0: prompt, i >= 1: tail i
    reads: list[tuple[int, int, int]] = []
    for r, row_segs in enumerate(packed):
        at = 0
        for k, s in enumerate(row_segs):
            p = len(s.prompt)
            ids[r, at : at + p] = s.prompt
            pos[r, at : at + p] = np.arange(p)
            seg[r, at : at + p] = k
            at += p
            for i, (row, tail) in enumerate(zip(s.rows, s.tails, strict=True), start=1):
                n = len(tail)
                ids[r, at : at + n] = tail
                pos[r, at : at + n] = p + np.arange(n)
                seg[r, at : at + n] = k
                part[r, at : at + n] = i
                at += n
                reads.append((row, r, at - 1))
    same = seg[:, :, None] == seg[:, None, :]
    causal = np.tril(np.ones((width, width), dtype=bool))[None]
    visible = (part[:, None, :] == 0) | (part[:, None, :] == part[:, :, None])
    mask = same & causal & visible & (seg[:, :, None] >= 0)
    mask |= np.eye(width, dtype=bool)[None]  # a padding token sees itself: no row of the softmax is empty
    return ids, pos, mask[:, None], reads


@torch.inference_mode()
def score_packed(base, head, packed: list[list[Segment]], width: int, *, pad_id: int, device, dtype):
    """Scores of every tail in ``packed`` rows: (call rows, scores, real tokens, all tokens)."""
    ids, pos, mask, reads = layout(packed, width, pad_id)
    # an additive float mask: 0 where a key is visible, the dtype's minimum where not
    bias = torch.zeros(mask.shape, dtype=dtype)
    bias.masked_fill_(~torch.from_numpy(mask), torch.finfo(dtype).min)
    out = base(
        input_ids=torch.from_numpy(ids).to(device),
        position_ids=torch.from_numpy(pos).to(device),
        attention_mask=bias.to(device),
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
