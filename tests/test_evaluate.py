"""``winnow eval`` and ``winnow run --eval-prompts`` (``winnow.evaluation``): every figure checked
against the rewards computed by hand from the run dirs' completions, the interval against
``paired_bootstrap`` on the two matrices, resume, bad input, and the curve across rounds."""

from __future__ import annotations

import json
import signal
from math import comb
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    HAND_RUN,
    fails,
    flags,
    make_run,
    read_rows,
    rounds_cmd,
    start_held,
    tree_digest,
    wait_for,
    write_jsonl,
)

from winnow.cli import main
from winnow.evaluation import summarize, write
from winnow.report.passk import bootstrap_band
from winnow.report.stats import paired_bootstrap

PROMPTS = 5
N = 4
THRESHOLD = 2.0
WORKDIR_PROMPTS = [{"id": f"h{i}", "prompt": f"write about item {i}"} for i in range(PROMPTS)]
WORKDIR_FILES = {
    "count_e.py": "def score(prompts, completions, **kw):\n    return [float(c.count('e')) for c in completions]\n"
}
"""A reward the texts move: the number of e's in a completion (the tiny models write random words)."""


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def test_the_figures_of_two_hand_made_runs(tmp_path):
    # HAND_RUN's rewards: p0 [0.5, 0.5, -0.5], p1 [1.0, 0.0, 0.2], p2 [0.1, 0.3, unscored]; "after" adds 0.1
    after = {p: [(t, n, f, r + 0.1) for t, n, f, r in row] for p, row in HAND_RUN.items()}
    make_run(tmp_path / "before")
    make_run(tmp_path / "after", after)
    result = summarize(tmp_path, {"before": "a", "after": "b"}, threshold=0.25, iters=1000, seed=0)
    before, later = result["models"]
    assert (before["name"], before["completions"], before["scored"]) == ("before", 9, 8)
    assert before["mean_reward"] == pytest.approx(2.1 / 8) and later["mean_reward"] == pytest.approx(2.9 / 8)
    # passing at 0.25: p0 2 of 3, p1 1 of 3, p2 1 of its 2 scored; after: 2 of 3, 2 of 3, 1 of 2
    assert before["pass_at_1"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert later["pass_at_1"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    # pass@k over the fully scored prompts p0 (c=2) and p1 (c=1) of n=3
    assert before["pass_at_k"]["rows"] == 2
    assert before["pass_at_k"]["mean"] == pytest.approx([1 / 2, (1 + 2 / 3) / 2, 1.0])
    (gain,) = result["gains"]
    means = [np.array([0.5 / 3, 1.2 / 3, 0.2]), np.array([0.8 / 3, 1.5 / 3, 0.3])]
    assert gain["gain"] == pytest.approx(0.1)
    assert gain["ci95"] == pytest.approx(list(paired_bootstrap(*means, iters=1000)))
    assert gain["pass_at_1_gain"] == pytest.approx(1 / 9)
    write(tmp_path, result)
    table = (tmp_path / "eval.md").read_text()
    assert "| before | a | 0.263 |" in table and "| after over before | +0.100 |" in table
    assert json.loads((tmp_path / "eval.json").read_text()) == result


def eval_cmd(workdir: Path, out: Path, model: Path, *extra: str, baseline: Path | None = None) -> list[str]:
    return [
        "eval",
        *flags(model=model, baseline=baseline, prompts=workdir / "prompts.jsonl", run_dir=out, n=N),
        *flags(max_new_tokens=8, shard_size=1, batch_size=1, device="cpu", seed=3),
        *flags(reward_fn=f"{workdir / 'count_e.py'}:score", pass_threshold=THRESHOLD),
        *extra,
    ]


def hand_rewards(folder: Path) -> np.ndarray:
    """(P, N) rewards recomputed from the completions the generate stage wrote."""
    rewards = np.full((PROMPTS, N), np.nan)
    for shard in sorted((folder / "generate").glob("shard-*.jsonl")):
        for row in read_rows(shard):
            rewards[int(row["prompt_id"][1:]), row["sample_index"]] = row["text"].count("e")
    return rewards


def test_eval_gives_the_means_pass_at_k_and_gain_computed_by_hand(workdir, tiny_policy, tiny_policy_b, capsys):
    out = workdir / "out"
    assert main(eval_cmd(workdir, out, tiny_policy, baseline=tiny_policy_b)) == 0
    result = json.loads((out / "eval.json").read_text())
    model, base = hand_rewards(out / "model"), hand_rewards(out / "baseline")
    assert not np.isnan(model).any() and not np.array_equal(model, base)  # two models, told apart by the reward

    assert [m["name"] for m in result["models"]] == ["baseline", "model"]
    for m, r in zip(result["models"], (base, model), strict=True):
        assert m["mean_reward"] == pytest.approx(r.mean(), abs=1e-12)
        passed = (r >= THRESHOLD).sum(axis=1)
        assert m["pass_at_1"] == pytest.approx(np.mean(passed / N), abs=1e-12)
        assert m["pass_at_k"]["k"] == [1, 2, 3, 4]
        for k, got in zip(m["pass_at_k"]["k"], m["pass_at_k"]["mean"], strict=True):
            want = np.mean([1 - comb(N - c, k) / comb(N, k) for c in passed])
            assert got == pytest.approx(want, abs=1e-12)
        low, high = bootstrap_band(r.mean(axis=1)[:, None], iters=10_000, seed=0)
        assert m["mean_reward_ci95"] == [low[0], high[0]]
    assert [m["model"] for m in result["models"]] == [str(tiny_policy_b), str(tiny_policy)]

    (gain,) = result["gains"]
    assert (gain["before"], gain["after"]) == ("baseline", "model")
    assert gain["gain"] == pytest.approx(model.mean() - base.mean(), abs=1e-12)
    assert gain["ci95"] == list(paired_bootstrap(base.mean(axis=1), model.mean(axis=1)))
    rates = [(r >= THRESHOLD).mean(axis=1) for r in (base, model)]
    assert gain["pass_at_1_ci95"] == list(paired_bootstrap(*rates))

    printed = capsys.readouterr().out
    assert f"model over baseline: {gain['gain']:+.3f} [{gain['ci95'][0]:.3f}, {gain['ci95'][1]:.3f}]" in printed
    assert "| model over baseline |" in (out / "eval.md").read_text()
    assert (out / "eval_curve.png").stat().st_size > 5_000
    # the same seed for both: their generate configs differ in the model alone
    configs = [
        json.loads((out / m["name"] / "generate/manifest.json").read_text())["config"]["generate"]
        for m in result["models"]
    ]
    assert [{k: v for k, v in c.items() if k != "models"} for c in configs][0] == {
        k: v for k, v in configs[1].items() if k != "models"
    }


def test_a_killed_eval_resumes_and_a_rerun_leaves_identical_files(workdir, tiny_policy, tiny_policy_b):
    reference = workdir / "reference"
    assert main(eval_cmd(workdir, reference, tiny_policy, baseline=tiny_policy_b)) == 0
    want = tree_digest(reference)
    assert main(eval_cmd(workdir, reference, tiny_policy, baseline=tiny_policy_b)) == 0  # all done: nothing moves
    assert tree_digest(reference) == want

    out = workdir / "out"
    log = workdir / "stderr.txt"
    proc = start_held(eval_cmd(workdir, out, tiny_policy, baseline=tiny_policy_b), after=2, stderr=log.open("w"))
    shard = out / "baseline/generate/shard-m0-00001.jsonl"  # one prompt a shard
    wait_for(shard.exists, 120, shard.name, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "eval.json").exists() and not (out / "model").exists()

    assert main(eval_cmd(workdir, out, tiny_policy, baseline=tiny_policy_b)) == 0
    got = {k: v for k, v in tree_digest(out).items() if "/." not in k}  # a temp file the kill left behind
    assert got == want


def test_bad_input_is_one_line_and_exit_2(workdir, tiny_policy, capsys):
    out = workdir / "out"
    two = eval_cmd(workdir, out, tiny_policy, "--model", str(tiny_policy))
    fails(
        two,
        capsys,
        "generate.models: winnow eval evaluates one model, got 2; give the other as --baseline",
        one_error=True,
    )
    fails(
        eval_cmd(workdir, out, tiny_policy, "--bootstrap-iters", "0"),
        capsys,
        "eval.bootstrap_iters: must be between 1 and 1000000, got 0",
        one_error=True,
    )
    missing = workdir / "no-such-model"
    fails(eval_cmd(workdir, out, tiny_policy, baseline=missing), capsys, str(missing), one_error=True)
    bad = write_jsonl(workdir / "bad.jsonl", [{"id": "a", "prompt": "fine"}, {"id": "b"}])
    argv = eval_cmd(workdir, out, tiny_policy)
    argv[argv.index("--prompts") + 1] = str(bad)
    line = f"winnow: error: {bad}:2: field 'prompt': missing prompt (need 'prompt' or 'messages')"
    assert fails(argv, capsys, one_error=True).strip() == line
    assert not out.exists()  # nothing sampled or written before the refusal
    run = [
        "run",
        *flags(prompts=workdir / "prompts.jsonl", run_dir=workdir / "run", model=tiny_policy, reward_fn="length"),
    ]
    assert fails([*run, "--eval-prompts", str(bad)], capsys, one_error=True).strip() == line
    assert not (workdir / "run").exists()  # refused before training


def test_run_with_eval_prompts_draws_the_curve_across_two_rounds(workdir, tiny_policy, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    heldout = write_jsonl(workdir / "heldout.jsonl", [{"id": f"e{i}", "prompt": f"say {i}"} for i in range(3)])
    assert main(rounds_cmd(workdir / "prompts.jsonl", tiny_policy, "--eval-prompts", str(heldout))) == 0
    result = json.loads(Path("run/eval/eval.json").read_text())
    assert [m["name"] for m in result["models"]] == ["start", "round 1", "round 2"]
    assert [m["model"] for m in result["models"]] == [
        str(tiny_policy),
        "run/round-1/sft/checkpoint",
        "run/round-2/sft/checkpoint",
    ]
    assert [(g["before"], g["after"]) for g in result["gains"]] == [
        ("start", "round 1"),
        ("round 1", "round 2"),
        ("start", "round 2"),
    ]
    assert "round 2 over start:" in capsys.readouterr().out

    assert main(["report", "run"]) == 0
    report = Path("run/report/report.md").read_text()
    for name in ("start", "round 1", "round 2"):
        assert f"| {name} | " in report
    assert json.loads(Path("run/report/report.json").read_text())["eval"] == result
    assert Path("run/report/eval_curve.png").stat().st_size > 5_000
    assert Path("run/round-2/report/report.md").exists()  # each round's own report, as before


def count_e(prompts, completions, **kw):
    return [float(c.count("e")) for c in completions]


def test_the_python_api_gives_what_the_command_gives(workdir, tiny_policy):
    import winnow

    assert main(eval_cmd(workdir, workdir / "cli", tiny_policy)) == 0
    sampling = {"n": N, "max_new_tokens": 8, "shard_size": 1, "batch_size": 1, "device": "cpu", "seed": 3}
    score = {"reward_fn": count_e, "pass_threshold": THRESHOLD}
    got = winnow.evaluate(
        workdir / "api", workdir / "prompts.jsonl", model=str(tiny_policy), generate=sampling, score=score
    )
    assert got == json.loads((workdir / "cli/eval.json").read_text())
    assert got["gains"] == [] and [m["name"] for m in got["models"]] == ["model"]
