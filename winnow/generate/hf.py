"""The transformers backend: batched ``generate`` with left padding, on CPU or CUDA."""

from __future__ import annotations

import torch

from winnow.errors import WinnowError
from winnow.generate import Sampling
from winnow.models import load_tokenizer, pick_device, resolve_model
from winnow.records import Completion, Prompt


class HFBackend:
    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 8):
        from transformers import AutoModelForCausalLM

        self.model = model
        self.batch_size = batch_size
        self.device = pick_device(device)
        path = resolve_model(model)
        self.tokenizer = load_tokenizer(path)
        self.tokenizer.padding_side = "left"  # generation appends on the right
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
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

    @torch.inference_mode()
    def generate(self, prompts: list[Prompt], sampling: Sampling, seed: int) -> list[Completion]:
        torch.manual_seed(seed)
        out: list[Completion] = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._generate_batch(prompts[start : start + self.batch_size], sampling)
        return out

    def _generate_batch(self, prompts: list[Prompt], sampling: Sampling) -> list[Completion]:
        ids = [self.render(p) for p in prompts]
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        greedy = sampling.temperature == 0
        kwargs = dict(do_sample=False) if greedy else dict(
            do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None
        )
        sequences = self.lm.generate(
            **batch,
            max_new_tokens=sampling.max_new_tokens,
            # Greedy samples are all alike: decode once and repeat, instead of n times.
            num_return_sequences=1 if greedy else sampling.n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
            **kwargs,
        )
        if greedy:
            sequences = sequences.repeat_interleave(sampling.n, dim=0)
        # Rows are prompt-major: row b*n + j is sample j of prompt b.
        new_tokens = sequences[:, batch["input_ids"].shape[1] :].tolist()
        out = []
        for row, tokens in enumerate(new_tokens):
            prompt, sample = prompts[row // sampling.n], row % sampling.n
            stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
            kept = tokens if stop is None else tokens[: stop + 1]
            out.append(Completion(
                prompt_id=prompt.id,
                sample_index=sample,
                model=self.model,
                text=self.tokenizer.decode(kept, skip_special_tokens=True),
                num_tokens=len(kept),
                finish_reason="length" if stop is None else "stop",
            ))
        return out
