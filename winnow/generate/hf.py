"""The transformers backend: batched sampling with left padding, on CPU or CUDA.

The loop is ``decode.sample``; a model it cannot run (``fallback.probe`` says why, once, at
load) is sampled with transformers' ``generate()`` by ``fallback.sample``, same contract.
A vision-language model (``models.is_vision_language``) is loaded with its processor and
always sampled by ``fallback.sample``, which hands ``generate()`` the processor's image inputs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from winnow.confidence import TokenLogprobs
from winnow.generate import chat, decode, fallback
from winnow.generate.contract import Sampling, Watch
from winnow.generate.stop import StopStrings
from winnow.models import (
    is_vision_language,
    load_causal_lm,
    load_tokenizer,
    load_vision_lm,
    pick_device,
    resolve_dtype,
    resolve_model,
)
from winnow.records import Completion, Prompt


class HFBackend:
    """A transformers causal LM, sampled in batches of ``batch_size`` prompts
    (``batch_size * n`` sequences at first, fewer as they finish)."""

    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 8, dtype: str = "auto"):
        self.model = model
        self.batch_size = batch_size
        self.device = pick_device(device)
        path = resolve_model(model)
        self.processor = None
        """A vision-language model's processor (None for a text model)."""
        if is_vision_language(path):
            self.lm, self.processor = load_vision_lm(path, dtype=resolve_dtype(dtype, self.device), device=self.device)
            self.tokenizer = self.processor.tokenizer
        else:
            self.tokenizer = load_tokenizer(path)
            self.lm = load_causal_lm(path, dtype=resolve_dtype(dtype, self.device), device=self.device)
        eos = self.lm.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.fallback_reason = (
            "a vision-language model's images reach it only through generate()"
            if self.processor is not None
            else fallback.probe(self.lm, self.tokenizer.pad_token_id)
        )
        """Why the fast loop is not used for this model (None when it is)."""
        if self.fallback_reason:
            print(
                f"winnow: {model}: {self.fallback_reason}; sampling with transformers' generate() instead (slower)",
                file=sys.stderr,
            )

    def context_length(self) -> int:
        config = self.lm.config if self.processor is None else self.lm.config.get_text_config(decoder=True)
        return int(getattr(config, "max_position_embeddings", None) or 2048)

    def render(self, prompt: Prompt) -> list[int]:
        """Prompt token ids (``chat.render``: the chat template when there is one; a
        vision-language model's processor, its images' tokens included)."""
        if self.processor is not None:
            return chat.vision_inputs(self.processor, prompt)[0]
        return chat.render(self.tokenizer, prompt, self.model)

    def _encode(self, prompts: list[Prompt]) -> tuple[list[list[int]], list[dict] | None]:
        """(token ids per prompt, per prompt the other model inputs: None for a text model)."""
        if self.processor is None:
            return [self.render(p) for p in prompts], None
        encoded = [chat.vision_inputs(self.processor, p) for p in prompts]
        return [ids for ids, _ in encoded], [more for _, more in encoded]

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        return [len(self.render(p)) for p in prompts]

    on_batch: Callable[[int], object] | None = None
    """Told the completions made as each batch ends (a progress bar that moves within a shard)."""

    streams = True
    """``generate`` takes a ``watch`` (text as it is sampled, cancellation), with either loop."""

    def generate(
        self, prompts: list[Prompt], sampling: Sampling, seed: int, watch: Watch | None = None
    ) -> list[Completion]:
        """Prompts are decoded in batches of ``batch_size``, longest first, so that batch-mates
        have similar lengths and little padding; the rows come back in the prompts' order.

        Each batch runs ``decode.sample``: one prefill per prompt shared by its n samples,
        finished samples dropped from the batch as they stop. All batches draw from one
        random stream seeded with ``seed``, so the same prompts and seed give the same rows.
        ``watch`` (optional) is told streamed prompts' text step by step and can cancel a
        prompt: a cancelled prompt stops sampling at the next step (or is skipped when its
        batch has not started) and gets rows cut short, which the caller discards.
        """
        torch.manual_seed(seed)
        stops = StopStrings(self.tokenizer, sampling.stop)
        ids, extras = self._encode(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))  # stable: ties keep input order
        tokens: dict[int, list[list[int]]] = {}  # prompt index -> its n completions' token ids
        scores: dict[int, list[TokenLogprobs | None]] = {}  # prompt index -> their log-probabilities
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            if watch is not None:
                for i in [i for i in batch if watch.cancelled(i)]:
                    tokens[i], scores[i] = [[] for _ in range(sampling.n)], [None] * sampling.n
                batch = [i for i in batch if i not in tokens]
                if not batch:
                    continue
            hook = _StepWatch(self.tokenizer, watch, batch, sampling, stops) if watch is not None else None
            more = [extras[i] for i in batch] if extras is not None else None
            sampled, logprobs = self._sample([ids[i] for i in batch], sampling, stops, hook, more)
            for i, samples, got in zip(batch, sampled, logprobs, strict=True):
                tokens[i], scores[i] = samples, got
            if self.on_batch is not None:
                self.on_batch(len(batch) * sampling.n)
        n = sampling.n
        return [
            self._completion(prompt, j, tokens[i][j], stops, scores[i][j])
            for i, prompt in enumerate(prompts)
            for j in range(n)
        ]

    def _sample(
        self,
        ids: list[list[int]],
        sampling: Sampling,
        stops: StopStrings,
        hook: decode.StepHook | None = None,
        extras: list[dict] | None = None,
    ) -> tuple[list[list[list[int]]], list[list[TokenLogprobs | None]]]:
        """Token ids of ``sampling.n`` completions for each prompt: shape (B, n, <= max_new_tokens);
        and their log-probabilities, (B, n), None each unless ``sampling.top_logprobs``.
        ``extras``: a vision-language model's image inputs per prompt (``chat.vision_inputs``)."""
        greedy = sampling.temperature == 0
        n = 1 if greedy else sampling.n  # greedy samples are all alike: decode once and repeat
        loop = fallback.sample if self.fallback_reason else decode.sample
        watched: dict = {"on_step": hook} if hook is not None else {}
        if extras is not None:
            watched["extras"] = extras
        scored = decode.Logprobs(sampling.top_logprobs, keep_top=sampling.top_tokens) if sampling.top_logprobs else None
        if scored is not None:
            watched["logprobs"] = scored
        rows = loop(
            self.lm,
            ids,
            n=n,
            max_new_tokens=sampling.max_new_tokens,
            eos_ids=sorted(self.eos_ids),
            pad_id=self.tokenizer.pad_token_id,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repetition_penalty=sampling.repetition_penalty,
            stop=stops.hit if stops else None,
            **watched,
        )
        # rows are prompt-major: row b*n + j is sample j of prompt b
        copies = sampling.n if greedy else 1
        per_row: list[TokenLogprobs | None] = [None] * len(rows)
        if scored is not None:
            per_row = [
                TokenLogprobs(
                    sampled=tuple(scored.sampled[i]),
                    confidence=tuple(scored.confidence[i]),
                    tokens=tuple(row) if sampling.top_tokens else (),
                    top=tuple(scored.top[i]),
                )
                for i, row in enumerate(rows)
            ]
        return (
            [rows[b * n : (b + 1) * n] * copies for b in range(len(ids))],
            [per_row[b * n : (b + 1) * n] * copies for b in range(len(ids))],
        )

    def _completion(
        self,
        prompt: Prompt,
        sample_index: int,
        tokens: list[int],
        stops: StopStrings,
        logprobs: TokenLogprobs | None = None,
    ) -> Completion:
        """``tokens`` ends at its first EOS (kept, and counted), at the token that completed a
        stop string (the text is cut before the stop string), or at max_new_tokens."""
        if not tokens:  # a cancelled prompt that never started: discarded by the caller
            return Completion(
                prompt_id=prompt.id,
                sample_index=sample_index,
                model=self.model,
                text="",
                num_tokens=0,
                finish_reason="length",
            )
        text, stopped = stops.cut(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return Completion(
            prompt_id=prompt.id,
            sample_index=sample_index,
            model=self.model,
            text=text,
            num_tokens=len(tokens),
            finish_reason="stop" if stopped or tokens[-1] in self.eos_ids else "length",
            logprobs=logprobs,
        )


class _StepWatch:
    """``decode.StepHook`` for one batch: text deltas of streamed prompts, and cancellation.

    Row ``b * n + j`` of the batch is sample j of prompt ``batch[b]``. A streamed row's text
    is decoded anew each step and only its settled part is reported: the last ``hold``
    characters wait (a stop string still being completed must never be sent; ``hold`` is
    the longest stop string's length minus one), as does a trailing U+FFFD (half of a
    multi-byte character), and with a tokenizer that cleans up tokenization spaces, the
    last word (its decode may still change). What is sent is therefore always a prefix of
    the final text.
    """

    def __init__(self, tokenizer, watch: Watch, batch: list[int], sampling: Sampling, stops: StopStrings):
        self.tokenizer, self.watch, self.batch = tokenizer, watch, batch
        self.n = 1 if sampling.temperature == 0 else sampling.n  # greedy: one row stands for all n
        self.copies = sampling.n if sampling.temperature == 0 else 1
        self.hold = max((len(s) for s in sampling.stop), default=1) - 1
        self.stops = stops
        self.cleanup = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self.tokens: dict[int, list[int]] = {}
        self.sent: dict[int, int] = {}

    def __call__(self, rows: list[int], tokens: list[int]) -> list[bool]:
        go_on = []
        for row, token in zip(rows, tokens, strict=True):
            prompt = self.batch[row // self.n]
            if self.watch.cancelled(prompt):
                go_on.append(False)
                continue
            go_on.append(True)
            if self.watch.streams(prompt):
                self._report(prompt, row, token)
        return go_on

    def _report(self, prompt: int, row: int, token: int) -> None:
        seen = self.tokens.setdefault(row, [])
        seen.append(token)
        text, _ = self.stops.cut(self.tokenizer.decode(seen, skip_special_tokens=True))
        settled = text[: len(text) - self.hold].rstrip("\ufffd")
        if self.cleanup:  # " ." may yet become "." (and " n'" -> "n't"): wait for the word's end
            settled = settled[: max(settled.rfind(" "), 0)]
        sent = self.sent.get(row, 0)
        if len(settled) > sent:
            self.sent[row] = len(settled)
            for copy in range(self.copies):
                self.watch.text(prompt, (row % self.n) + copy, settled[sent:])
