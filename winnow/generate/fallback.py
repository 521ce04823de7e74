"""Sampling with transformers' own ``generate()``, for models the fast loop cannot run.

``decode.sample`` needs every per-row state in a cache it knows how to copy and shrink. A
model that keeps a cache of its own (MiniMax, RWKV, xLSTM), or state inside its modules
(RecurrentGemma), is sampled here instead: ``generate(num_return_sequences=n)``, one prompt
per call, so no prompt is ever padded (some of these models ignore the attention mask, and
left padding would leak into their state). The same sampling contract holds: the settings
are passed explicitly and the model's own ``generation_config`` is set aside for the call,
so none of its defaults (a top_k of 50, a repetition penalty) slips in; stop strings end a
row through a stopping criterion. ``probe`` decides, once per model, whether the fast loop
gives what ``generate()`` gives.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from winnow.generate import decode
from winnow.generate.decode import StopCheck


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
    extras: list[dict] | None = None,
    on_step: decode.StepHook | None = None,
    logprobs: decode.Logprobs | None = None,
) -> list[list[int]]:
    """Same arguments and result as ``decode.sample``: B*n token lists, prompt-major, each
    ending at its first EOS, at the token that completed a stop string, or at max_new_tokens.

    ``extras``: per prompt, the model inputs besides its token ids (a vision-language
    model's ``pixel_values`` and the like, as its processor made them), passed to ``generate``.
    ``on_step``: as in ``decode.sample`` (output row b*n + j is sample j of prompt b), called
    from a stopping criterion after each step of each prompt's ``generate`` call.
    ``logprobs``: filled from ``generate()``'s raw logits (``output_logits``); no token changes."""
    greedy = temperature == 0
    settings: dict = dict(
        repetition_penalty=repetition_penalty,
        num_return_sequences=1 if greedy else n,  # generate() refuses n > 1 greedy samples: all alike
        max_new_tokens=max_new_tokens,
        eos_token_id=sorted(eos_ids) or None,
        pad_token_id=pad_id,
        do_sample=not greedy,
    )
    if not greedy:  # top_k 0 = off (None would mean generate's default of 50)
        settings.update(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    if logprobs is not None:
        settings.update(return_dict_in_generate=True, output_logits=True)
    out: list[list[int]] = []
    with _neutral_generation_config(lm):
        for b, prompt in enumerate(prompts):
            ids = torch.tensor([prompt], device=lm.device)
            criteria: StoppingCriteriaList | None = None
            if on_step is not None:  # a watched call: the watch also sees what stop strings end
                first = b * (1 if greedy else n)
                criteria = StoppingCriteriaList([_Watched(len(prompt), stop, on_step, first, set(eos_ids))])
            elif stop is not None:
                criteria = StoppingCriteriaList([_StopText(len(prompt), stop)])
            more = {k: v.to(lm.device) for k, v in extras[b].items()} if extras is not None else {}
            got = lm.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), stopping_criteria=criteria, **settings, **more
            )
            rows = got.sequences if logprobs is not None else got
            samples = [_trim(row[len(prompt) :].tolist(), set(eos_ids), stop) for row in rows]
            samples = samples * n if greedy else samples
            if logprobs is not None:
                _score(logprobs, got.logits, samples, first_row=len(out), copies=n if greedy else 1)
            out += samples
    return out


def _score(logprobs: decode.Logprobs, logits: tuple, samples: list[list[int]], *, first_row: int, copies: int) -> None:
    """Fill ``logprobs`` for one prompt's rows from ``generate()``'s per-step raw logits (a
    tuple of (rows, V), one per step; a finished row's later steps are padding, left out).
    ``samples``: the rows' trimmed tokens; ``copies``: how often each row was repeated (greedy)."""
    for step, step_logits in enumerate(logits):
        scored = logprobs.log_softmax(step_logits)
        live = [r for r in range(len(samples) // copies) if step < len(samples[r])]  # a greedy row once
        if not live:
            continue
        tokens = torch.tensor([samples[r][step] for r in live], device=scored.device)
        logprobs.add([first_row + r for r in live], scored[live], tokens)
    for r in range(len(samples) // copies, len(samples)):  # greedy copies of the one decoded row
        logprobs.sampled[first_row + r] = list(logprobs.sampled[first_row])
        logprobs.confidence[first_row + r] = list(logprobs.confidence[first_row])
        logprobs.top[first_row + r] = list(logprobs.top[first_row])


def probe(lm, pad_id: int) -> str | None:
    """Why the fast loop cannot be trusted with this model, or None when it can.

    Greedy decoding of three short prompts of different lengths, by the fast loop (batched,
    so two are left-padded, n=2, and rows dropped mid-way) and by ``generate()`` (each
    prompt alone): a model that keeps per-row state outside the cache, or needs inputs the
    loop does not give, shows up as a difference or an error here. Costs a few dozen
    forwards of a handful of tokens, once per model load.
    """
    problem = decode.fast_path_problem(lm)
    if problem:
        return problem
    vocab = lm.config.get_text_config(decoder=True).vocab_size
    prompts = [[(7 * i + 13 * k) % vocab for i in range(k)] for k in (9, 3, 6)]
    free = sample(lm, prompts, n=1, eos_ids=[], max_new_tokens=6, pad_id=pad_id, temperature=0.0)  # generate()
    eos = free[0][2]  # ends prompt 0's samples at step 3, so rows leave the batch mid-way
    expected = [_trim(row, {eos}, None) for row in free for _ in range(2)]
    try:
        got = decode.sample(lm, prompts, n=2, eos_ids=[eos], max_new_tokens=6, pad_id=pad_id, temperature=0.0)
    except Exception as e:  # noqa: BLE001 -- any failure of the fast loop means: use generate()
        return f"the fast loop failed on {type(lm).__name__}: {type(e).__name__}: {e}".splitlines()[0]
    if got != expected:
        return f"the fast loop's greedy tokens differ from generate()'s on {type(lm).__name__}"
    return None


class _StopText(StoppingCriteria):
    """Ends each row whose completion (the tokens after the prompt) holds a stop string."""

    def __init__(self, prompt_len: int, check: StopCheck):
        self.prompt_len = prompt_len
        self.check = check

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        done = [self.check(row[self.prompt_len :].tolist()) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _Watched(StoppingCriteria):
    """``on_step`` told each running row's new token after every step (rows ``first`` + r of
    the call's output); ends the rows it ends, those whose completion holds a stop string, and
    remembers those that sampled an EOS, so the padding ``generate`` adds to them is never reported."""

    def __init__(self, prompt_len: int, check: StopCheck | None, on_step: decode.StepHook, first: int, eos: set[int]):
        self.prompt_len, self.check, self.on_step, self.first, self.eos = prompt_len, check, on_step, first, eos
        self.ended: set[int] = set()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        live = [r for r in range(input_ids.shape[0]) if r not in self.ended]
        tokens = input_ids[live, -1].tolist()
        go_on = self.on_step([self.first + r for r in live], tokens)
        for k, r in enumerate(live):
            stopped = self.check is not None and self.check(input_ids[r, self.prompt_len :].tolist())
            if tokens[k] in self.eos or stopped or (go_on is not None and not go_on[k]):
                self.ended.add(r)
        done = [r in self.ended for r in range(input_ids.shape[0])]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _trim(tokens: list[int], eos: set[int], stop: StopCheck | None) -> list[int]:
    """A row up to its first EOS (kept) or the token that completed a stop string; after
    that, ``generate`` pads finished rows."""
    end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
    if stop is not None:
        end = next((i + 1 for i in range(end) if stop(tokens[: i + 1])), end)
    return tokens[:end]


@contextlib.contextmanager
def _neutral_generation_config(lm):
    """Set the model's ``generation_config`` aside: ``generate`` fills every setting not passed
    explicitly from it, and winnow's sampling contract alone should decide."""
    saved = lm.generation_config
    lm.generation_config = GenerationConfig()
    try:
        yield
    finally:
        lm.generation_config = saved
