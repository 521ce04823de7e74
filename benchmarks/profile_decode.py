"""Where a decode step of ``winnow.generate.decode.sample`` spends its time, by part.

    python benchmarks/profile_decode.py            # 16 prompts x N=8 x 64 new tokens, one thread
    python benchmarks/profile_decode.py --quick    # 4 prompts x N=4 x 8 new tokens

SmolLM2-135M-Instruct (``smollm2``, fp32, CPU), the prompts of ``bench_generate.py``. Each
part is timed with forward hooks on the model's modules (CPU ops run synchronously, so a
hook's clock is the op's time) and wrappers around the loop's own functions, decode steps
only (the prefill is reported apart). One torch thread by default: on a shared 2-core
machine the process's CPU time is then the time it computed, and the figures are shares
of one step. Parts:

- attention projections: the q, k, v and o linears; attention core: the rest of each
  attention module (rotary, the attention kernel, reshapes) less the cache update;
- cache update: ``ReservedLayer.update`` (writing the step's keys and values);
- MLP: gate, up and down linears with the activation; norms: the RMSNorms;
- LM head: the vocabulary projection; rest of the forward: embedding, mask building,
  rotary tables, the model's Python between modules;
- sampling: ``decode.pick``; loop: everything else in a step (stop checks, dropping
  finished rows, ``prepare_inputs_for_generation``, growing the mask).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from bench_generate import make_prompts

from winnow.generate import decode
from winnow.generate.hf import HFBackend

PARTS = (
    "attention projections",
    "attention core",
    "cache update",
    "MLP",
    "norms",
    "LM head",
    "rest of the forward",
    "sampling",
    "loop",
)


class Clock:
    """Seconds per part, decode steps only; ``decoding`` is set while a step's forward runs."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.decoding = False
        self.steps = 0
        self.rows = 0
        self.prefill = 0.0

    def hook(self, module, part: str, minus: tuple[str, ...] = ()) -> None:
        """Time ``module`` under ``part``; parts in ``minus`` run inside it and are taken off."""
        start: list[tuple[float, dict]] = []

        def before(*_):
            if self.decoding:
                start.append((time.perf_counter(), {m: self.seconds[m] for m in minus}))

        def after(*_):
            if self.decoding and start:
                t0, inner = start.pop()
                self.seconds[part] += time.perf_counter() - t0 - sum(self.seconds[m] - inner[m] for m in minus)

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


@contextmanager
def instrumented(lm, clock: Clock):
    """Hooks on the model's modules, and the loop's forward, sampling and cache update wrapped."""
    for layer in lm.model.layers:
        attn = layer.self_attn
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
            clock.hook(proj, "attention projections")
        clock.hook(attn, "attention core", minus=("attention projections", "cache update"))
        clock.hook(layer.mlp, "MLP")
        clock.hook(layer.input_layernorm, "norms")
        clock.hook(layer.post_attention_layernorm, "norms")
    clock.hook(lm.model.norm, "norms")
    clock.hook(lm.lm_head, "LM head")
    forward, pick, update = decode._forward, decode.pick, decode.ReservedLayer.update

    def timed_forward(lm_, ids, *args, first, **kw):
        t0 = time.perf_counter()
        clock.decoding = not first
        done = dict(clock.seconds)
        out = forward(lm_, ids, *args, first=first, **kw)
        clock.decoding = False
        if first:
            clock.prefill += time.perf_counter() - t0
        else:
            inner = sum(clock.seconds[p] - done.get(p, 0.0) for p in PARTS)
            clock.seconds["rest of the forward"] += time.perf_counter() - t0 - inner
            clock.steps += 1
            clock.rows += ids.shape[0]
        return out

    def timed_pick(*args, **kw):
        t0 = time.perf_counter()
        out = pick(*args, **kw)
        clock.seconds["sampling"] += time.perf_counter() - t0
        return out

    def timed_update(self, *args, **kw):
        t0 = time.perf_counter()
        out = update(self, *args, **kw)
        if clock.decoding:
            clock.seconds["cache update"] += time.perf_counter() - t0
        return out

    decode._forward, decode.pick, decode.ReservedLayer.update = timed_forward, timed_pick, timed_update
    try:
        yield
    finally:
        decode._forward, decode.pick, decode.ReservedLayer.update = forward, pick, update


def profile(backend: HFBackend, prompts: list[list[int]], n: int, max_new_tokens: int, seed: int) -> dict:
    """Run ``decode.sample`` once, instrumented; seconds per part and per step."""
    clock = Clock()
    torch.manual_seed(seed)
    kwargs = dict(eos_ids=sorted(backend.eos_ids), pad_id=backend.tokenizer.pad_token_id)
    with instrumented(backend.lm, clock):
        t0 = time.perf_counter()
        out = decode.sample(backend.lm, prompts, n=n, max_new_tokens=max_new_tokens, **kwargs)
        total = time.perf_counter() - t0
    decode_s = total - clock.prefill
    clock.seconds["loop"] = decode_s - sum(clock.seconds[p] for p in PARTS if p != "loop")
    return {
        "seconds": {p: clock.seconds[p] for p in PARTS},
        "decode_seconds": decode_s,
        "prefill_seconds": clock.prefill,
        "steps": clock.steps + 1,  # the last step samples without a forward after it
        "mean_rows": clock.rows / max(clock.steps, 1),
        "tokens": sum(len(r) for r in out),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the result here as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.n, args.max_new_tokens = 4, 4, 8
    torch.set_num_threads(args.threads)
    backend = HFBackend("smollm2", device="cpu")
    ids = sorted((backend.render(p) for p in make_prompts(args.prompts)), key=len, reverse=True)
    profile(backend, ids[:2], 2, 4, seed=0)  # warm-up: allocator, weights paged in
    cpu0 = time.process_time()
    r = profile(backend, ids, args.n, args.max_new_tokens, seed=0)
    r["cpu_seconds"] = time.process_time() - cpu0
    steps = r["steps"] - 1
    print(
        f"{args.prompts} prompts x N={args.n} x {args.max_new_tokens} new tokens, {args.threads} thread(s): "
        f"{r['tokens']} tokens, prefill {r['prefill_seconds']:.2f} s, {steps} decode forwards "
        f"({r['mean_rows']:.0f} rows on average) in {r['decode_seconds']:.2f} s"
    )
    print("\n| part | ms per step | share |\n|---|---:|---:|")
    for part in PARTS:
        s = r["seconds"][part]
        print(f"| {part} | {1000 * s / steps:.1f} | {s / r['decode_seconds']:.1%} |")
    print(f"| **one decode step** | **{1000 * r['decode_seconds'] / steps:.1f}** | 100% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), **r}, f, indent=1)
    return r


if __name__ == "__main__":
    main()
