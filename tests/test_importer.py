"""``winnow import``: completions made elsewhere become a generate stage every later stage reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import helpers
import numpy as np
import pytest
from helpers import write_jsonl

from winnow.cli import main
from winnow.records import read_json


def run_cli(*argv) -> None:
    assert main([str(a) for a in argv]) == 0


def fails(capsys, *argv) -> str:
    return helpers.fails([str(a) for a in argv], capsys, one_error=True).strip()


def shard_rows(run: Path) -> list[dict]:
    manifest = read_json(run / "generate" / "manifest.json")
    rows = []
    for name in manifest["shards"]:
        rows += [json.loads(line) for line in (run / "generate" / f"shard-{name}.jsonl").read_text().splitlines()]
    return rows


@pytest.fixture()
def generated(tmp_path, tiny_policy):
    """A generate stage made by two models (so rows carry model, finish reason, token count)."""
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"prompt number {i}"} for i in range(5)])
    run_cli(
        "generate", "--prompts", tmp_path / "prompts.jsonl", "--run-dir", tmp_path / "gen",
        "--model", tiny_policy, "--model", tiny_policy, "--n", 3, "--max-new-tokens", 4,
        "--shard-size", 2, "--device", "cpu", "--temperature", 2.0,
    )  # fmt: skip
    return tmp_path


def test_import_round_trips_a_generate_stage(generated, capsys):
    rows = shard_rows(generated / "gen")
    source = write_jsonl(generated / "completions.jsonl", rows[::-1])  # any order
    run_cli(
        "import", "--completions", source, "--prompts", generated / "prompts.jsonl",
        "--run-dir", generated / "imp", "--shard-rows", 4, "--max-new-tokens", 4,
    )  # fmt: skip
    imported = shard_rows(generated / "imp")
    key = lambda r: (r["prompt_id"], r["sample_index"])  # noqa: E731
    assert sorted(imported, key=key) == sorted(rows, key=key)
    assert list(imported[0]) == list(rows[0])  # same columns in the same order as generate writes
    manifest = read_json(generated / "imp" / "generate" / "manifest.json")
    assert manifest["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (manifest["num_prompts"], manifest["num_columns"], manifest["num_completions"]) == (5, 6, 30)
    assert manifest["shards"] == [f"m0-{k:05d}" for k in range(8)]  # 30 rows, 4 a shard
    # every later stage reads it unchanged, with the same results as on the original
    for run in ("gen", "imp"):
        run_cli("score", "--run-dir", generated / run, "--reward-fn", "length")
        run_cli("select", "--run-dir", generated / run, "--strategy", "top_per_prompt", "--dedup")
        run_cli("report", generated / run)
        run_cli("verify", generated / run)
    np.testing.assert_array_equal(
        np.load(generated / "gen/score/rewards.npy"), np.load(generated / "imp/score/rewards.npy")
    )
    assert (generated / "gen/select/selected.jsonl").read_bytes() == (
        generated / "imp/select/selected.jsonl"
    ).read_bytes()
    report = read_json(generated / "imp/report/report.json")
    assert report["max_new_tokens"] == 4 and report["completions"] == 30
    # rerun on the same files: nothing is rewritten
    before = (generated / "imp/generate/manifest.json").stat().st_mtime_ns
    run_cli(
        "import", "--completions", source, "--prompts", generated / "prompts.jsonl",
        "--run-dir", generated / "imp", "--shard-rows", 4, "--max-new-tokens", 4,
    )  # fmt: skip
    assert (generated / "imp/generate/manifest.json").stat().st_mtime_ns == before
    # a changed source file is refused, not mixed in
    write_jsonl(source, rows[1:])
    err = fails(
        capsys, "import", "--completions", source, "--prompts", generated / "prompts.jsonl",
        "--run-dir", generated / "imp", "--shard-rows", 4, "--max-new-tokens", 4,
    )  # fmt: skip
    assert "refusing to resume" in err and "import.source_sha256" in err


def test_parquet_and_saved_dataset_import_as_jsonl_does(tmp_path):
    import datasets

    write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "x"}, {"id": 7, "prompt": "y"}])
    rows = [
        {"prompt_id": "a", "text": "one two three", "model": "m", "finish_reason": "length", "num_tokens": 9},
        {"prompt_id": "7", "text": "four", "model": "m", "finish_reason": "stop", "num_tokens": 1},
        {"prompt_id": "a", "text": "five six", "model": "m", "finish_reason": "stop", "num_tokens": 2},
    ]
    write_jsonl(tmp_path / "c.jsonl", rows)
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "c.parquet"))
    ds.save_to_disk(str(tmp_path / "c-dataset"))
    outputs = []
    for source in ("c.jsonl", "c.parquet", "c-dataset"):
        run_cli("import", "--completions", tmp_path / source, "--prompts", tmp_path / "prompts.jsonl",
                "--run-dir", tmp_path / f"run-{source}")  # fmt: skip
        outputs.append((tmp_path / f"run-{source}/generate/shard-m0-00000.jsonl").read_text())
    assert outputs[0] == outputs[1] == outputs[2]
    got = [json.loads(line) for line in outputs[0].splitlines()]
    assert [(r["prompt_id"], r["sample_index"]) for r in got] == [("a", 0), ("7", 0), ("a", 1)]


def test_optional_columns_take_their_defaults(tmp_path):
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}])
    write_jsonl(tmp_path / "c.jsonl", [{"qid": "a", "response": "hello there world"}])
    run_cli("import", "--completions", tmp_path / "c.jsonl", "--prompts", tmp_path / "prompts.jsonl",
            "--run-dir", tmp_path / "run", "--completion-id-column", "qid", "--text-column", "response",
            "--model", "api-model")  # fmt: skip
    [row] = shard_rows(tmp_path / "run")
    assert row == {
        "prompt_id": "a", "sample_index": 0, "model": "api-model", "text": "hello there world",
        "num_tokens": 3, "finish_reason": "stop",
    }  # fmt: skip
    manifest = read_json(tmp_path / "run/generate/manifest.json")
    assert manifest["skipped_prompts"] == 1 and manifest["config"]["generate"]["models"] == ["api-model"]


BAD_ROWS = [
    ({"text": "t"}, "c.jsonl:2: field 'prompt_id': missing (the prompt id)"),
    ({"prompt_id": "zz", "text": "t"}, "c.jsonl:2: field 'prompt_id': prompt id 'zz' is not in the prompts file"),
    ({"prompt_id": "a", "text": 3}, "c.jsonl:2: field 'text': expected a string, got int"),
    ({"prompt_id": "a"}, "c.jsonl:2: field 'text': missing"),
    ({"prompt_id": "a", "text": "t", "finish_reason": "eos"}, "c.jsonl:2: field 'finish_reason': expected 'stop' or 'length', got 'eos'"),
    ({"prompt_id": "a", "text": "t", "num_tokens": -1}, "c.jsonl:2: field 'num_tokens': expected an integer >= 0, got -1"),
    ({"prompt_id": "a", "text": "t", "sample_index": "0"}, "c.jsonl:2: field 'sample_index': expected an integer >= 0, got '0'"),
    ({"prompt_id": "a", "text": "t", "sample_index": 0}, "c.jsonl:2: field 'sample_index': ('a', 0) repeats the completion on line 1"),
    ({"prompt_id": "a", "text": "t", "sample_index": 100_000_000}, "c.jsonl:2: field 'sample_index': 100000000 is beyond the largest sample index, 9999 (at most 10000 completions per prompt, as for --n)"),
    ({"prompt_id": "a", "text": "t", "sample_index": 10_000}, "c.jsonl:2: field 'sample_index': 10000 is beyond the largest sample index, 9999 (at most 10000 completions per prompt, as for --n)"),
    ({"prompt_id": "a", "text": "t", "model": ""}, "c.jsonl:2: field 'model': expected a non-empty string, got ''"),
    ("[1, 2]", "c.jsonl:2: expected a JSON object, got list"),
    ('{"prompt_id": "a", "text": ', "c.jsonl:2: malformed JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "message"), BAD_ROWS)
def test_bad_rows_are_named_by_line_and_field_and_nothing_is_written(tmp_path, capsys, bad, message):
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "x"}])
    write_jsonl(tmp_path / "c.jsonl", [{"prompt_id": "a", "text": "fine", "sample_index": 0}, bad])
    err = fails(
        capsys, "import", "--completions", tmp_path / "c.jsonl", "--prompts", tmp_path / "prompts.jsonl",
        "--run-dir", tmp_path / "run",
    )  # fmt: skip
    assert message in err
    assert not (tmp_path / "run" / "generate" / "config.json").exists()  # not claimed: fix the file and rerun


def test_bad_parquet_row_is_named_by_row(tmp_path, capsys):
    import datasets

    write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "x"}])
    datasets.Dataset.from_list([{"prompt_id": "a", "text": "ok"}, {"prompt_id": "a", "text": None}]).to_parquet(
        str(tmp_path / "c.parquet")
    )
    err = fails(capsys, "import", "--completions", tmp_path / "c.parquet", "--prompts", tmp_path / "prompts.jsonl",
                "--run-dir", tmp_path / "run")  # fmt: skip
    assert "c.parquet:2: field 'text': missing" in err
    assert fails(capsys, "import", "--completions", tmp_path / "nope.csv", "--prompts", tmp_path / "prompts.jsonl",
                 "--run-dir", tmp_path / "run").endswith("completions file does not exist: " + str(tmp_path / "nope.csv"))  # fmt: skip
