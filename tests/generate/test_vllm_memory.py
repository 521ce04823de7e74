"""vLLM's CPU build without --gpu-memory-utilization: a share that fits the free memory, or
one line refusing before the engine starts (the engine itself is not installed here)."""

from __future__ import annotations

import pytest

from winnow.errors import WinnowError
from winnow.generate.vllm import cpu_memory_share, system_memory, weights_bytes

GiB = 2**30


def test_a_given_share_is_kept_as_given():
    assert cpu_memory_share(0.92, memory=(1 * GiB, 64 * GiB), weights=10 * GiB) == 0.92


@pytest.mark.parametrize(
    ("available", "total", "share"),
    [(10, 16, 0.5), (64, 64, 0.8), (3, 100, 0.02), (12.5, 16, 0.62)],
)
def test_without_a_share_the_engine_takes_most_of_the_free_memory(available, total, share):
    assert cpu_memory_share(None, memory=(int(available * GiB), int(total * GiB)), weights=GiB // 2) == share


def test_too_little_free_memory_is_refused_in_one_line():
    with pytest.raises(WinnowError) as e:
        cpu_memory_share(None, memory=(1 * GiB, 16 * GiB), weights=1 * GiB)
    assert "1.0 GiB of 16.0 GiB memory is free" in str(e.value) and "--gpu-memory-utilization" in str(e.value)
    assert "\n" not in str(e.value)


def test_memory_and_weights_are_read_from_the_machine(tiny_policy):
    available, total = system_memory()
    assert 0 < available <= total
    files = [p for p in tiny_policy.iterdir() if p.suffix == ".safetensors"]
    assert files and weights_bytes(tiny_policy) == sum(p.stat().st_size for p in files)
