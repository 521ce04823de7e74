"""What a kept model saves: ``winnow.sample`` given a model name (loaded by every call)
against a handle from ``winnow.load_model`` (loaded once), a call of one short prompt, n=2,
2 new tokens.

Run by hand: ``python benchmarks/bench_model_handle.py [--model smollm2] [--device cpu]``
(without ``--model``: a random 2-layer tiny Llama built in a temporary folder, as the tests
build it). A first call, not timed, imports torch and transformers. Prints a markdown table:
the median of ``--calls`` calls each way, and the one ``load_model`` call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import winnow


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="a model folder or smollm2 (default: a tiny Llama)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args(argv)
    model = args.model
    if model is None:
        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from conftest import build_policy

        model = str(build_policy(Path(tempfile.mkdtemp()) / "tiny"))
    kw = dict(n=2, max_new_tokens=2, seed=0)
    prompts = ["Describe a rainy Monday."]
    winnow.sample(prompts, model=model, device=args.device, **kw)  # imports, caches: not timed
    by_name = [timed(lambda: winnow.sample(prompts, model=model, device=args.device, **kw)) for _ in range(args.calls)]
    handle: list[winnow.Model] = []
    load = timed(lambda: handle.append(winnow.load_model(model, device=args.device)))
    kept = [timed(lambda: winnow.sample(prompts, model=handle[0], **kw)) for _ in range(args.calls)]
    rows = [
        ("`sample(model=name)`, a call", statistics.median(by_name)),
        ("`load_model(name)`, once", load),
        ("`sample(model=handle)`, a call", statistics.median(kept)),
    ]
    print(f"\nmodel {args.model or 'tiny Llama (2 layers)'}, device {args.device}, median of {args.calls} calls\n")
    print("| call | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    return {"benchmark": "model_handle", "rows": [{"check": n, "measured": s} for n, s in rows]}


if __name__ == "__main__":
    main()
