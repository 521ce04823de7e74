"""The transformers backend: batched sampling with left padding, on CPU or CUDA (loop in ``decode``)."""

from __future__ import annotations

import torch

from winnow.errors import WinnowError
from winnow.generate import Sampling, decode
from winnow.models import load_tokenizer, pick_device, resolve_model
from winnow.records import Completion, Prompt


class HFBackend:
    """A transformers causal LM, sampled with ``decode.sample`` in batches of ``batch_size``
    prompts (``batch_size * n`` sequences at first, fewer as they finish)."""

    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 8):
        from transformers import AutoModelForCausalLM

        self.model = model
        self.batch_size = batch_size
        self.device = pick_device(device)
        path = resolve_model(model)
        self.tokenizer = load_tokenizer(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self.lm = lm.to(self.device).eval()  # type: ignore[arg-type]  # transformers' stub types .to poorly
        eos = self.lm.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    def context_length(self) -> int:
        return int(getattr(self.lm.config, "max_position_embeddings", None) or 2048)

    def render(self, prompt: Prompt) -> list[int]:
        """Prompt token ids: the chat template when the tokenizer has one, else the raw text.

        The template already writes any BOS it wants, so we tokenize its output without
        adding special tokens again (otherwise BOS would be doubled).
        """
        tok = self.tokenizer
        if tok.chat_template:
            text = tok.apply_chat_template(prompt.as_messages(), tokenize=False, add_generation_prompt=True)
            return tok(text, add_special_tokens=False)["input_ids"]
        if prompt.text is None:
            raise WinnowError(f"prompt {prompt.id!r} has chat messages, but model {self.model} has no chat template")
        return tok(prompt.text, add_special_tokens=True)["input_ids"]

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        return [len(self.render(p)) for p in prompts]

    def generate(self, prompts: list[Prompt], sampling: Sampling, seed: int) -> list[Completion]:
        """Prompts are decoded in batches of ``batch_size``, longest first, so that batch-mates
        have similar lengths and little padding; the rows come back in the prompts' order.

        Each batch runs ``decode.sample``: one prefill per prompt shared by its n samples,
        finished samples dropped from the batch as they stop. All batches draw from one
        random stream seeded with ``seed``, so the same prompts and seed give the same rows.
        """
        torch.manual_seed(seed)
        ids = [self.render(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))  # stable: ties keep input order
        tokens: dict[int, list[list[int]]] = {}  # prompt index -> its n completions' token ids
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, samples in zip(batch, self._sample([ids[i] for i in batch], sampling), strict=True):
                tokens[i] = samples
        n = sampling.n
        return [self._completion(prompt, j, tokens[i][j]) for i, prompt in enumerate(prompts) for j in range(n)]

    def _sample(self, ids: list[list[int]], sampling: Sampling) -> list[list[list[int]]]:
        """Token ids of ``sampling.n`` completions for each prompt: shape (B, n, <= max_new_tokens)."""
        greedy = sampling.temperature == 0
        n = 1 if greedy else sampling.n  # greedy samples are all alike: decode once and repeat
        rows = decode.sample(
            self.lm,
            ids,
            n=n,
            max_new_tokens=sampling.max_new_tokens,
            eos_ids=sorted(self.eos_ids),
            pad_id=self.tokenizer.pad_token_id,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
        )
        # rows are prompt-major: row b*n + j is sample j of prompt b
        return [rows[b * n : (b + 1) * n] * (sampling.n if greedy else 1) for b in range(len(ids))]

    def _completion(self, prompt: Prompt, sample_index: int, tokens: list[int]) -> Completion:
        """``tokens`` ends at its first EOS (kept, and counted) or at max_new_tokens."""
        stop = tokens[-1] in self.eos_ids
        return Completion(
            prompt_id=prompt.id,
            sample_index=sample_index,
            model=self.model,
            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
            num_tokens=len(tokens),
            finish_reason="stop" if stop else "length",
        )
