"""Messages that point the right way: a mistyped option names its command and the option
meant; a Hub model id is read from the Hugging Face cache, or refused in plain words."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import write_jsonl

from winnow.cli import main


def test_a_mistyped_option_gets_its_commands_usage_and_the_closest_option(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["generate", "--run-dir", "r", "--temprature", "0.7"])
    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert err.startswith("usage: winnow generate ")
    assert (
        err.splitlines()[-1]
        == "winnow generate: error: unrecognized arguments: --temprature 0.7 (did you mean --temperature?)"
    )
    with pytest.raises(SystemExit):
        main(["report", "r", "--pass-treshold=0.5"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "winnow report: error: unrecognized arguments: --pass-treshold=0.5 (did you mean --pass-threshold?)"
    )
    with pytest.raises(SystemExit):
        main(["select", "--run-dir", "r", "--zzzzzz"])
    assert capsys.readouterr().err.splitlines()[-1] == "winnow select: error: unrecognized arguments: --zzzzzz"


@pytest.fixture
def hub_cache(tmp_path, tiny_policy, monkeypatch):
    """A Hugging Face cache holding the tiny policy as ``org/tiny`` (the layout the Hub
    client writes: refs/main names the snapshot folder)."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--org--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_policy, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": "p0", "prompt": "hello"}])
    return tmp_path


def test_a_hub_id_is_read_from_the_hugging_face_cache(hub_cache, capsys):
    argv = ["generate", "--prompts", str(hub_cache / "prompts.jsonl"), "--run-dir", str(hub_cache / "run")]
    argv += ["--n", "2", "--max-new-tokens", "3", "--device", "cpu"]
    assert main([*argv, "--model", "org/tiny"]) == 0
    rows = [json.loads(line) for line in (hub_cache / "run/generate/shard-m0-00000.jsonl").open()]
    assert [(r["model"], r["sample_index"]) for r in rows] == [("org/tiny", 0), ("org/tiny", 1)]
    manifest = json.loads((hub_cache / "run/generate/manifest.json").read_text())
    assert manifest["config"]["provenance"]["models"]["org/tiny"] != "missing"  # the snapshot's files, hashed
    capsys.readouterr()
    assert main([*argv, "--model", "org/absent", "--run-dir", str(hub_cache / "other")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"winnow: error: model 'org/absent' is neither a folder nor in the Hugging Face cache ({hub_cache / 'hub'}): "
        "download it once (hf download org/absent), or give the model's folder"
    )
