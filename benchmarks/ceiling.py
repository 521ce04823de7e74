"""This machine's fp32 matmul ceiling for a model: tokens per second if a forward pass were
its linear layers alone, measured where the benchmark runs.

``matmul_ceiling(model, rows)`` times ``x @ W.T`` for every ``nn.Linear`` weight of the model
(the LM head included when it is one), with ``x`` of shape (rows, in_features): one token's
worth of every projection and MLP, ``rows`` tokens at a time, the arithmetic a decode step
or a scoring pass cannot avoid. Attention scores, norms and sampling are left out, so a
method's share of the ceiling says how much of its time goes to anything but these matmuls
(the model's own arithmetic at the same batch). Timed in CPU seconds of this process (best
of ``repeats``), like the methods it is compared with.
"""

from __future__ import annotations

import time

import torch


@torch.inference_mode()
def matmul_ceiling(model: torch.nn.Module, rows: int, repeats: int = 3) -> dict:
    """{"tokens_per_s", "gflops", "seconds"} of every linear of ``model`` over ``rows`` tokens."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in weights)
    for w in weights:  # warm-up: weights paged in, kernels picked
        inputs[w.shape[1]] @ w.T
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for w in weights:
            inputs[w.shape[1]] @ w.T
        best = min(best, time.process_time() - start)
    return {"tokens_per_s": rows / best, "gflops": flops / best / 1e9, "seconds": best}
