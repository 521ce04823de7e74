"""Packed reward scoring (several prompts' completions end to end in a row) against full rows,
on the tiny reward models of every architecture the shared-prefix path lists."""

from __future__ import annotations

import numpy as np
import pytest
from test_reward_prefix import ARCHITECTURES, build, score, workload

from winnow.rewards import packed as pk
from winnow.rewards import prefix as pf


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_packed_scores_equal_full_rows_with_little_padding(arch, tmp_path):
    folder = build(tmp_path, arch)
    prompts, completions = workload(sizes=(1, 2, 3, 5, 8, 13, 16, 8, 8, 8))
    full, _ = score(folder, prompts, completions, prefix_sharing="off")
    for width, batch_tokens in [(64, 64), (320, 16384)]:
        packed, rm = score(
            folder, prompts, completions, prefix_sharing="packed", pack_width=width, batch_tokens=batch_tokens
        )
        np.testing.assert_allclose(packed, full, rtol=0, atol=1e-4)
        lengths = [len(r) for r in rm.tokenize(prompts, completions)]
        limit = min(width, ARCHITECTURES[arch][2].get("sliding_window") or width)
        # rows longer than a packed row are scored in full, every other one packed
        assert [p for p in rm.last_paths if p != "packed"] == ["full"] * sum(n > limit for n in lengths)
        if width == 320 and not ARCHITECTURES[arch][2].get("sliding_window"):
            padding = rm.stats["padded_tokens"] / (rm.stats["real_tokens"] + rm.stats["padded_tokens"])
            assert padding < 0.03, rm.stats


def test_rows_are_filled_and_every_completion_placed_once():
    groups = [pf.Group([1] * p, list(range(10 * k, 10 * k + n)), [[2] * t for t in range(1, n + 1)])
              for k, (p, n) in enumerate([(5, 8), (9, 3), (2, 10), (37, 4)])]  # fmt: skip
    rows, width, too_long = pk.plan_even(groups, 40)
    assert too_long == [33]  # 37 + its 4-token tail > 40
    placed = sorted(r for row in rows for seg in row for r in seg.rows)
    assert placed == sorted(r for g in groups for r in g.rows if r != 33)
    assert all(sum(len(s) for s in row) <= width <= 40 for row in rows)
    ids, pos, blocks, reads = pk.layout(rows, width, pad_id=0)
    assert ids.shape == (len(rows), width)
    # a tail token sees its prompt and itself, not the tail before it
    row, r, last = next((row, r, t) for row, r, t in reads if row == 1)
    flat = r * width + last
    u, i = np.argwhere(blocks.queries.numpy() == flat)[0]
    seen = blocks.keys.numpy()[u][blocks.mask.numpy()[u, 0, i]]
    assert list(pos.flat[seen]) == [0, 1, 2, 3, 4, 5, 6]  # prompt 0..4, then its 2-token tail
    # every real token is a query exactly once; padding is none
    real = sum(len(s) for row in rows for s in row)
    assert sorted(blocks.into.tolist()) == sorted(set(blocks.into.tolist())) and len(blocks.into) == real
