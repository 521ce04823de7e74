"""--dtype and --device reach the stages that load a model, and only those."""

from __future__ import annotations

import json

from helpers import write_jsonl

from winnow.cli import main


def test_dtype_flag_on_generate_and_on_a_rounds_run(tmp_path, tiny_policy, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "hello"}])
    common = ["--prompts", "prompts.jsonl", "--model", str(tiny_policy), "--n", "2", "--max-new-tokens", "2"]
    assert main(["generate", "--run-dir", "g", *common, "--dtype", "auto", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "g/generate/config.json").read_text())["generate"]["dtype"] == "auto"
    run = ["run", "--run-dir", "r", *common, "--reward-fn", "length", "--rounds", "1", "--epochs", "1"]
    assert main([*run, "--dtype", "float32", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "r/round-1/sft/config.json").read_text())["sft"]["dtype"] == "float32"
