"""Decode-step attention that reads each prompt's keys once for all of its n samples.

After the shared prefill the n samples of a prompt hold the same prompt keys and values
(the cache is copied n-fold). Plain attention still reads them once per row: for each of
the A rows and each key head a (group x head_dim) @ (head_dim x P + s) product, so small
that the kernel's overhead, not the arithmetic, sets its cost (on SmolLM2, 16 prompts x 8
samples, attention was a quarter of a decode step against ~5% of its arithmetic). Here the
softmax is split in two and merged exactly, as in cascade attention:

- the prompt part: the queries of all of a prompt's rows together against its keys, read
  once: (B, kv_heads, n * group, P) scores, one larger product per prompt and key head;
- the row's own part: each row against the s tokens it has sampled (all real, no mask);
- merged by their maxima and sums: softmax over the union, the same numbers up to float
  rounding (the order of the sums changes, so sampled tokens can differ in the last bit).

``ShareSlots`` says which row sits where (rows are dropped and moved as they finish).
The function is registered with transformers' ``AttentionInterface`` for decode steps only;
any call it does not cover (a prefill, a softcap, a sliding window, attention sinks) goes
to transformers' own SDPA attention, which gets the same mask as ever, and a model that
does not call the interface at all attends over its full cache as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from winnow.models import attention_swapped

MODEL_TYPES = ("llama", "qwen2", "qwen3", "gemma", "phi3", "olmo2", "starcoder2", "gpt_neox", "gpt2")
"""Models whose attention goes through the AttentionInterface, checked against ``generate()``
(tests/test_architectures.py). Not all do: Falcon, for one, tests for the name "sdpa" and
otherwise runs attention of its own, which a different name would break."""

ATTENTION = "winnow_shared_prefix"
"""The name ``shared_prefix_attention`` is registered under in transformers' AttentionInterface."""


@dataclass
class ShareSlots:
    """Where each of the A active rows sits among its prompt's slots.

    ``keys`` / ``values``: per layer, the prompts' keys and values (B, kv_heads, P, head_dim)
    as the prefill left them; ``bias`` (B, 1, 1, P): 0 on a real prompt token, -inf-like on
    padding; ``slots`` (B, m): the active row in each of a prompt's m slots (A, a zero query,
    where empty); ``where`` (A,): each row's slot, b * m + j.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    bias: torch.Tensor
    slots: torch.Tensor
    where: torch.Tensor

    def place(self, owner: torch.Tensor) -> None:
        """Set ``slots`` and ``where`` from ``owner`` (A,): the prompt of each active row.

        >>> s = ShareSlots([], [], torch.zeros(3, 1, 1, 1), torch.empty(0), torch.empty(0))
        >>> s.place(torch.tensor([0, 2, 0]))
        >>> s.slots.tolist(), s.where.tolist()
        ([[0, 2], [3, 3], [1, 3]], [0, 4, 1])
        """
        b, a = self.bias.shape[0], len(owner)
        order = torch.argsort(owner, stable=True)
        counts = torch.bincount(owner, minlength=b)
        m = max(int(counts.max()), 1)
        starts = torch.cumsum(counts, 0) - counts  # first position of each prompt in ``order``
        rank = torch.empty_like(owner)
        rank[order] = torch.arange(a, device=owner.device) - starts[owner[order]]
        self.where = owner * m + rank
        self.slots = torch.full((b * m,), a, dtype=torch.long, device=owner.device)
        self.slots[self.where] = torch.arange(a, device=owner.device)
        self.slots = self.slots.view(b, m)


def shared_prefix_attention(
    module, query, key, value, attention_mask, *, scaling=None, dropout=0.0, winnow_share=None, **kwargs
):
    """Attention of one decode step (an AttentionInterface function): query (A, H, 1, D),
    key and value (A, Hkv, P + s, D), the first P the prompt's (as ``winnow_share`` holds
    them once per prompt) and the last s the row's own. Returns (A, 1, H, D), as
    transformers' SDPA attention does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    share: ShareSlots | None = winnow_share
    plain = share is None or query.shape[2] != 1 or getattr(module, "layer_idx", None) is None
    if plain or any(kwargs.get(k) is not None for k in ("softcap", "sliding_window", "s_aux", "position_bias")):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    assert share is not None
    pk, pv = share.keys[module.layer_idx], share.values[module.layer_idx]  # (B, Hkv, P, D)
    a, h, _, d = query.shape
    b, hkv, p, _ = pk.shape
    g, m = h // hkv, share.slots.shape[1]
    q = query.reshape(a, hkv, g, d) * (scaling if scaling is not None else d**-0.5)  # (A, Hkv, g, D)

    # The prompt part: every row of a prompt at once, its keys read once.
    qp = torch.cat([q, q.new_zeros(1, hkv, g, d)])[share.slots]  # (B, m, Hkv, g, D)
    qp = qp.permute(0, 2, 1, 3, 4).reshape(b, hkv, m * g, d)
    s1 = qp @ pk.transpose(-1, -2) + share.bias  # (B, Hkv, m*g, P)
    m1, l1, o1 = _softmax_parts(s1, pv)

    def per_row(t: torch.Tensor) -> torch.Tensor:  # (B, Hkv, m*g, X) -> (A, Hkv, g, X)
        x = t.shape[-1]
        return t.view(b, hkv, m, g, x).permute(0, 2, 1, 3, 4).reshape(b * m, hkv, g, x)[share.where]

    m1, l1, o1 = per_row(m1), per_row(l1), per_row(o1)

    # The row's own part: the tokens it sampled, all real.
    s2 = q @ key[:, :, p:].transpose(-1, -2)  # (A, Hkv, g, s)
    m2, l2, o2 = _softmax_parts(s2, value[:, :, p:])

    top = torch.maximum(m1, m2)
    w1, w2 = l1 * torch.exp(m1 - top), l2 * torch.exp(m2 - top)  # each part's share of the whole sum
    out = (o1 * w1 + o2 * w2) / (w1 + w2)  # (A, Hkv, g, D)
    return out.reshape(a, 1, h, d), None


def _softmax_parts(scores: torch.Tensor, values: torch.Tensor):
    """(max, sum of exp(scores - max), softmax @ values) over the last axis, for merging.

    Built on ``torch.softmax``: its fused kernel is several times faster on CPU than
    ``exp`` of the scores (slow on the -inf-like scores of masked keys); the sum is read
    back from it, as the largest probability is exp(0) / sum."""
    probs = torch.softmax(scores, dim=-1)
    return scores.amax(-1, keepdim=True), 1 / probs.amax(-1, keepdim=True), probs @ values


def attending_shared(lm):
    """Run ``lm`` with ``shared_prefix_attention`` (and SDPA's masks) for the duration."""
    from transformers.masking_utils import sdpa_mask

    return attention_swapped(lm, ATTENTION, shared_prefix_attention, mask=sdpa_mask)
