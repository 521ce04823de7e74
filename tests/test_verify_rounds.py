"""``winnow verify`` on a rounds run: each round folder, and the rounds run dir as a whole."""

from __future__ import annotations

import json

import pytest
from helpers import rounds_cmd, write_jsonl

from winnow.cli import main
from winnow.records import config_hash


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory, tiny_policy):
    home = tmp_path_factory.mktemp("verify-rounds")
    prompts = write_jsonl(home / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"item {i}"} for i in range(3)])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        assert main(rounds_cmd(prompts, tiny_policy)) == 0
    return home / "run"


def test_each_round_and_the_whole_run_verify(rounds_run, capsys):
    for target in (rounds_run / "round-1", rounds_run / "round-2"):
        assert main(["verify", str(target)]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert "select    ok" in out and "sft       ok" in out and "PROBLEM" not in out
    assert main(["verify", str(rounds_run)]) == 0
    out = capsys.readouterr().out.splitlines()
    for r in (1, 2):
        for stage in ("generate", "score", "select", "sft"):
            assert f"round-{r}/{stage:9} ok" in out


def test_a_damaged_round_fails_the_whole_run(rounds_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(rounds_run, run)
    (run / "round-1/score/rewards.npy").write_bytes(b"not a matrix")
    assert main(["verify", str(run)]) == 2
    captured = capsys.readouterr()
    assert f"round-1/score     PROBLEM {run / 'round-1/score/rewards.npy'}" in captured.out
    assert "problem(s) in" in captured.err


def test_a_round_pooled_from_another_score_stage_is_a_problem(rounds_run, tmp_path, capsys):
    """Round 2 selected among rounds 1 and 2; round 1 rescored since (config and hash
    rewritten consistently, so round 1 itself verifies): round 2's select no longer matches."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(rounds_run, run)
    manifest_path = run / "round-1/score/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    old = manifest["config_hash"]
    manifest["config"]["score"]["reward_fn"] = "vader"
    manifest["config_hash"] = config_hash(manifest["config"])
    manifest_path.write_text(json.dumps(manifest))
    (run / "round-1/score/config.json").write_text(json.dumps(manifest["config"]))
    assert main(["verify", str(run / "round-2")]) == 2
    out = capsys.readouterr().out
    assert f"select    PROBLEM made from another round-1 score stage ({old})" in out
    assert main(["verify", str(run)]) == 2


def test_a_folder_with_no_stages_and_no_rounds_is_not_ok(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "not a run dir" in capsys.readouterr().out


def test_a_missing_round_is_a_problem(rounds_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(rounds_run / "round-2", run / "round-2")
    assert main(["verify", str(run)]) == 2
    assert f"round-1 PROBLEM {run / 'round-1'}: missing" in capsys.readouterr().out
