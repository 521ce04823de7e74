"""Benchmark reward-model scoring on CPU: what batching does to padding, speed and memory.

Run by hand: ``python benchmarks/bench_score.py`` (full size, a few minutes) or with
``--quick``. Builds a random Llama-shaped sequence-classification model in a temp folder
(no network, no downloaded weights), loads it with ``winnow.rewards.classifier.ClassifierReward``,
and scores the same token ids three ways, so the only difference is batching:

  (a) input order, fixed batch size, right-padded (the naive loop);
  (b) sorted by length, fixed batch size;
  (c) winnow's ``plan_batches``: sorted by length, packed under a padded-token budget of
      which at most ``max_padding`` (2%) may be padding.

Each pass is the loop of ``ClassifierReward.__call__`` after tokenizing: ``_score_with_retry``
on each batch, scores written back to the input position. (b) and (c) run interleaved,
b, c, b, c, ..., and the fastest pass of each is kept, so that other work on the machine
hurts both alike; (a) runs once: its padding makes it several times slower, so its margin
is wide and a second pass would double the run. torch gets one intra-op thread by default:
on a small shared machine two threads wait on each other at every op (several times slower
when other work runs). ``main(argv)`` returns the table rows for a runner to collect.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


# ---------------------------------------------------------------- a model and data, in-process


def make_words(n: int, seed: int) -> list[str]:
    """n distinct made-up words (2-3 syllables), enough for a BPE to give each its own token."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables, size=rng.integers(2, 4))))
    return sorted(words)


def build_reward_model(folder: Path, words: list[str], *, hidden: int, layers: int, heads: int, seed: int) -> Path:
    """A random Llama with a one-label score head and a byte-level BPE trained on ``words``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|im_end|>", "<|im_start|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8192,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Each word after a space and after a newline (how a message starts), so both forms merge.
    tok.train_from_iterator([" ".join(words), "\n".join(words), "user assistant"] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(  # Llama's MLP ratio: intermediate ~ 8/3 hidden, a multiple of 16
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        num_labels=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_pairs(
    n: int, words: list[str], seed: int, lo: int = 16, hi: int = 1024, template_tokens: int = 14
) -> tuple[list, list]:
    """n (prompt, completion) pairs whose token lengths are long-tailed: lognormal (median 48,
    sigma 1) clipped to [lo, hi], as with sampled completions: many short, a few very long.
    Each word is one token and the chat template adds ``template_tokens``, so the lengths
    after ``ClassifierReward.tokenize`` are exactly the drawn ones."""
    rng = np.random.default_rng(seed)
    target = np.clip(rng.lognormal(np.log(48), 1.0, size=n), lo, hi).astype(int)
    prompts, completions = [], []
    for t in target:
        p = int(rng.integers(1, min(12, t - template_tokens)))  # at least one word each side
        prompts.append(" ".join(rng.choice(words, size=p)))
        completions.append(" ".join(rng.choice(words, size=t - template_tokens - p)))
    return prompts, completions


def single_token_words(tokenizer, words: list[str]) -> list[str]:
    """The words that are one token both after a space and at the start of a message."""
    tok = tokenizer.tokenize
    return [w for w in words if len(tok(" " + w)) == 1 and len(tok("\n" + w)) == 2]


# ---------------------------------------------------------------- measuring


def fixed_batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[i : i + size] for i in range(0, len(order), size)]  # the last may be short


def peak_rss_during(fn) -> tuple[object, float]:
    """fn()'s result and the growth of peak resident memory (MiB) while it ran.

    torch's CPU allocations are invisible to tracemalloc, so read the kernel's high-water
    mark, reset first through /proc/self/clear_refs where Linux allows it. Without the reset
    ru_maxrss only shows growth beyond the largest earlier peak (a lower bound). Freed heap
    is handed back to the OS first (glibc), or an earlier pass's leftovers hide the growth."""

    def kb(field: str) -> int:
        if not reset:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field))

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except (OSError, AttributeError):
        reset = False
    before = kb("VmRSS:")
    out = fn()
    return out, (kb("VmHWM:") - before) / 1024


def score_pass(rm, ids: list[list[int]], batches: list[np.ndarray]) -> np.ndarray:
    """The loop of ClassifierReward.__call__: scores in input order, shape (len(ids),)."""
    scores = np.full(len(ids), np.nan)
    for batch in batches:
        scores[batch] = rm._score_with_retry([ids[i] for i in batch])
    return scores


def describe(batches: list[np.ndarray], lengths: np.ndarray) -> dict:
    padded = [len(b) * int(lengths[b].max()) for b in batches]
    real = int(lengths.sum())
    return {
        "batches": len(batches),
        "real_tokens": real,
        "padding_pct": 100 * (sum(padded) - real) / real,
        "largest_batch_tokens": max(padded),
    }


def measure(rm, ids: list[list[int]], plans: dict, repeats: int) -> tuple[dict, dict]:
    """Time each plan (best of ``repeats``; the first plan, (a), once) and keep its scores."""
    timings = {name: {"seconds": float("inf"), "cpu_seconds": float("inf"), "rss_mib": 0.0} for name in plans}
    scores = {}
    score_pass(rm, ids, next(iter(plans.values()))[:2])  # warm-up: first calls pay one-off costs
    for rep in range(repeats):
        for name, batches in list(plans.items())[(rep > 0) :]:
            t, wall, cpu = timings[name], time.perf_counter(), time.process_time()
            scores[name], grew = peak_rss_during(lambda b=batches: score_pass(rm, ids, b))
            t["seconds"] = min(t["seconds"], time.perf_counter() - wall)
            # CPU time of this process: with one thread, the part of the wall time that other
            # work on the machine did not take. Shown for context; the targets use wall time.
            t["cpu_seconds"] = min(t["cpu_seconds"], time.process_time() - cpu)
            t["rss_mib"] = max(t["rss_mib"], grew)
    return timings, scores


def row(name: str, measured: float, op: str, target: float, detail: str) -> dict:
    passed = {"<=": measured <= target, ">=": measured >= target}[op]
    return {"check": name, "measured": measured, "target": f"{op} {target:g}", "passed": passed, "detail": detail}


# ---------------------------------------------------------------- main


def prepare(*, pairs: int, max_len: int, seed: int, hidden: int, layers: int, heads: int, **rm_kw):
    """The reward model and the pairs' token ids, tokenized once as ClassifierReward.__call__ does."""
    from winnow.rewards.classifier import ClassifierReward

    words = make_words(1500, seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_reward_model(Path(tmp), words, hidden=hidden, layers=layers, heads=heads, seed=seed)
        rm = ClassifierReward(str(folder), device="cpu", **rm_kw)
    template_tokens = len(rm.tokenize(["x"], ["x"])[0]) - 2
    prompts, completions = make_pairs(
        pairs, single_token_words(rm.tokenizer, words), seed, hi=max_len, template_tokens=template_tokens
    )
    return rm, rm.tokenize(prompts, completions)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4096, help="(prompt, completion) pairs to score")
    p.add_argument("--max-len", type=int, default=1024, help="longest pair in tokens (lognormal clip)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per batch for (a) and (b)")
    p.add_argument("--batch-tokens", type=int, default=16384, help="winnow's padded-token budget for (c)")
    p.add_argument("--max-batch-size", type=int, default=64, help="winnow's row cap for (c)")
    p.add_argument("--max-padding", type=float, default=0.02, help="winnow's padding share of the budget for (c)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="passes of (b) and (c); the fastest is kept")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke size (256 pairs up to 256 tokens, one pass); the targets are set for the full size",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.pairs, a.max_len, a.repeats = 256, 256, 1

    import torch

    from winnow.rewards.classifier import plan_batches

    threads_before = torch.get_num_threads()
    torch.set_num_threads(a.threads)  # restored on return: run_all runs later benchmarks in this process
    try:
        return _run(a, plan_batches)
    finally:
        torch.set_num_threads(threads_before)


def _run(a, plan_batches) -> dict:
    import torch

    rm, ids = prepare(
        pairs=a.pairs,
        max_len=a.max_len,
        seed=a.seed,
        hidden=a.hidden,
        layers=a.layers,
        heads=a.heads,
        batch_tokens=a.batch_tokens,
        max_batch_size=a.max_batch_size,
        max_padding=a.max_padding,
    )
    lengths = np.array([len(x) for x in ids])
    print(
        f"{len(ids)} pairs, {lengths.sum():,} tokens; length min {lengths.min()}, median "
        f"{int(np.median(lengths))}, p90 {int(np.percentile(lengths, 90))}, max {lengths.max()}; "
        f"torch threads {torch.get_num_threads()}"
    )

    # The three batchings of the same ids; (c) is exactly what __call__ plans.
    by_length = np.argsort(-lengths, kind="stable")  # longest first, as winnow does
    plans = {
        f"(a) input order, {a.batch_size}/batch": fixed_batches(np.arange(len(ids)), a.batch_size),
        f"(b) length-sorted, {a.batch_size}/batch": fixed_batches(by_length, a.batch_size),
        f"(c) winnow plan_batches, {a.batch_tokens} tokens": plan_batches(
            lengths.tolist(), rm.batch_tokens, rm.max_batch_size, rm.max_padding
        ),
    }
    timings, scores = measure(rm, ids, plans, a.repeats)
    stats = {name: describe(batches, lengths) | timings[name] for name, batches in plans.items()}
    for s in stats.values():
        s["tokens_per_s"] = s["real_tokens"] / s["seconds"]
    rows = check_targets(*stats.values(), scores=list(scores.values()), budget=a.batch_tokens)
    print_tables(stats, rows)
    return {"benchmark": "score", "configs": stats, "rows": rows, "passed": all(r["passed"] for r in rows)}


def check_targets(sa: dict, sb: dict, sc: dict, *, scores: list[np.ndarray], budget: int) -> list[dict]:
    """The targets for (c), from the stats of (a), (b), (c); scores all in input order."""
    max_diff = max(float(np.max(np.abs(s - scores[0]))) for s in scores)
    return [
        row(
            "(c) padding, % of real tokens",
            sc["padding_pct"],
            "<=",
            5.0,
            f"(a) {sa['padding_pct']:.0f}%, (b) {sb['padding_pct']:.1f}%",
        ),
        row(
            "(c) real tokens/s over (a)",
            sc["tokens_per_s"] / sa["tokens_per_s"],
            ">=",
            1.5,
            f"{sc['tokens_per_s']:,.0f} vs {sa['tokens_per_s']:,.0f}",
        ),
        row(
            "(c) real tokens/s over (b)",
            sc["tokens_per_s"] / sb["tokens_per_s"],
            ">=",
            1.0,
            f"{sc['tokens_per_s']:,.0f} vs {sb['tokens_per_s']:,.0f}",
        ),
        row(
            "(c) largest batch / budget",
            sc["largest_batch_tokens"] / budget,
            "<=",
            1.0,
            f"{sc['largest_batch_tokens']:,} of {budget:,} tokens",
        ),
        row("max |score difference| between (a), (b), (c)", max_diff, "<=", 1e-4, "after restoring input order"),
    ]


def print_tables(stats: dict, rows: list[dict]) -> None:
    print("\n### reward-model scoring on CPU\n")
    print(
        "| config | batches | real tokens/s | padding % of real | largest batch (padded tokens) "
        "| peak RSS growth MiB | wall s | CPU s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in stats.items():
        print(
            f"| {name} | {s['batches']} | {s['tokens_per_s']:,.0f} | {s['padding_pct']:.1f} "
            f"| {s['largest_batch_tokens']:,} | {s['rss_mib']:.0f} | {s['seconds']:.1f} | {s['cpu_seconds']:.1f} |"
        )
    print("\n| check | measured | target | result | detail |")
    print("|---|---:|---|---|---|")
    for r in rows:
        print(
            f"| {r['check']} | {r['measured']:.3g} | {r['target']} | {'PASS' if r['passed'] else 'FAIL'} "
            f"| {r['detail']} |"
        )


if __name__ == "__main__":
    raise SystemExit(0 if main()["passed"] else 1)
