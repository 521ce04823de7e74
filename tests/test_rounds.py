"""Rounds (``winnow run --rounds R``): layout, pooled selection with provenance, the starting
checkpoint of each round, and a real process killed mid-round that resumes to identical files."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import rounds_cmd, start_held, tree_digest, wait_for, write_jsonl

from winnow import select as sel
from winnow.cli import main

NUM_PROMPTS = 16
# The killed run stops for good in round 2's generate call for its third shard (round 1
# makes NUM_PROMPTS calls, one a shard), so the kill lands mid-round however fast the machine.
HELD_IN_ROUND_2 = NUM_PROMPTS + 2


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    return write_jsonl(
        path, [{"id": f"q{i}", "prompt": f"write two sentences about item {i}"} for i in range(NUM_PROMPTS)]
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prompts, tiny_policy) -> Path:
    """An uninterrupted two-round run (pool all, sft from start), made in its own folder."""
    home = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        assert main(rounds_cmd(prompts, tiny_policy)) == 0
    return home / "run"


def matrix(run: Path, r: int) -> np.ndarray:
    return np.load(run / f"round-{r}/score/rewards.npy")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def config(run: Path, r: int, stage: str) -> dict:
    return json.loads((run / f"round-{r}/{stage}/config.json").read_text())


def test_each_round_is_a_run_folder_sampling_from_the_last_checkpoint(reference, tiny_policy):
    assert sorted(p.name for p in reference.iterdir()) == ["round-1", "round-2"]
    for r in (1, 2):
        assert (reference / f"round-{r}/sft/manifest.json").exists()
        assert (reference / f"round-{r}/sft/checkpoint/model.safetensors").exists()
    # Round 2 samples from round 1's checkpoint, with a seed of its own ...
    assert config(reference, 1, "generate")["generate"]["models"] == [str(tiny_policy)]
    assert config(reference, 2, "generate")["generate"]["models"] == ["run/round-1/sft/checkpoint"]
    assert {c["model"] for c in rows(reference / "round-2/generate/shard-m0-00000.jsonl")} == {
        "run/round-1/sft/checkpoint"
    }
    assert config(reference, 1, "generate")["generate"]["seed"] == 0
    assert config(reference, 2, "generate")["generate"]["seed"] != 0
    # ... and, by default, fine-tunes the starting checkpoint again (the chapter's way).
    assert config(reference, 2, "sft")["sft"]["model"] == str(tiny_policy)


def test_pool_all_chooses_among_every_round_and_names_the_round(reference):
    r1, r2 = matrix(reference, 1), matrix(reference, 2)
    pooled = np.concatenate([r1, r2], axis=1)
    best = sel.top_per_prompt(pooled)  # ties go to the earlier column, hence round 1
    prompt_ids = [row["id"] for row in rows(reference / "round-2/generate/prompts.jsonl")]
    got = rows(reference / "round-2/select/selected.jsonl")
    want = [
        (pid, 1 if c < r1.shape[1] else 2, int(c) % r1.shape[1], pooled[i, c])
        for i, (pid, c) in enumerate(zip(prompt_ids, best, strict=True))
    ]
    assert [(g["prompt_id"], g["round"], g["sample_index"], g["reward"]) for g in got] == want
    assert {g["round"] for g in got} == {1, 2}  # the pool really mixes rounds here
    texts = {
        (r, c["prompt_id"], c["sample_index"]): c["text"]
        for r in (1, 2)
        for p in sorted((reference / f"round-{r}/generate").glob("shard-*.jsonl"))
        for c in rows(p)
    }
    assert all(g["completion"][0]["content"] == texts[(g["round"], g["prompt_id"], g["sample_index"])] for g in got)
    # Round 1 pools round 1 alone; the select config records every pooled round's score hash.
    assert [g["round"] for g in rows(reference / "round-1/select/selected.jsonl")] == [1] * NUM_PROMPTS
    assert sorted(config(reference, 2, "select")["score_hashes"]) == ["1", "2"]


def test_pool_latest_and_sft_from_previous(tmp_path, prompts, tiny_policy, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = rounds_cmd(prompts, tiny_policy, "--pool", "latest", "--sft-from", "previous")
    argv[argv.index("--max-new-tokens") + 1] = "8"
    argv[argv.index("--shard-size") + 1] = "16"
    assert main(argv) == 0
    run = tmp_path / "run"
    got = rows(run / "round-2/select/selected.jsonl")
    assert [(g["round"], g["sample_index"]) for g in got] == [(2, int(c)) for c in sel.top_per_prompt(matrix(run, 2))]
    assert config(run, 1, "sft")["sft"]["model"] == str(tiny_policy)
    assert config(run, 2, "sft")["sft"]["model"] == "run/round-1/sft/checkpoint"


def test_round_options_without_rounds_are_refused(tmp_path, prompts, tiny_policy, capsys):
    argv = rounds_cmd(prompts, tiny_policy, "--pool", "latest")
    argv[argv.index("--run-dir") + 1] = str(tmp_path / "run")
    del argv[argv.index("--rounds") : argv.index("--rounds") + 2]
    assert main(argv) == 2
    assert "rounds.pool: only applies with --rounds" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    argv[argv.index("--pool") + 1] = "everything"
    argv += ["--rounds", "2"]
    assert main(argv) == 2
    assert "rounds.pool: must be one of all, latest, got 'everything'" in capsys.readouterr().err


def test_rounds_run_killed_mid_round_two_resumes_to_identical_files(
    tmp_path, prompts, tiny_policy, reference, monkeypatch
):
    argv = rounds_cmd(prompts, tiny_policy)
    monkeypatch.chdir(tmp_path)  # the same relative --run-dir as the reference, in another folder
    run = tmp_path / "run"
    proc = start_held(argv, after=HELD_IN_ROUND_2)
    shard = run / "round-2/generate/shard-m0-00001.jsonl"
    wait_for(shard.exists, 600, shard.name, proc=proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert (run / "round-1/sft/manifest.json").exists()
    assert not (run / "round-2/generate/manifest.json").exists()
    assert sorted(p.name for p in (run / "round-2/generate").glob("shard-*.jsonl")) == [
        "shard-m0-00000.jsonl",
        "shard-m0-00001.jsonl",
    ]
    assert main(argv) == 0
    got = {k: v for k, v in tree_digest(run).items() if "/." not in k}  # temp files a SIGKILL left behind
    assert got == tree_digest(reference)


def test_report_of_a_pooled_round_reads_each_selected_row_from_its_round(reference):
    from winnow.report import run_report

    result = run_report(reference / "round-2", out_dir=reference.parent / "report-round-2", iters=10)
    tokens = {
        (r, c["prompt_id"], c["sample_index"]): c["num_tokens"]
        for r in (1, 2)
        for p in sorted((reference / f"round-{r}/generate").glob("shard-*.jsonl"))
        for c in rows(p)
    }
    got = rows(reference / "round-2/select/selected.jsonl")
    assert result["selected"]["count"] == len(got) == NUM_PROMPTS
    want = np.mean([tokens[(g["round"], g["prompt_id"], g["sample_index"])] for g in got])
    assert result["selected"]["mean_tokens"] == pytest.approx(want)
    assert result["selected"]["mean_reward"] == pytest.approx(np.mean([g["reward"] for g in got]))


def test_report_of_a_rounds_folder_reports_each_round(reference, tmp_path, capsys):
    from winnow.report import run_report

    capsys.readouterr()
    assert main(["report", str(reference), "--out", str(tmp_path / "rep"), "--bootstrap-iters", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("round-")] == ["round-1:", "round-2:"]
    assert f"report: {tmp_path}/rep/round-2/report.md, {tmp_path}/rep/round-2/report.json" in out
    for r in (1, 2):
        got = json.loads((tmp_path / f"rep/round-{r}/report.json").read_text())
        assert got == run_report(reference / f"round-{r}", out_dir=tmp_path / f"again-{r}", iters=10)
