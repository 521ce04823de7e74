"""Packed reward scoring: several prompts' continuations in one row, no padding.

The shared-prefix path (``winnow.rewards.prefix``) reads each prompt once but still pads:
prompts to the chunk's longest, continuations to their batch's longest. Packing lays
segments end to end instead. A segment is one prompt followed by its completions' tails::

    [prompt_a | tail_a1 | tail_a2 | ... ][prompt_b | tail_b1 | ...]

Each row is one forward pass of its own length (batch size 1), so nothing is padded. The
linear layers run over the row as it is; attention (``block_attention``, registered with
transformers' AttentionInterface for the call) runs per *unit* instead of over the row: a
prompt's tokens see the earlier tokens of their prompt, a tail's tokens their prompt and
the earlier tokens of their tail (never another tail or another segment). So attention
costs what it would in the unit's own full row, not W^2 as a dense 4-D mask over a W-token
row does (at W = 1,024 that was ~1.3x the work of the rest of a SmolLM2-sized model).
Positions restart at 0 for each prompt and go on from the prompt's length in
each tail, so every tail sees exactly what it would see as a full row, and the score head
reads it at its last token. The scores equal the full rows' (float rounding aside).

``plan_rows`` packs whole prompts into rows of at most ``width`` tokens; only a prompt
whose tails alone overflow a row is split, going on in the next row behind the prompt
again. Only decoder classifiers pooled at the last token (``GenericForSequence
Classification``) whose attention goes through the AttentionInterface take this path; the
caller checks the scores against full rows on a probe first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from winnow.models import attention_swapped
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
    """Pack the groups into rows of at most ``width`` tokens.

    A group that fits in a row is kept whole (splitting it would read its prompt twice and,
    with rows of their own length, save no padding); groups go first-fit, largest first. A
    group longer than a row is cut into segments that each fill a row, longest tails first.
    Returns (rows of segments, call rows that fit in no row: prompt + tail > width).
    """
    segments: list[Segment] = []
    too_long: list[int] = []
    for g in groups:
        items = sorted(zip(g.rows, g.tails, strict=True), key=lambda rt: -len(rt[1]))
        too_long += [r for r, t in items if len(g.prompt) + len(t) > width]
        items = [(r, t) for r, t in items if len(g.prompt) + len(t) <= width]
        while items:
            seg, room, kept = Segment(g.prompt, [], []), width - len(g.prompt), []
            for r, t in items:  # longest first
                if len(t) <= room:
                    seg.rows.append(r)
                    seg.tails.append(t)
                    room -= len(t)
                else:
                    kept.append((r, t))
            segments.append(seg)
            items = kept
    rows: list[list[Segment]] = []
    free: list[int] = []  # tokens left in each row
    for seg in sorted(segments, key=len, reverse=True):
        k = next((k for k, left in enumerate(free) if len(seg) <= left), None)
        if k is None:
            rows.append([])
            free.append(width)
            k = len(rows) - 1
        rows[k].append(seg)
        free[k] -= len(seg)
    return rows, too_long


ATTENTION = "winnow_packed"
"""The name ``block_attention`` is registered under in transformers' AttentionInterface."""


@dataclass
class Units:
    """Units of one kind (prompts, or tails) in a packed row, each padded to the longest.

    ``queries`` (U * Lq,) and ``keys`` (U * Lk,) are token positions in the row, unit by
    unit; ``bias`` (U, 1, Lq, Lk) is 0 where a query sees a key and -inf-like where not;
    ``take`` (Q,) picks the real queries out of the U * Lq outputs, ``into`` (Q,) says
    where in the row they go.
    """

    queries: torch.Tensor
    keys: torch.Tensor
    bias: torch.Tensor
    take: torch.Tensor
    into: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        """(U, Lq, Lk)."""
        u, _, lq, lk = self.bias.shape
        return u, lq, lk


def units(spans: list[tuple[np.ndarray, np.ndarray, int]], dtype) -> Units:
    """``Units`` from (query positions, key positions, how many leading keys every query
    sees) per unit; the rest of the keys are the queries themselves, seen causally."""
    lq, lk = max(len(q) for q, _, _ in spans), max(len(k) for _, k, _ in spans)
    queries = np.zeros((len(spans), lq), dtype=np.int64)
    keys = np.zeros((len(spans), lk), dtype=np.int64)
    seen = np.zeros((len(spans), lq, lk), dtype=bool)
    seen[:, :, 0] = True  # a padding query sees one key: no row of the softmax is empty
    take = []
    for u, (q, k, shared) in enumerate(spans):
        n = len(q)
        queries[u, :n], keys[u, : len(k)] = q, k
        seen[u, :n, :shared] = True
        seen[u, :n, shared : shared + n] = np.tril(np.ones((n, n), dtype=bool))
        take.append(u * lq + np.arange(n))
    bias = torch.zeros(seen.shape, dtype=dtype)
    bias.masked_fill_(~torch.from_numpy(seen), torch.finfo(dtype).min)
    return Units(
        torch.from_numpy(queries.reshape(-1)),
        torch.from_numpy(keys.reshape(-1)),
        bias[:, None],
        torch.from_numpy(np.concatenate(take)),
        torch.from_numpy(np.concatenate([q for q, _, _ in spans])),
    )


@dataclass
class Blocks:
    """Who attends to whom in a packed row: ``parts``, the row's units in kinds of about
    one size (its prompts; its tails, shortest to longest, ``BUCKET`` at a time), and
    ``last`` (T,), the positions the score head reads."""

    parts: list[Units]
    last: torch.Tensor

    def to(self, device) -> Blocks:
        move = lambda u: Units(*(t.to(device) for t in vars(u).values()))  # noqa: E731
        return Blocks([move(u) for u in self.parts], self.last.to(device))


BUCKET = 4
"""Tails attended together: each is padded to the longest of its bucket, so sorting them by
length and taking a few at a time keeps the padded work near the real one."""


def layout(row: list[Segment], *, dtype=torch.float32):
    """One packed row: ids and positions (L,), its ``Blocks``, and for each scored tail
    (call row, position of its last token)."""
    length = sum(len(s) for s in row)
    ids = np.zeros(length, dtype=np.int64)
    pos = np.zeros(length, dtype=np.int64)
    prompt_spans, tail_spans = [], []
    reads: list[tuple[int, int]] = []
    at = 0
    for s in row:
        p = len(s.prompt)
        prompt = np.arange(at, at + p)
        ids[at : at + p], pos[at : at + p] = s.prompt, np.arange(p)
        prompt_spans.append((prompt, prompt, 0))
        at += p
        for call_row, tail in zip(s.rows, s.tails, strict=True):
            n = len(tail)
            ids[at : at + n], pos[at : at + n] = tail, p + np.arange(n)
            tail_spans.append((np.arange(at, at + n), np.concatenate([prompt, np.arange(at, at + n)]), p))
            at += n
            reads.append((call_row, at - 1))
    tail_spans.sort(key=lambda span: len(span[1]))
    buckets = [tail_spans[k : k + BUCKET] for k in range(0, len(tail_spans), BUCKET)]
    blocks = Blocks(
        [units(prompt_spans, dtype), *(units(b, dtype) for b in buckets)],
        torch.tensor([t for _, t in reads], dtype=torch.long),
    )
    return ids, pos, blocks, reads


def block_attention(module, query, key, value, attention_mask, *, scaling=None, winnow_blocks=None, **kwargs):
    """Attention over the units of one packed row only (an AttentionInterface function).

    query (1, H, L, D), key and value (1, Hkv, L, D), as transformers hands them over;
    returns (1, L, H, D) as its own attention functions do. Each unit gathers its queries
    and keys and attends among them alone, so the work grows with the units' sizes, not
    with L^2. ``softcap`` (Gemma 2) is applied; a sliding window needs nothing, since the
    caller packs only rows whose prompt and tail fit in it.
    """
    blocks: Blocks = winnow_blocks
    _, h, length, d = query.shape
    out = query.new_zeros(length, h, d)
    for part in blocks.parts:
        out.index_copy_(0, part.into, _attend(query[0], key[0], value[0], part, scaling, kwargs.get("softcap")))
    return out[None], None


def _attend(query, key, value, part: Units, scaling, softcap) -> torch.Tensor:
    """The outputs (Q, H, D) of one kind of unit; query (H, L, D), key and value (Hkv, L, D)."""
    u, lq, lk = part.shape
    h, hkv, d = query.shape[0], key.shape[0], query.shape[-1]
    q = query.index_select(1, part.queries).view(h, u, lq, d).transpose(0, 1)  # (U, H, Lq, D)
    k = key.index_select(1, part.keys).view(hkv, u, lk, d).transpose(0, 1)  # (U, Hkv, Lk, D)
    v = value.index_select(1, part.keys).view(hkv, u, lk, d).transpose(0, 1)
    if softcap is None:
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=part.bias, scale=scaling, enable_gqa=hkv != h
        )
    else:  # Gemma 2 caps its logits, which the fused kernel cannot do
        g = h // hkv  # query heads per key head: grouped, so keys are not repeated
        logits = (q.reshape(u, hkv, g * lq, d) @ k.transpose(-1, -2)).view(u, hkv, g, lq, lk)
        logits = torch.tanh(logits * (scaling or d**-0.5) / softcap) * softcap
        weights = torch.softmax((logits + part.bias[:, :, None]).float(), dim=-1).to(q.dtype)
        out = (weights.view(u, hkv, g * lq, lk) @ v).view(u, h, lq, d)
    return out.transpose(1, 2).reshape(u * lq, h, d).index_select(0, part.take)


def attending_in_blocks(base):
    """Run ``base`` with ``block_attention`` for the duration (its mask building is skipped:
    transformers builds no mask for an attention it has no mask function for)."""
    return attention_swapped(base, ATTENTION, block_attention)


@torch.inference_mode()
def score_packed(base, head, row: list[Segment], *, device, dtype):
    """Scores of every tail in one packed row: (call rows, scores (T,), tokens computed)."""
    ids, pos, blocks, reads = layout(row, dtype=dtype)
    with attending_in_blocks(base):
        out = base(
            input_ids=torch.from_numpy(ids)[None].to(device),
            position_ids=torch.from_numpy(pos)[None].to(device),
            winnow_blocks=blocks.to(device),
        )
    picked = out.last_hidden_state[0, blocks.last.to(device)]  # (T, hidden)
    return [r for r, _ in reads], head(picked)[:, 0].float().cpu().numpy(), len(ids)
