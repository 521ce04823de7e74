"""Packed reward scoring (several prompts' completions end to end in a row) against full rows,
on the tiny reward models of every architecture the shared-prefix path lists."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import REWARD_ARCHITECTURES, build_reward_model, reward_scores, workload

from winnow.rewards import packed as pk
from winnow.rewards import prefix as pf


@pytest.mark.parametrize("arch", list(REWARD_ARCHITECTURES))
def test_packed_scores_equal_full_rows_without_padding(arch, tmp_path):
    folder = build_reward_model(tmp_path, arch)
    prompts, completions = workload(sizes=(1, 2, 3, 5, 8, 13, 16, 8, 8, 8))
    full, _ = reward_scores(folder, prompts, completions, prefix_sharing="off")
    for width in (64, 320):
        packed, rm = reward_scores(folder, prompts, completions, prefix_sharing="packed", pack_width=width)
        np.testing.assert_allclose(packed, full, rtol=0, atol=1e-4)
        lengths = [len(r) for r in rm.tokenize(prompts, completions)]
        limit = min(width, REWARD_ARCHITECTURES[arch][2].get("sliding_window") or width)
        # rows longer than a packed row are scored in full, every other one packed
        assert [p for p in rm.last_paths if p != "packed"] == ["full"] * sum(n > limit for n in lengths)
        if width == 320 and not REWARD_ARCHITECTURES[arch][2].get("sliding_window"):
            assert rm.stats["padded_tokens"] == 0, rm.stats


def test_whole_prompts_go_in_rows_and_every_completion_is_placed_once():
    groups = [pf.Group([1] * p, list(range(10 * k, 10 * k + n)), [[2] * t for t in range(1, n + 1)])
              for k, (p, n) in enumerate([(5, 8), (9, 3), (2, 10), (37, 4)])]  # fmt: skip
    rows, too_long = pk.plan_rows(groups, 40)
    assert too_long == [33]  # 37 + its 4-token tail > 40
    placed = sorted(r for row in rows for seg in row for r in seg.rows)
    assert placed == sorted(r for g in groups for r in g.rows if r != 33)
    assert all(sum(len(s) for s in row) <= 40 for row in rows)
    # groups 0 (5 + 36 tokens), 2 (2 + 55) and 3 (37 + 6) overflow a row and are split; 1 stays whole
    segments = [s for row in rows for s in row]
    assert sorted(len(s.prompt) for s in segments) == [2, 2, 5, 5, 9, 37, 37]
    row = next(row for row in rows if any(len(s.prompt) == 9 for s in row))
    ids, pos, blocks, reads = pk.layout(row)
    # a tail token sees its prompt and itself, not the tail before it
    seg_at = 0
    for s in row:
        if len(s.prompt) == 9:
            break
        seg_at += len(s)
    last_of_second_tail = seg_at + 9 + len(s.tails[0]) + len(s.tails[1]) - 1
    tails = next(u for u in blocks.parts[1:] if last_of_second_tail in u.queries.tolist())
    u, lq, lk = tails.shape
    where = int(np.flatnonzero(tails.queries.numpy() == last_of_second_tail)[0])
    seen = tails.keys.numpy().reshape(u, lk)[where // lq][tails.bias.numpy()[where // lq, 0, where % lq] == 0]
    assert list(pos[seen]) == list(range(9)) + [9, 10]  # its prompt, then its own 2-token tail
    # every token of the row is a query exactly once
    into = np.concatenate([u.into.numpy() for u in blocks.parts])
    assert sorted(into) == list(range(len(ids)))


def test_auto_packs_and_a_prompt_that_overflows_a_row_shares_its_prefill(tmp_path, capsys):
    folder = build_reward_model(tmp_path, "llama")
    prompts, completions = workload(seed=3, sizes=(1, 3, 16))
    full, _ = reward_scores(folder, prompts, completions, prefix_sharing="off")
    auto, rm = reward_scores(folder, prompts, completions, pack_width=200)
    np.testing.assert_allclose(auto, full, rtol=0, atol=1e-4)
    rows = rm.tokenize(prompts, completions)
    groups, _, _ = pf.group_rows(rm.prompt_ids(prompts), rows, list(range(len(rows))))
    overflows = {r for g in groups if len(g.prompt) + sum(len(t) for t in g.tails) > 200 for r in g.rows}
    assert len(overflows) == 16  # the prompt with 16 completions; the others fit a row with theirs
    assert rm.last_paths == ["shared_prefix" if i in overflows else "packed" for i in range(len(rows))]
    assert rm.summary()["rows"] == {"shared_prefix": 16, "packed": 4}
    assert "winnow: reward model" not in capsys.readouterr().err  # no note: nothing fell back
