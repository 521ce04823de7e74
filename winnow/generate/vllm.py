"""The vLLM backend: vLLM's offline engine (``LLM``), n samples per request.

Prompts are rendered by ``chat.render``, the transformers backend's own code, and handed to
vLLM as token ids, so both backends see identical prompts. Each prompt is one request with
its own seed, drawn from the shard's seed and the prompt's id: a prompt's samples do not
depend on which other prompts share the call. ``finish_reason`` and ``num_tokens`` are
vLLM's own: 'stop' for EOS or a stop string (cut from the text), 'length' at max_tokens.
A vision-language model's prompt is its processor's chat template as token ids, image
markers not yet expanded, with the images as ``multi_modal_data``: vLLM expands them itself.

vLLM is an optional extra (``pip install -e '.[vllm]'``), imported only here. On a machine
without a GPU, ``bash scripts/setup_vllm.sh`` makes ``.venv-vllm`` with vLLM's CPU build.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from winnow.confidence import TokenLogprobs
from winnow.errors import WinnowError, install_hint
from winnow.generate import chat
from winnow.generate.contract import Sampling
from winnow.models import (
    is_vision_language,
    load_processor,
    load_tokenizer,
    refuse_encoder_decoder,
    resolve_dtype,
    resolve_model,
)
from winnow.records import Completion, Prompt

CPU_FREE_SHARE = 0.8
"""On CPU builds, without --gpu-memory-utilization, the engine takes this part of the memory
free at start-up (vLLM's own default, 0.92 of all memory, fails whenever other processes
hold some, after minutes of start-up and a long worker traceback)."""
WEIGHTS_HEADROOM = 1.5
"""The engine needs the weights plus room for activations and a KV cache: refused below this
many times the weights' size."""


def system_memory() -> tuple[int, int]:
    """(available, total) bytes of system memory, from /proc/meminfo (Linux)."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return info.get("MemAvailable", info["MemFree"]), info["MemTotal"]


def weights_bytes(path) -> int:
    """Bytes of the weight files in a model folder (safetensors, bin, gguf)."""
    from pathlib import Path

    return sum(p.stat().st_size for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))


def cpu_memory_share(requested: float | None, *, memory: tuple[int, int], weights: int) -> float | None:
    """The ``gpu_memory_utilization`` to give vLLM's CPU build (a share of system memory).

    ``requested`` (the user's --gpu-memory-utilization) is kept as given. Without it:
    ``CPU_FREE_SHARE`` of the memory free now, as a share of the total ``memory``
    (available, total bytes), rounded down to 0.01. When that leaves less than
    ``WEIGHTS_HEADROOM`` x ``weights`` bytes, refuse before the engine starts.

    >>> GiB = 2**30
    >>> cpu_memory_share(None, memory=(10 * GiB, 16 * GiB), weights=1 * GiB)
    0.5
    >>> cpu_memory_share(0.3, memory=(1 * GiB, 16 * GiB), weights=1 * GiB)
    0.3
    """
    if requested is not None:
        return requested
    available, total = memory
    share = int(CPU_FREE_SHARE * available / total * 100) / 100
    if share * total < WEIGHTS_HEADROOM * weights or share <= 0:
        raise WinnowError(
            f"backend 'vllm' on CPU: {available / 2**30:.1f} GiB of {total / 2**30:.1f} GiB memory is free, "
            f"too little for the model ({weights / 2**30:.2f} GiB of weights) and its cache; free some memory "
            "or set --gpu-memory-utilization (the share of system memory the engine may take)"
        )
    return share


class VLLMBackend:
    """``vllm.LLM`` over a local Hugging Face folder (or ``smollm2``).

    ``tensor_parallel_size``, ``gpu_memory_utilization`` and ``max_model_len`` go to the
    engine as given (None: vLLM's default, except ``gpu_memory_utilization`` on a CPU build:
    see ``cpu_memory_share``); ``engine_args`` holds any other ``LLM`` keyword
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
                f"backend 'vllm' needs vLLM: {install_hint('vllm')} (without a GPU: bash scripts/setup_vllm.sh)"
            ) from None
        self.model = model
        path = resolve_model(model)
        refuse_encoder_decoder(path)
        self.processor = load_processor(path) if is_vision_language(path) else None
        """A vision-language model's processor (None for a text model)."""
        self.tokenizer = self.processor.tokenizer if self.processor is not None else load_tokenizer(path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        options: dict = dict(
            model=str(path),
            tokenizer=str(path),
            dtype=str(resolve_dtype(dtype, device)).removeprefix("torch."),
            tensor_parallel_size=tensor_parallel_size,
            seed=0,  # every request carries its own seed; this one is never drawn from
        )
        if device == "cpu":  # vLLM's default share (0.92) of system memory fails when any is in use
            gpu_memory_utilization = cpu_memory_share(
                gpu_memory_utilization, memory=system_memory(), weights=weights_bytes(path)
            )
        if gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        self.llm = LLM(**options, **(engine_args or {}))

    def context_length(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def render(self, prompt: Prompt) -> list[int]:
        """Prompt token ids: the same code, and so the same ids, as the transformers backend
        (a vision-language model's: its images' tokens counted, as the processor expands them)."""
        if self.processor is not None:
            return chat.vision_inputs(self.processor, prompt)[0]
        return chat.render(self.tokenizer, prompt, self.model)

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        return [len(self.render(p)) for p in prompts]

    def request(self, prompt: Prompt):
        """vLLM's input for one prompt: token ids, and for a vision-language model the
        template's ids with image markers unexpanded and the images as ``multi_modal_data``."""
        from vllm.inputs import TokensPrompt

        if self.processor is None:
            return TokensPrompt(prompt_token_ids=self.render(prompt))
        text = chat.vision_text(self.processor, prompt)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template writes any BOS
        if not prompt.images:
            return TokensPrompt(prompt_token_ids=ids)
        return TokensPrompt(prompt_token_ids=ids, multi_modal_data={"image": [i.pil() for i in prompt.images]})

    def generate(self, prompts: list[Prompt], sampling: Sampling, seed: int) -> list[Completion]:
        """One request per prompt with ``n`` samples; rows grouped by prompt, in input order.

        Greedy decoding (temperature 0) runs once and repeats the sample n times: vLLM
        refuses n > 1 without sampling, and the n samples would agree anyway.
        """
        from vllm import SamplingParams

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
                logprobs=sampling.top_logprobs or None,  # None: none computed (0 would give the sampled token's)
            )
            for p in prompts
        ]
        requests = [self.request(p) for p in prompts]
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
                        logprobs=token_logprobs(c.token_ids, c.logprobs, sampling.top_logprobs),
                    )
                )
        return rows


def token_logprobs(token_ids, logprobs, k: int) -> TokenLogprobs | None:
    """A vLLM sample's log-probabilities as the contract has them; None unless asked (k > 0).

    ``logprobs``: one dict per sampled token, token id -> ``Logprob`` (``.logprob``), holding
    the k most likely tokens and the sampled one (k + 1 entries when it is not among them).
    vLLM's default ``logprobs_mode`` gives the model's raw distribution, as the hf backend does.

    >>> from types import SimpleNamespace as L
    >>> got = token_logprobs([7], [{3: L(logprob=-0.5), 9: L(logprob=-1.5), 7: L(logprob=-4.0)}], 2)
    >>> got.sampled, got.confidence
    ((-4.0,), (1.0,))
    """
    if not k:
        return None
    if logprobs is None or len(logprobs) != len(token_ids):
        raise WinnowError(f"vLLM returned no log-probabilities for {len(token_ids)} tokens, though {k} were asked for")
    sampled = tuple(float(step[t].logprob) for t, step in zip(token_ids, logprobs, strict=True))
    confidence = tuple(
        -float(np.mean(sorted((float(lp.logprob) for lp in step.values()), reverse=True)[:k])) for step in logprobs
    )
    return TokenLogprobs(sampled, confidence)


def request_seed(seed: int, prompt_id: str) -> int:
    """The seed of one prompt's request: from the shard's seed and the prompt's id.

    >>> request_seed(0, "a") == request_seed(0, "a") != request_seed(1, "a")
    True
    """
    return int(np.random.SeedSequence([seed, zlib.crc32(prompt_id.encode())]).generate_state(1)[0])
