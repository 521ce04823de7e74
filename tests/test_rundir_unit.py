"""winnow.rundir without models: the stage lifecycle, the ledger, file records and checks,
and the errors readers give for damaged files (fast unit tests; test_rundir.py drives the
same through the command line)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from winnow.errors import WinnowError
from winnow.executors import ShardReport, ShardTask
from winnow.records import check_file, config_hash, file_record
from winnow.rundir import (
    FORMAT,
    LEDGER,
    Stage,
    _diff,
    _read_ledger,
    completed_manifest,
    load_generations,
    load_scored,
    load_selected,
    read_shards,
    verified_bytes,
)

CONFIG = {"generate": {"n": 2, "models": ["m"]}, "upstream": None}


def rows_of(prompt_id, n=2):
    return [{"prompt_id": prompt_id, "sample_index": j, "text": f"{prompt_id}{j}"} for j in range(n)]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- file records and checks


def test_file_record_of_jsonl_npy_and_other(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"a": 1}\n\n  \n{"b": 2}\n')
    assert file_record(jsonl) == {"bytes": 22, "sha256": sha(jsonl.read_bytes()), "rows": 2}
    assert file_record(jsonl, rows=7)["rows"] == 7  # a count the caller made wins
    npy = tmp_path / "r.npy"
    np.save(npy, np.zeros((3, 4)))
    record = file_record(npy)
    assert record["shape"] == [3, 4] and "rows" not in record and record["bytes"] == npy.stat().st_size
    other = tmp_path / "w.bin"
    other.write_bytes(b"xyz")
    assert file_record(other, note=1) == {"bytes": 3, "sha256": sha(b"xyz"), "note": 1}


def test_check_file_says_what_is_wrong(tmp_path):
    path = tmp_path / "s.jsonl"
    write_rows(path, rows_of("a"))
    record = file_record(path)
    assert check_file(path, record) is None
    assert check_file(path, {"rows": 2}) == "its record in the manifest is damaged"
    assert check_file(path, "not a dict") == "its record in the manifest is damaged"
    assert check_file(path, {"sha256": 5}) == "its record in the manifest is damaged"
    assert check_file(tmp_path / "gone.jsonl", record) == "missing"
    (tmp_path / "dir.jsonl").mkdir()
    assert check_file(tmp_path / "dir.jsonl", record) == "not a file"
    write_rows(path, rows_of("a", 3))
    assert check_file(path, record) == "3 rows, the manifest records 2"
    write_rows(path, rows_of("b"))
    assert check_file(path, record) == "content differs from the manifest (sha256)"


def test_check_file_of_an_array(tmp_path):
    path = tmp_path / "r.npy"
    np.save(path, np.zeros((2, 3)))
    record = file_record(path)
    np.save(path, np.ones((2, 3)))
    assert check_file(path, record) == "content differs from the manifest (sha256)"
    np.save(path, np.zeros((3, 3)))
    assert check_file(path, record) == "shape (3, 3), the manifest records (2, 3)"
    path.write_bytes(b"not numpy")
    assert check_file(path, record) == "not a readable .npy array"


def test_verified_bytes_and_read_shards_name_the_file(tmp_path):
    path = tmp_path / "shard-m0-00000.jsonl"
    write_rows(path, rows_of("a"))
    record = file_record(path)
    assert verified_bytes(path, record, stage="generate") == path.read_bytes()
    with pytest.raises(WinnowError) as e:
        verified_bytes(path, None, stage="generate")
    assert str(e.value) == (
        f"{path}: not recorded in {tmp_path}/manifest.json; rerun `winnow generate` on this run dir to remake it"
    )
    write_rows(path, rows_of("a", 1))
    with pytest.raises(WinnowError) as e:
        verified_bytes(path, record, stage="score")
    assert str(e.value) == f"{path}: 1 rows, the manifest records 2; rerun `winnow score` on this run dir to remake it"
    write_rows(tmp_path / "shard-m0-00000.jsonl", rows_of("a"))
    write_rows(tmp_path / "shard-m0-00001.jsonl", rows_of("b"))
    records = {f"shard-m0-0000{i}.jsonl": file_record(tmp_path / f"shard-m0-0000{i}.jsonl") for i in (0, 1)}
    got = read_shards(tmp_path, ["m0-00001", "m0-00000"], records, stage="generate")
    assert got == rows_of("b") + rows_of("a")  # in the order asked


def test_read_ledger_skips_lines_a_kill_cut_short_and_those_of_other_configs(tmp_path):
    path = tmp_path / LEDGER
    assert _read_ledger(path, "h1") == {}
    path.write_text(
        '{"file": "a", "sha256": "x", "config_hash": "h1"}\n'
        '{"sha256": "no file key", "config_hash": "h1"}\n'
        "[1, 2]\n"
        '"text"\n'
        '{"file": "b", "sha256": "y", "rows": 2, "config_hash": "h1"}\n'
        '{"file": "d", "sha256": "z", "config_hash": "h0"}\n'
        '{"file": "e", "sha256": "w"}\n'
        '{"file": "c", "sha2'
    )
    assert _read_ledger(path, "h1") == {"a": {"sha256": "x"}, "b": {"sha256": "y", "rows": 2}}
    assert _read_ledger(path, "h0") == {"d": {"sha256": "z"}}


def test_diff_names_every_changed_field():
    old = {"generate": {"n": 2, "t": 1.0, "gone": 1}, "seed": 0}
    new = {"generate": {"n": 4, "t": 1.0, "new": [1]}, "seed": 0}
    assert _diff(old, new) == ["generate.gone: 1 -> None", "generate.n: 2 -> 4", "generate.new: None -> [1]"]
    assert _diff(old, old) == [] and _diff(1, 2) == [": 1 -> 2"] and _diff({"a": 1}, 5) == [": {'a': 1} -> 5"]


# ---------------------------------------------------------------- the stage lifecycle


def make_shards(stage, names):
    """What an executor does: write each shard file, then the driver records it."""
    keys = {name: {(name, 0), (name, 1)} for name in names}
    for name in names:
        write_rows(stage.dir / f"shard-{name}.jsonl", rows_of(name))
    return keys


def test_a_stage_made_recorded_and_finished(tmp_path):
    with Stage(tmp_path, "generate", CONFIG) as stage:
        assert not (stage.dir / "config.json").exists()  # not claimed before its first output
        assert stage.pending(["s0", "s1"]) == ["s0", "s1"] and not stage.is_complete()
        stage.claim()
        keys = make_shards(stage, ["s0", "s1"])
        record = stage.recorder(keys, exact=True)
        record("s1")
        record("s0")
        assert stage.pending(["s0", "s1"]) == [] and stage.has_shard("s0")
        (stage.dir / "prompts.jsonl").write_text('{"id": "s0", "prompt": "p"}\n')
        manifest = stage.finish(["s0", "s1"], outputs=["prompts.jsonl"], num=2)
    stored = {"format": FORMAT, **CONFIG}  # the run-dir format first
    assert json.loads((stage.dir / "config.json").read_text()) == stored
    assert manifest["format"] == FORMAT and manifest["stage"] == "generate" and manifest["config"] == stored
    assert (
        manifest["config_hash"] == config_hash(stored) and manifest["shards"] == ["s0", "s1"] and manifest["num"] == 2
    )
    assert sorted(manifest["files"]) == ["prompts.jsonl", "shard-s0.jsonl", "shard-s1.jsonl"]
    assert manifest["files"]["shard-s0.jsonl"] == file_record(stage.dir / "shard-s0.jsonl")
    assert json.loads((stage.dir / "manifest.json").read_text()) == manifest
    # the ledger is rewritten in shard order, whatever order the shards landed in
    ledger = [json.loads(line)["file"] for line in (stage.dir / LEDGER).read_text().splitlines()]
    assert ledger == ["shard-s0.jsonl", "shard-s1.jsonl"]
    again = Stage(tmp_path, "generate", CONFIG)
    assert again.is_complete() and again.manifest() == manifest
    assert completed_manifest(tmp_path, "generate") == manifest


def test_finish_without_shards_keeps_the_ledger_and_has_no_shard_list(tmp_path):
    with Stage(tmp_path, "select", {"k": 1}) as stage:
        (stage.dir / "selected.jsonl").write_text("{}\n")
        manifest = stage.finish(outputs=["selected.jsonl"])
    assert "shards" not in manifest and not (stage.dir / LEDGER).exists()
    assert list(manifest["files"]) == ["selected.jsonl"] and manifest["files"]["selected.jsonl"]["rows"] == 1


def test_a_changed_config_is_refused_naming_the_fields(tmp_path):
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
    changed = {"generate": {"n": 3, "models": ["m"]}, "upstream": "abc"}
    with pytest.raises(WinnowError) as e, Stage(tmp_path, "generate", changed):
        pass
    d = tmp_path / "generate"
    assert str(e.value) == (
        f"refusing to resume {d} under a changed config: generate.n: 2 -> 3; upstream: None -> 'abc'. "
        f"Use a new --run-dir, or delete {d} to redo this stage."
    )
    with Stage(tmp_path, "generate", CONFIG):  # the refusal let go of the lock
        pass
    other = Stage(tmp_path, "generate", changed)
    with pytest.raises(WinnowError, match="refusing to resume"):
        other.claim()  # checked again under the lock


def test_a_refusal_names_every_stage_made_from_the_changed_one(tmp_path):
    for name in ("generate", "select", "sft"):  # dpo never ran: not named
        (tmp_path / name).mkdir()
    with Stage(tmp_path, "score", {"a": 1}) as stage:
        stage.claim()
    with pytest.raises(WinnowError) as e, Stage(tmp_path, "score", {"a": 2}):
        pass
    assert str(e.value) == (
        f"refusing to resume {tmp_path}/score under a changed config: a: 1 -> 2. Use a new --run-dir, or delete "
        f"{tmp_path}/score and the stages made from it ({tmp_path}/select, {tmp_path}/sft) to redo them."
    )


def test_tuples_in_a_config_are_stored_as_lists(tmp_path):
    stage = Stage(tmp_path, "generate", {"models": ("a", "b")})
    stored = {"format": FORMAT, "models": ["a", "b"]}
    assert stage.config == stored and stage.hash == config_hash(stored)


def test_entering_removes_what_a_killed_writer_left(tmp_path):
    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / ".shard-s0.jsonl.abc.tmp").write_text("half")
    (folder / ".tmp-checkpoint").mkdir()
    (folder / ".tmp-checkpoint" / "w.bin").write_text("x")
    (folder / "keep.tmp").write_text("not hidden: not a temp file of ours")
    (folder / ".hidden").write_text("not a temp file")
    (folder / ".dir.tmp").mkdir()  # a folder ending in .tmp is not a temp file
    with Stage(tmp_path, "sft", {}):
        pass
    assert sorted(p.name for p in folder.iterdir()) == [".dir.tmp", ".hidden", "keep.tmp", "lock"]


def test_a_stage_is_held_by_one_writer(tmp_path):
    with Stage(tmp_path, "score", {}), pytest.raises(WinnowError), Stage(tmp_path, "score", {}):
        pass
    with Stage(tmp_path, "score", {}):  # released on exit
        pass


def test_unrecorded_or_damaged_shards_are_pending_and_removed(tmp_path):
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        keys = make_shards(stage, ["s0", "s1", "s2"])
        stage.record_shard("s0", keys["s0"], exact=True)
        stage.record_shard("s1", keys["s1"], exact=True)
        write_rows(stage.dir / "shard-s1.jsonl", rows_of("s1", 1))  # damaged after it was recorded
        assert stage.pending(["s0", "s1", "s2", "s3"]) == ["s1", "s2", "s3"]
        assert not (stage.dir / "shard-s1.jsonl").exists() and not (stage.dir / "shard-s2.jsonl").exists()
        assert (stage.dir / "shard-s0.jsonl").exists()
    # a new driver trusts the ledger it finds
    fresh = Stage(tmp_path, "generate", CONFIG)
    assert fresh.pending(["s0"]) == [] and list(fresh.records()) == ["shard-s0.jsonl", "shard-s1.jsonl"]


def test_record_shard_refuses_a_shard_with_the_wrong_keys(tmp_path):
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        path = stage.dir / "shard-s0.jsonl"
        write_rows(path, [{"prompt_id": "s0", "sample_index": 0}, {"prompt_id": "x", "sample_index": 0}])
        with pytest.raises(WinnowError) as e:
            stage.record_shard("s0", {("s0", 0), ("s0", 1)}, exact=True)
        assert str(e.value) == (
            f"{path}:2: key ('x', 0) is not one of this shard's (prompt_id, sample_index); shard removed"
        )
        assert not path.exists()
        write_rows(path, [{"prompt_id": "s0", "sample_index": 0}, {"prompt_id": "s0", "sample_index": 0}])
        with pytest.raises(WinnowError, match=r":2: key \('s0', 0\) is repeated \(prompt_id, sample_index\)"):
            stage.record_shard("s0", {("s0", 0), ("s0", 1)}, exact=True)
        write_rows(path, [{"prompt_id": "s0", "sample_index": 1}])
        with pytest.raises(WinnowError) as e:
            stage.record_shard("s0", {("s0", 0), ("s0", 1)}, exact=True)
        assert str(e.value) == f"{path}: 1 rows, expected 2; shard removed" and not path.exists()
        write_rows(path, [{"prompt_id": "s0", "sample_index": 1}])
        stage.record_shard("s0", {("s0", 0), ("s0", 1)}, exact=False)  # may hold fewer
        assert stage.records()["shard-s0.jsonl"]["rows"] == 1 and stage.has_shard("s0")
        assert [json.loads(x)["file"] for x in (stage.dir / LEDGER).read_text().splitlines()] == ["shard-s0.jsonl"]


def test_check_made_records_late_shards_and_names_failures(tmp_path):
    tasks = [ShardTask("s0", None), ShardTask("s1", None)]
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        keys = make_shards(stage, ["s0"])
        keys["s1"] = {("s1", 0), ("s1", 1)}
        with pytest.raises(WinnowError) as e:
            stage.check_made(tasks, ShardReport(done=["s0"], failed={"s1": "boom", "s2": "bang"}), keys, exact=True)
        assert str(e.value) == f"{stage.dir}: 2 shard(s) failed: shard s1: boom; shard s2: bang"
        with pytest.raises(WinnowError) as e:
            stage.check_made(tasks, ShardReport(done=["s0"]), keys, exact=True)
        assert str(e.value) == f"{stage.dir}: the executor made no file for shard(s) s1"
        assert stage.has_shard("s0")  # recorded although the executor only reported it at the end
        make_shards(stage, ["s1"])
        stage.check_made(tasks, ShardReport(done=["s0", "s1"]), keys, exact=True)
        assert stage.pending(["s0", "s1"]) == []


def test_a_damaged_or_foreign_manifest_is_not_trusted(tmp_path):
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        keys = make_shards(stage, ["s0"])
        stage.record_shard("s0", keys["s0"], exact=True)
        stage.finish(["s0"])
    path = tmp_path / "generate" / "manifest.json"
    path.write_text("{not json")
    stage = Stage(tmp_path, "generate", CONFIG)
    assert not stage.is_complete() and stage.stored_manifest() is None
    assert stage.pending(["s0"]) == []  # the ledger still vouches for the shard
    with pytest.raises(WinnowError) as e:
        stage.manifest()
    assert str(e.value) == f"{tmp_path / 'generate'} is not complete: run the generate stage first"
    path.write_text(json.dumps({"config_hash": "other", "files": {}}))
    assert Stage(tmp_path, "generate", CONFIG).stored_manifest() is None
    path.write_text("[1]")
    assert Stage(tmp_path, "generate", CONFIG).stored_manifest() is None


# ---------------------------------------------------------------- readers of finished stages


def finished(tmp_path, name, files, config=None, **summary):
    """A finished stage folder holding ``files`` (relpath -> bytes)."""
    with Stage(tmp_path, name, config or {name: 1}) as stage:
        for relpath, data in files.items():
            (stage.dir / relpath).write_bytes(data)
        return stage.finish(outputs=list(files), **summary)


def test_completed_manifest_errors(tmp_path):
    with pytest.raises(WinnowError) as e:
        completed_manifest(tmp_path, "score")
    path = tmp_path / "score" / "manifest.json"
    assert str(e.value) == f"{path} not found: run `winnow score` on this run dir first"
    path.parent.mkdir()
    for content, problem in [
        ({"format": FORMAT, "files": []}, "damaged (no file records)"),
        ([1], "damaged (no file records)"),
        (
            {"format": FORMAT, "files": {}, "config": {"a": 1}, "config_hash": "x"},
            "damaged (config does not match its hash)",
        ),
    ]:
        path.write_text(json.dumps(content))
        with pytest.raises(WinnowError) as e:
            completed_manifest(tmp_path, "score")
        assert str(e.value) == f"{path}: {problem}; rerun `winnow score` on this run dir to rebuild it"


def write_generate(tmp_path, rows=None):
    prompts = b'{"id": "a", "prompt": "hi"}\n{"id": "b", "messages": [{"role": "user", "content": "yo"}]}\n'
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        write_rows(stage.dir / "shard-s0.jsonl", rows or rows_of("a") + rows_of("b"))
        stage.record_shard("s0", {(p, j) for p in "ab" for j in (0, 1)}, exact=True)
        (stage.dir / "prompts.jsonl").write_bytes(prompts)
        return stage.finish(["s0"], outputs=["prompts.jsonl"], num_columns=2)


def test_load_generations(tmp_path):
    write_generate(tmp_path)
    prompts, rows, manifest = load_generations(tmp_path)
    assert [(p.id, p.text, p.messages) for p in prompts] == [
        ("a", "hi", None),
        ("b", None, ({"role": "user", "content": "yo"},)),
    ]
    assert rows == rows_of("a") + rows_of("b") and manifest["num_columns"] == 2
    manifest_path = tmp_path / "generate" / "manifest.json"
    broken = json.loads(manifest_path.read_text())
    del broken["shards"]
    manifest_path.write_text(json.dumps(broken))
    with pytest.raises(WinnowError) as e:
        load_generations(tmp_path)
    assert str(e.value) == f"{manifest_path}: damaged (no shard list); rerun `winnow generate` to rebuild it"
    broken["shards"], broken["num_columns"] = ["s0"], "2"
    manifest_path.write_text(json.dumps(broken))
    with pytest.raises(WinnowError, match="damaged \\(no shard list\\)"):
        load_generations(tmp_path)


def test_load_scored_and_selected(tmp_path):
    write_generate(tmp_path)
    rewards = np.array([[0.1, 0.2], [0.3, np.nan]])
    buffer = tmp_path / "buf.npy"
    np.save(buffer, rewards)
    finished(tmp_path, "score", {"rewards.npy": buffer.read_bytes()})
    prompts, by_key, got, manifest = load_scored(tmp_path)
    assert [p.id for p in prompts] == ["a", "b"] and manifest["stage"] == "score"
    assert sorted(by_key) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)] and by_key[("b", 1)]["text"] == "b1"
    np.testing.assert_array_equal(got, rewards)
    np.save(buffer, np.zeros((3, 2)))
    finished(tmp_path / "other", "score", {"rewards.npy": buffer.read_bytes()})
    (tmp_path / "score").rename(tmp_path / "old-score")
    (tmp_path / "other" / "score").rename(tmp_path / "score")
    with pytest.raises(WinnowError) as e:
        load_scored(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'score' / 'rewards.npy'}: shape (3, 2), expected (2, 2); rerun `winnow score` to remake it"
    )
    finished(tmp_path, "select", {"selected.jsonl": b'{"prompt_id": "a"}\n\n{"prompt_id": "b"}\n'})
    assert load_selected(tmp_path) == [{"prompt_id": "a"}, {"prompt_id": "b"}]


# ---------------------------------------------------------------- details the messages and files promise


def test_ledger_lines_are_sorted_json_while_made_and_after_finish(tmp_path):
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        keys = make_shards(stage, ["s1", "s0"])
        stage.record_shard("s1", keys["s1"], exact=True)
        stage.record_shard("s0", keys["s0"], exact=True)

        def line(name):
            path = stage.dir / f"shard-{name}.jsonl"
            digest = sha(path.read_bytes())
            return (
                f'{{"bytes": {path.stat().st_size}, "config_hash": "{stage.hash}", "file": "shard-{name}.jsonl", '
                f'"rows": 2, "sha256": "{digest}"}}\n'
            )

        assert (stage.dir / LEDGER).read_text() == line("s1") + line("s0")
        stage.finish(["s0", "s1"])
        assert (stage.dir / LEDGER).read_text() == line("s0") + line("s1")


def test_records_of_a_finished_stage_come_from_its_manifest(tmp_path):
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        keys = make_shards(stage, ["s0"])
        stage.record_shard("s0", keys["s0"], exact=True)
        (stage.dir / "prompts.jsonl").write_text("{}\n")
        stage.record_file("prompts.jsonl")
        assert stage.matches("prompts.jsonl")
        stage.finish(["s0"], outputs=["prompts.jsonl"])
        assert stage.read_shards(["s0"]) == rows_of("s0")
    (tmp_path / "generate" / LEDGER).unlink()
    fresh = Stage(tmp_path, "generate", CONFIG)
    assert fresh.pending(["s0"]) == [] and sorted(fresh.records()) == ["prompts.jsonl", "shard-s0.jsonl"]


def test_late_shards_are_checked_as_strictly_and_recorded_once(tmp_path):
    tasks = [ShardTask("s0", None), ShardTask("s1", None), ShardTask("s2", None)]
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        keys = make_shards(stage, ["s0", "s1"])
        stage.recorder(keys, exact=True)("s0")
        write_rows(stage.dir / "shard-s1.jsonl", rows_of("s1", 1))
        with pytest.raises(WinnowError, match="1 rows, expected 2; shard removed"):
            stage.check_made(tasks[:2], ShardReport(done=["s0", "s1"]), keys, exact=True)
        ledger = [json.loads(x)["file"] for x in (stage.dir / LEDGER).read_text().splitlines()]
        assert ledger == ["shard-s0.jsonl"]  # s0 was recorded once, not again at the end
        with pytest.raises(WinnowError) as e:
            stage.check_made(tasks, ShardReport(done=["s0"]), keys, exact=True)
        assert str(e.value) == f"{stage.dir}: the executor made no file for shard(s) s1, s2"
        write_rows(stage.dir / "shard-s2.jsonl", rows_of("s2", 1))
        with pytest.raises(WinnowError, match="1 rows, expected 2"):
            stage.recorder({"s2": {("s2", 0), ("s2", 1)}}, exact=True)("s2")


def test_a_changed_config_with_no_field_to_name(tmp_path):
    (tmp_path / "generate").mkdir()
    (tmp_path / "generate" / "config.json").write_text(json.dumps({"format": FORMAT, **CONFIG, "extra": None}))
    with pytest.raises(WinnowError) as e, Stage(tmp_path, "generate", CONFIG):
        pass
    assert "under a changed config: (unknown). Use a new --run-dir" in str(e.value)


def test_diff_keeps_the_field_name_whole():
    assert _diff({"A": {"MAX.X": 1}}, {"A": {"MAX.X": 2}}) == ["A.MAX.X: 1 -> 2"]


def test_readers_name_the_stage_to_rerun_and_the_file_with_bad_json(tmp_path):
    write_generate(tmp_path)
    folder = tmp_path / "generate"
    shard = folder / "shard-s0.jsonl"
    shard.write_text("{}\n")
    with pytest.raises(WinnowError, match=r"shard-s0\.jsonl: .*; rerun `winnow generate` on this run dir"):
        load_generations(tmp_path)
    (folder / "prompts.jsonl").write_text("{}\n")
    with pytest.raises(WinnowError, match=r"prompts\.jsonl: .*; rerun `winnow generate` on this run dir"):
        load_generations(tmp_path)
    # a recorded file whose JSON is bad: the error names the file and line
    rows = tmp_path / "bad"
    write_generate(rows)
    manifest = json.loads((rows / "generate" / "manifest.json").read_text())
    for relpath in ("prompts.jsonl", "shard-s0.jsonl"):
        path = rows / "generate" / relpath
        good = path.read_bytes()
        path.write_bytes(good + b"{broken\n")
        manifest["files"][relpath] = file_record(path)
        (rows / "generate" / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(WinnowError, match=rf"^{path}:\d: malformed JSON"):
            load_generations(rows)
        path.write_bytes(good)
        manifest["files"][relpath] = file_record(path)
    finished(tmp_path, "select", {"selected.jsonl": b'{"a": 1}\n'})
    sel = tmp_path / "select" / "selected.jsonl"
    sel.write_text('{"a": 2}\n')
    with pytest.raises(WinnowError, match=r"; rerun `winnow select` on this run dir"):
        load_selected(tmp_path)
    bad = finished(tmp_path / "s2", "select", {"selected.jsonl": b'{"a": 1}\n[\n'})
    assert bad["files"]["selected.jsonl"]["rows"] == 2
    with pytest.raises(WinnowError, match=rf"^{tmp_path / 's2' / 'select' / 'selected.jsonl'}:2: "):
        load_selected(tmp_path / "s2")


def test_load_scored_names_the_score_stage(tmp_path):
    write_generate(tmp_path)
    buffer = tmp_path / "buf.npy"
    np.save(buffer, np.zeros((2, 2)))
    finished(tmp_path, "score", {"rewards.npy": buffer.read_bytes()})
    np.save(tmp_path / "score" / "rewards.npy", np.ones((2, 2)))
    with pytest.raises(WinnowError, match=r"rewards\.npy: content differs .*; rerun `winnow score` on this run dir"):
        load_scored(tmp_path)


def test_record_shard_names_the_file_with_bad_json(tmp_path):
    with Stage(tmp_path, "generate", CONFIG) as stage:
        stage.claim()
        path = stage.dir / "shard-s0.jsonl"
        path.write_text('{"prompt_id": "s0", "sample_index": 0}\n{oops\n')
        with pytest.raises(WinnowError, match=rf"^{path}:2: malformed JSON"):
            stage.record_shard("s0", {("s0", 0), ("s0", 1)}, exact=False)


def test_stage_read_shards_names_its_stage(tmp_path):
    with Stage(tmp_path, "score", {}) as stage:
        stage.claim()
        write_rows(stage.dir / "shard-s0.jsonl", rows_of("s0"))
        stage.record_shard("s0", {("s0", 0), ("s0", 1)}, exact=True)
        write_rows(stage.dir / "shard-s0.jsonl", rows_of("s1"))
        with pytest.raises(WinnowError, match=r"content differs .*; rerun `winnow score` on this run dir"):
            stage.read_shards(["s0"])
