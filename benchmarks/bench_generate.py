"""Completion tokens per second of the transformers backend on CPU, against the book's loop.

    python benchmarks/bench_generate.py                    # 16 prompts x N=8 x 64 new tokens, one thread
    python benchmarks/bench_generate.py --quick            # smoke size (~1 min)
    python benchmarks/bench_generate.py --json out.json    # the result as JSON too

Model: SmolLM2-135M-Instruct (``smollm2``, fp32), chat template applied, temperature 1.0, no
top-k/top-p. Methods, all on the same model object, the same prompts and the same seeds:

- ``book: generate(), left padding``: the book's loop reimplemented: prompts left-padded in
  fixed batches of 8, in input order, ``model.generate(num_return_sequences=N)``;
- ``one at a time``: ``model.generate`` with one sequence per call (on a subset of the
  prompts; off unless ``--one-at-a-time-prompts`` is given);
- ``HFBackend batch_size=B``: the backend as the generate stage runs it (16 is the default).

Beside them, in the same run, this machine's fp32 matmul ceiling (``ceiling.py``): tokens/s
if a decode step of N x 16 rows were the model's linear layers alone; each method's share
of it says how much of its time is that arithmetic.

Only real completion tokens count: up to and including the first EOS, as
``Completion.num_tokens`` does. The machine may be shared, so methods run interleaved,
each repeat in turn, after one warm-up call each, and each keeps its best repeat. With one
torch thread (the default) the process's CPU time is the time it computed, whatever else
the machine runs, and ratios are judged on it; with more threads, on wall time.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from ceiling import matmul_ceiling

from winnow.generate import Sampling
from winnow.generate.hf import HFBackend
from winnow.records import Prompt

SUBJECTS = [
    "a rainy Monday commute",
    "an office printer",
    "a kitchen table",
    "a parking garage",
    "a bus timetable",
    "a pencil sharpener",
    "a laundry room",
    "a grocery receipt",
    "a hallway carpet",
    "a filing cabinet",
    "a traffic light",
    "a paper clip",
    "a train platform at noon",
    "a dishwasher cycle",
    "a stapler",
    "a coffee mug",
]
NOTE = (
    "The town library reopened after a long renovation that replaced the leaking roof. "
    "Electricians rewired the reading rooms and added outlets under every desk. "
    "A quiet study hall now fills the second floor, with tall windows facing the park. "
    "Volunteers moved thousands of books back onto the shelves over two weekends. "
    "The children's section gained a small stage for story time on Saturday mornings. "
    "The old card catalogue was kept as a display near the front entrance. "
    "Opening hours were extended to nine in the evening on weekdays. "
    "A cafe cart outside the entrance sells tea and pastries until noon. "
)
BOOK = "book: generate(), left padding"
TARGETS = {"vs_book": 3.0}


def make_prompts(count: int) -> list[Prompt]:
    """``count`` prompts: even ones are one-line requests (~38 tokens once templated), odd
    ones ask about a note of 1..8 sentences (~60..155 tokens)."""
    sentences = NOTE.split(". ")
    prompts = []
    for i in range(count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        if i % 2 == 0:
            text = f"Describe {subject} in two sentences."
        else:
            k = 1 + (i // 2) % 8
            text = f"Read this note, then describe {subject} in two sentences.\n\n" + ". ".join(sentences[:k]) + "."
        prompts.append(Prompt(id=f"p{i:02d}", text=text))
    return prompts


def real_tokens(rows: list[list[int]], eos_ids: set[int]) -> int:
    """Tokens up to and including each row's first EOS (the rest is padding)."""
    total = 0
    for row in rows:
        stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
        total += len(row) if stop is None else stop + 1
    return total


@torch.inference_mode()
def hf_generate(
    backend: HFBackend, prompts: list[Prompt], s: Sampling, seed: int, prompts_per_call: int, n_per_call: int
) -> tuple[int, int]:
    """(completions, real tokens) from plain ``model.generate`` over fixed batches, in order."""
    torch.manual_seed(seed)
    tok, rows = backend.tokenizer, []
    tok.padding_side = "left"
    for start in range(0, len(prompts), prompts_per_call):
        ids = [backend.render(p) for p in prompts[start : start + prompts_per_call]]
        batch = tok.pad({"input_ids": ids}, return_tensors="pt").to(backend.device)
        for _ in range(s.n // n_per_call):
            out = backend.lm.generate(
                **batch,
                max_new_tokens=s.max_new_tokens,
                do_sample=True,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k,  # top_k=0 is off; None would mean generate's default, 50
                num_return_sequences=n_per_call,
                pad_token_id=tok.pad_token_id,
                eos_token_id=sorted(backend.eos_ids),
            )
            rows += out[:, batch["input_ids"].shape[1] :].tolist()
    return len(rows), real_tokens(rows, backend.eos_ids)


def winnow_backend(
    backend: HFBackend, prompts: list[Prompt], s: Sampling, seed: int, batch_size: int
) -> tuple[int, int]:
    backend.batch_size = batch_size
    out = backend.generate(prompts, s, seed=seed)
    return len(out), sum(c.num_tokens for c in out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size: 8 prompts, N=4, 16 new tokens, 1 repeat")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--one-at-a-time-prompts", type=int, default=0, help="subset for the slowest baseline (0: off)")
    parser.add_argument("--batch-sizes", default="16", help="HFBackend batch sizes to measure; the first is judged")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", help="also write the result to this file as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.repeats = 8, 4, 16, 1
    torch.set_num_threads(args.threads)
    clock = "cpu_s" if args.threads == 1 else "wall_s"

    s = Sampling(n=args.n, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens)
    prompts = make_prompts(args.prompts)
    subset = prompts[: args.one_at_a_time_prompts]  # mixed lengths too: even short, odd long
    backend = HFBackend("smollm2", device="cpu")
    lengths = backend.prompt_lengths(prompts)
    print(
        f"{len(prompts)} prompts, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
        f"N={s.n}, {s.max_new_tokens} new tokens, {args.threads} thread(s), judged on {clock}"
    )

    judged = f"HFBackend batch_size={args.batch_sizes.split(',')[0]}"
    methods = {BOOK: lambda seed: hf_generate(backend, prompts, s, seed, 8, s.n)}
    if subset:
        methods["one at a time"] = lambda seed: hf_generate(backend, subset, s, seed, 1, 1)
    for b in args.batch_sizes.split(","):
        methods[f"HFBackend batch_size={b}"] = lambda seed, b=int(b): winnow_backend(backend, prompts, s, seed, b)

    warm = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4)
    hf_generate(backend, prompts[:2], warm, 0, 2, 2)  # first calls are slow (weights paged in, allocator)
    winnow_backend(backend, prompts[:2], warm, 0, 2)
    results: dict[str, dict] = {}
    ceilings = []
    for rep in range(args.repeats):
        ceilings.append(matmul_ceiling(backend.lm, rows=16 * s.n))
        for name, run in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            completions, tokens = run(rep)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"  repeat {rep} {name}: {tokens} tokens in {cpu:.1f} CPU s, {wall:.1f} s wall", flush=True)
            r = dict(completions=completions, tokens=tokens, cpu_s=cpu, wall_s=wall)
            r["tokens_per_s"] = tokens / r[clock]
            if name not in results or r["tokens_per_s"] > results[name]["tokens_per_s"]:
                results[name] = r
    ceiling = max(ceilings, key=lambda c: c["tokens_per_s"])
    print(
        f"\nmatmul ceiling: {ceiling['tokens_per_s']:.0f} tokens/s ({ceiling['gflops']:.1f} GFLOP/s, "
        f"every linear layer over {16 * s.n} rows; best of {len(ceilings)})"
    )

    book = results[BOOK]["tokens_per_s"]
    print(
        f"\n| method | completions | completion tokens | CPU s | wall s | tokens/s ({clock}) | vs the book's loop | share of the matmul ceiling |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        r["vs_book"], r["ceiling_share"] = r["tokens_per_s"] / book, r["tokens_per_s"] / ceiling["tokens_per_s"]
        print(
            f"| {name} | {r['completions']} | {r['tokens']} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} "
            f"| {r['tokens_per_s']:.1f} | {r['vs_book']:.2f}x | {r['ceiling_share']:.0%} |"
        )
    checks = {key: results[judged][key] >= goal for key, goal in TARGETS.items()}
    for key, goal in TARGETS.items():
        print(f"{'PASS' if checks[key] else 'FAIL'}: {judged} {key} = {results[judged][key]:.2f}x (target >= {goal}x)")
    rows = [
        {
            "check": f"{name} tokens/s over the book's generate() loop",
            "measured": results[name]["vs_book"],
            "target": f">= {TARGETS['vs_book']:g}" if name == judged else "-",
            "passed": checks["vs_book"] if name == judged else None,
            "detail": f"{results[name]['tokens_per_s']:.0f} tok/s, {results[name]['ceiling_share']:.0%} of the ceiling",
        }
        for name in results
        if name.startswith("HFBackend")
    ]
    out = {
        "benchmark": "generate",
        "rows": rows,
        "passed": all(checks.values()),
        "config": vars(args),
        "ceiling": ceiling,
        "results": results,
        "judged": judged,
        "targets": checks,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
