"""A sampling loop for n completions per prompt: one shared prefill, and a KV cache that
sheds finished rows.

Why not ``model.generate(num_return_sequences=n)``: that repeats every prompt n times
*before* the prefill, so each prompt is encoded n times, and it keeps stepping rows that
have already sampled EOS until the whole batch is done. Here the B prompts are encoded
once, the cache is copied n-fold, and each step drops the rows that just finished, so the
work per step tracks the sequences still running. The logits processors are transformers'
own, so repetition_penalty, temperature, top_k, top_p and min_p mean what they mean in
``generate``; each step's model inputs come from the model's own
``prepare_inputs_for_generation``, as in ``generate``.

Two CPU costs that ``generate`` pays per step are avoided as well (measured on SmolLM2,
64 rows): ``DynamicCache`` grows by ``torch.cat``, copying the whole cache every step
(~15% of a step); ``ReservedLayer`` writes into room reserved up front instead. And
``torch.multinomial`` over a 49k vocabulary takes ~40 ms per step; inverse-CDF sampling
(a cumsum and a binary search) draws from the same distribution in ~2 ms.

Which models: plain full attention gets ``ReservedLayer``s; sliding-window, linear-attention,
convolution and state-space (Mamba) layers get transformers' ``DynamicCache`` layers, whose
rows ``repeat_rows`` / ``select_rows`` copy and drop (recurrent and conv states included).
A model this loop cannot run (``fast_path_problem``) is sampled by ``winnow.generate.fallback``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from transformers import Cache, DynamicCache, LogitsProcessorList, cache_utils
from transformers.cache_utils import DynamicLayer, LinearAttentionCacheLayerMixin
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from winnow.generate import shared_attention as sa

StopCheck = Callable[[list[int]], bool]
"""Given a row's tokens so far, whether a stop string has appeared (``StopStrings.hit``)."""

StepHook = Callable[[list[int], list[int]], "list[bool] | None"]
"""Called after every decode step with the output rows still running and the token each just
got (two lists of the same length); may return, per row, whether it should go on (False
ends that row now, as a finished one). The server streams tokens and cancels with it."""

CACHE_LAYERS = tuple(
    getattr(cache_utils, name)
    for name in ("DynamicLayer", "LinearAttentionCacheLayerMixin", "DummyLayer")  # DummyLayer: transformers >= 5.20
    if hasattr(cache_utils, name)
)
"""Cache layer kinds whose rows ``repeat_rows`` and ``select_rows`` know how to copy (a
``DummyLayer`` holds nothing: its batch ops do nothing)."""


def make_warpers(temperature: float, top_p: float, top_k: int, min_p: float = 0.0) -> LogitsProcessorList:
    """Temperature, then top-k, then top-p, then min-p: the order ``generate`` applies them in.

    ``top_k=0``, ``top_p=1`` and ``min_p=0`` switch those filters off. (``generate`` given
    ``top_k=None`` would instead fall back to its default top_k of 50.)
    """
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p))
    if min_p > 0.0:
        warpers.append(MinPLogitsWarper(min_p=min_p))
    return warpers


def fast_path_problem(lm) -> str | None:
    """Why ``sample`` cannot run this model, or None when it can.

    It needs a model that takes transformers' ``DynamicCache`` (a few keep a cache of their
    own: MiniMax, RWKV, xLSTM, ...), keeps no per-row state in its modules (RecurrentGemma
    sets one up with ``_setup_cache``), has a forward that takes the cache and an attention
    mask, and cache layers whose rows it knows how to copy and drop.
    """
    name = type(lm).__name__
    supports_cache = getattr(lm, "_supports_default_dynamic_cache", lambda: True)
    if not supports_cache():
        return f"{name} keeps a cache of its own"
    if any(hasattr(module, "_setup_cache") for module in lm.modules()):
        return f"{name} keeps state inside its modules"
    params = inspect.signature(lm.forward).parameters
    for arg in (cache_kwarg(lm), "attention_mask"):
        if arg not in params:
            return f"{name}.forward takes no {arg}"
    unknown = {type(layer).__name__ for layer in new_cache(lm, reserve=1).layers if not isinstance(layer, CACHE_LAYERS)}
    if unknown:
        return f"{name} uses cache layers the fast loop does not know: {', '.join(sorted(unknown))}"
    return None


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
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    stop: StopCheck | None = None,
    on_step: StepHook | None = None,
    logprobs: Logprobs | None = None,
) -> list[list[int]]:
    """Sample ``n`` completions for each of the B prompts (lists of token ids).

    Returns B*n token lists, prompt-major: entry b*n + j is sample j of prompt b. Each
    list ends at (and includes) the first EOS, at the token after which ``stop`` sees a stop
    string, or at ``max_new_tokens`` tokens. ``temperature=0`` is greedy (the repetition
    penalty still applies; pass ``n=1``). Randomness comes from torch's global generator: seed
    it. ``on_step`` (``StepHook``) sees each step's tokens and can end rows early (as a
    finished row does, an ended one shifts the random draws of the rows after it).
    ``logprobs`` (``Logprobs``) gets each row's log-probabilities; they change no token.
    """
    device = lm.device
    warpers = make_warpers(temperature, top_p, top_k, min_p) if temperature > 0 else None
    penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty) if repetition_penalty != 1.0 else None
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    cache = new_cache(lm, reserve=max_new_tokens)
    fixed = _fixed_inputs(lm)
    logits, mask, seen, share = _prefill(lm, prompts, n, pad_id, cache, fixed, penalized=penalty is not None)
    next_pos = mask.sum(-1)  # (A,) position of each active row's next token
    rows = torch.arange(len(prompts) * n, device=device)  # (A,) output row of each active row
    out: list[list[int]] = [[] for _ in range(len(prompts) * n)]
    if share is not None:  # decode steps read each prompt's keys once for its n samples
        share.place(rows // n)
        fixed = {**fixed, "forward": {**fixed["forward"], "winnow_share": share}}
    with sa.attending_shared(lm) if share is not None else contextlib.nullcontext():
        for step in range(max_new_tokens):
            tokens, active = _picked(logits, warpers, penalty, seen, rows, logprobs)  # (A,), A output rows
            for row, token in zip(active, tokens.tolist(), strict=True):
                out[row].append(token)
            running = _unstopped(~torch.isin(tokens, eos), out, active, tokens, stop, on_step)  # (A,)
            if step == max_new_tokens - 1 or not running.any():
                break
            if not running.all():  # drop finished rows from the cache and the batch
                keep = fill_holes(running)
                select_rows(cache, keep)
                rows, tokens, mask, next_pos = rows[keep], tokens[keep], mask[keep], next_pos[keep]
                seen = seen[keep] if seen is not None else None
                if share is not None:
                    share.place(rows // n)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            seen = torch.cat([seen, tokens[:, None]], dim=1) if seen is not None else None
            logits = _forward(lm, tokens[:, None], mask, next_pos[:, None], cache, fixed, first=False)
            next_pos = next_pos + 1
    return out


def _picked(logits, warpers, penalty, seen, rows: torch.Tensor, logprobs: Logprobs | None):
    """One step's tokens (``pick``) and the output row of each (a list); ``logprobs``, when
    given, scores them from the logits as they were before ``pick``."""
    scored = logprobs.log_softmax(logits) if logprobs is not None else None
    tokens = pick(logits, warpers, penalty=penalty, seen=seen)  # (A,)
    active = rows.tolist()
    if logprobs is not None and scored is not None:
        logprobs.add(active, scored, tokens)
    return tokens, active


class Logprobs:
    """Per-token log-probabilities of what ``sample`` (or ``fallback.sample``) draws, for
    confidence (``winnow.confidence``): filled when handed to the loop.

    From the model's own distribution, ``log_softmax`` of the raw logits (before the
    repetition penalty, temperature and the top-k/top-p/min-p filters). ``sampled[r]``: the
    log-probability of each token of output row r; ``confidence[r]``: each token's
    confidence, minus the mean of the ``top_k`` highest log-probabilities at that position.
    With ``keep_top`` also ``top[r]``: each position's ``top_k`` (token id, log-probability)
    pairs, most likely first (a server's logprobs body names them).
    """

    def __init__(self, top_k: int, *, keep_top: bool = False):
        self.top_k = top_k
        self.keep_top = keep_top
        # output row -> its tokens' values; a row that sampled nothing reads as []
        self.sampled: defaultdict[int, list[float]] = defaultdict(list)
        self.confidence: defaultdict[int, list[float]] = defaultdict(list)
        self.top: defaultdict[int, list[tuple[tuple[int, float], ...]]] = defaultdict(list)

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """(A, V) log-probabilities in float32, a new tensor (the logits are left as they are)."""
        return torch.log_softmax(logits.float(), dim=-1)

    def add(self, rows: list[int], scored: torch.Tensor, tokens: torch.Tensor) -> None:
        """One step: ``scored`` (A, V) from ``log_softmax``, ``tokens`` (A,) sampled, ``rows``
        the output row of each of the A rows."""
        sampled = scored.gather(1, tokens[:, None]).squeeze(1).tolist()
        top = scored.topk(self.top_k, dim=-1)
        confidence = (-top.values.mean(dim=-1)).tolist()
        for row, lp, c in zip(rows, sampled, confidence, strict=True):
            self.sampled[row].append(lp)
            self.confidence[row].append(c)
        if self.keep_top:
            for row, ids, values in zip(rows, top.indices.tolist(), top.values.tolist(), strict=True):
                self.top[row].append(tuple(zip(ids, values, strict=True)))


def _unstopped(
    running: torch.Tensor, out: list[list[int]], active: list[int], tokens: torch.Tensor, stop, on_step
) -> torch.Tensor:
    """``running`` (A,) less the rows whose text now holds a stop string (``stop``) and those
    ``on_step`` ends. active: the output row of each of the A rows; tokens (A,): this step's."""
    if stop is not None:
        running &= torch.tensor([not stop(out[row]) for row in active], device=running.device)
    if on_step is not None:
        go_on = on_step(active, tokens.tolist())
        if go_on is not None:
            running &= torch.tensor(go_on, dtype=torch.bool, device=running.device)
    return running


def _prefill(
    lm, prompts: list[list[int]], n: int, pad_id: int, cache: Cache, fixed: dict, *, penalized: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, sa.ShareSlots | None]:
    """Prefill the B prompts once into ``cache`` (only the last position's logits are
    needed), then copy each prompt's cache, mask and logits to its n samples.

    Returns logits (B*n, V), attention mask (B*n, L), when ``penalized`` the tokens the
    repetition penalty looks at (B*n, L; padding filled), else None, and the prompts' own
    keys and values for ``shared_attention`` where it applies (see ``_share_slots``), else
    None. Row b*n + j is sample j of prompt b.
    """
    ids, mask = left_pad(prompts, pad_id, lm.device)  # (B, L)
    if all(isinstance(layer, ReservedLayer) for layer in cache.layers):
        logits = _prefill_unpadded(lm, prompts, cache, fixed)  # (B, V)
    else:  # recurrent and conv states cannot be laid out after the fact: prefill left-padded
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L): padding does not shift positions
        logits = _forward(lm, ids, mask, positions, cache, fixed, first=True)  # (B, V)
    seen = fill_padding(ids, mask) if penalized else None  # (B, L)
    share = _share_slots(lm, cache, mask, fixed) if n > 1 else None
    if n > 1:  # (B, ...) -> (B*n, ...)
        repeat_rows(cache, n)
        logits, mask = logits.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        seen = seen.repeat_interleave(n, dim=0) if seen is not None else None
    return logits, mask, seen, share


def _share_slots(lm, cache: Cache, mask: torch.Tensor, fixed: dict) -> sa.ShareSlots | None:
    """The prompts' keys and values as the prefill left them (B, ...), for
    ``shared_attention``; None where it does not apply: a model not in its ``MODEL_TYPES``,
    a layer other than ``ReservedLayer``,
    an attention other than SDPA (chosen by the user or the model), or a forward that takes
    no extra keyword arguments to hand it over with."""
    if not all(isinstance(layer, ReservedLayer) for layer in cache.layers):
        return None
    if lm.config.model_type not in sa.MODEL_TYPES:
        return None
    if lm.config._attn_implementation != "sdpa" or not fixed["takes_kwargs"]:
        return None
    layers: list = cache.layers
    keys = [layer.keys.contiguous() for layer in layers]  # (B, kv_heads, P, head_dim), copied once
    values = [layer.values.contiguous() for layer in layers]
    bias = torch.zeros(mask.shape[0], 1, 1, mask.shape[1], dtype=keys[0].dtype, device=mask.device)
    bias.masked_fill_(mask[:, None, None, :] == 0, torch.finfo(bias.dtype).min)
    return sa.ShareSlots(keys, values, bias, slots=bias.new_empty(0), where=bias.new_empty(0))


def _prefill_unpadded(lm, prompts: list[list[int]], cache: Cache, fixed: dict) -> torch.Tensor:
    """Last-position logits (B, V) of the prompts, prefilled without padding: prompts of one
    length run together, each group with a cache of its own, whose keys and values then go
    into ``cache``'s ``ReservedLayer``s left-padded to the longest prompt (zeros under the mask).

    A padded prefill computes every pad position in every layer and attends under a mask, the
    slow path of the attention kernel; on 16 chat prompts of 38-160 tokens it computed 2,560
    positions for 1,190 real ones.
    """
    width = max(len(p) for p in prompts)
    by_length: dict[int, list[int]] = {}
    for b, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(b)
    reserved = [layer for layer in cache.layers if isinstance(layer, ReservedLayer)]
    logits: torch.Tensor | None = None
    for length, rows in by_length.items():
        filled: list = [DynamicLayer() for _ in reserved]  # each holds (len(rows), heads, length, head_dim)
        part = Cache(layers=filled)
        ids = torch.tensor([prompts[b] for b in rows], dtype=torch.long, device=lm.device)
        positions = torch.arange(length, device=lm.device).expand(len(rows), length)
        got = _forward(lm, ids, torch.ones_like(ids), positions, part, fixed, first=True)  # (len(rows), V)
        if logits is None:
            logits = got.new_empty(len(prompts), got.shape[-1])
        logits[rows] = got
        for layer, got_layer in zip(reserved, filled, strict=True):
            layer.place(got_layer.keys, got_layer.values, rows, batch=len(prompts), width=width)
    assert logits is not None
    return logits


def _forward(lm, ids, mask, positions, cache: Cache, fixed: dict, *, first: bool) -> torch.Tensor:
    """Last-position logits (A, V) of one forward, with the inputs the model's own
    ``prepare_inputs_for_generation`` makes (e.g. Mamba drops the mask after the prefill)."""
    inputs = lm.prepare_inputs_for_generation(
        ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        is_first_iteration=first,
        **{fixed["cache_kwarg"]: cache},
    )
    return lm(**{**fixed["forward"], **inputs}).logits[:, -1, :]  # the model's own choice wins (Bamba)


def _fixed_inputs(lm) -> dict:
    """What every forward of this model gets: the cache's keyword, and ``logits_to_keep=1``
    where the model takes it (logits of the last position only); and whether its forward
    takes extra keyword arguments (which it hands down to the attention function)."""
    takes = inspect.signature(lm.forward).parameters
    return {
        "cache_kwarg": cache_kwarg(lm),
        "forward": {"logits_to_keep": 1} if "logits_to_keep" in takes else {},
        "takes_kwargs": any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()),
    }


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


def pick(
    logits: torch.Tensor,
    warpers: LogitsProcessorList | None,
    *,
    penalty: RepetitionPenaltyLogitsProcessor | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row from logits (A, V): argmax when greedy, else a warped sample.

    ``penalty`` (with ``seen``, (A, S), the prompt and completion tokens of each row) comes
    first, greedy or not, as in ``generate``. Sampling inverts the CDF: the first token whose
    cumulative probability exceeds u ~ U(0, total). A token with probability 0 (cut by
    top-k/top-p/min-p) adds nothing to the cumsum, so it is never the first to exceed u; u
    is kept strictly below the total so that some token always does.
    """
    if penalty is not None:
        logits = penalty(seen, logits.float())
    if warpers is None:
        return logits.argmax(-1)
    probs = torch.softmax(warpers(None, logits.float()), dim=-1)  # type: ignore[arg-type]  # (A, V); these warpers ignore input_ids
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]  # (A, 1), 1 up to rounding
    u = torch.minimum(torch.rand_like(total) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


def fill_padding(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ids`` (B, L) with each row's left padding replaced by that row's first real token,
    so that a repetition penalty sees only real tokens (never the pad token).

    >>> fill_padding(torch.tensor([[0, 0, 7, 8], [5, 6, 7, 8]]), torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist()
    [[7, 7, 7, 8], [5, 6, 7, 8]]
    """
    first = ids.gather(1, mask.argmax(-1, keepdim=True))  # (B, 1): argmax finds the first 1
    return torch.where(mask.bool(), ids, first)


def repeat_rows(cache: Cache, n: int) -> None:
    """Row b becomes rows b*n .. b*n+n-1, in every layer: keys/values, conv and recurrent states."""
    for layer in cache.layers:
        if hasattr(layer, "batch_repeat_interleave"):  # attention part (DynamicLayer and kin)
            layer.batch_repeat_interleave(n)
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            _map_states(layer, lambda t: t.repeat_interleave(n, dim=0))


def select_rows(cache: Cache, keep: torch.Tensor) -> None:
    """Row i becomes old row ``keep[i]``, in every layer (see ``repeat_rows``)."""
    for layer in cache.layers:
        if hasattr(layer, "batch_select_indices"):
            layer.batch_select_indices(keep)
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            _map_states(layer, lambda t: t[keep])


def _map_states(layer: LinearAttentionCacheLayerMixin, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Apply ``fn`` to a linear-attention layer's conv and recurrent states (dim 0 is the row).
    transformers' own layer has ``reorder_cache`` (rows picked, as in beam search), but no
    batch ops, so ``Cache.batch_repeat_interleave`` would fail on it."""
    for states in (layer.conv_states, layer.recurrent_states):
        for i, state in states.items():
            if state is not None:
                states[i] = fn(state)


def new_cache(lm, reserve: int) -> Cache:
    """``ReservedLayer``s for a model of plain full-attention layers (Llama, Qwen2, ...); for
    sliding-window, linear-attention, convolution or state-space layers, transformers' own
    ``DynamicCache`` layers for the model's layer types."""
    config = lm.config.get_text_config(decoder=True)
    kinds = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    if getattr(config, "sliding_window", None) or any(kind != "full_attention" for kind in kinds):
        return DynamicCache(config=config)
    return Cache(layers=[ReservedLayer(reserve) for _ in kinds])


def cache_kwarg(lm) -> str:
    """The cache's keyword in this model's forward: ``cache`` (transformers >= 5.20),
    ``past_key_values``, or ``cache_params`` (Mamba models before 5.20)."""
    params = inspect.signature(lm.forward).parameters
    return next((name for name in ("cache", "past_key_values", "cache_params") if name in params), "past_key_values")


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

    def place(self, keys: torch.Tensor, values: torch.Tensor, rows: list[int], *, batch: int, width: int) -> None:
        """Write a prefill's keys and values (len(rows), heads, length, head_dim) into rows
        ``rows`` of a (batch, heads, width + reserve, head_dim) buffer, right-aligned at
        ``width`` (left padding); the padding stays zero, so masked keys are finite."""
        if self._kbuf is None:
            self.lazy_initialization(keys, values)
            shape = (batch, keys.shape[1], width + self.reserve, keys.shape[-1])
            self._kbuf, self._vbuf = keys.new_zeros(shape), values.new_zeros(shape)
        index = torch.tensor(rows, device=keys.device)
        self._kbuf[index, :, width - keys.shape[-2] : width] = keys
        self._vbuf[index, :, width - keys.shape[-2] : width] = values
        self.keys, self.values = self._kbuf[:, :, :width], self._vbuf[:, :, :width]

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
