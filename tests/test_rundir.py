"""The run directory: one writer per stage (real second processes), verified contents, repair."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import fails, gen_args, start_held, tree_digest, wait_for, write_jsonl

from winnow.cli import main
from winnow.errors import WinnowError
from winnow.lock import StageLock


@pytest.fixture()
def finished(workdir, tiny_policy):
    """A run dir through generate, score and select (3 generate shards of 2, 2, 1 prompts)."""
    run = workdir / "run"
    assert main(gen_args(workdir, tiny_policy, shard_size=2)) == 0
    assert main(["score", "--run-dir", str(run), "--reward-fn", "length"]) == 0
    assert main(["select", "--run-dir", str(run), "--strategy", "top_per_prompt"]) == 0
    return run


# ---- one writer per stage ----------------------------------------------------------------


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with StageLock(tmp_path / "lock"):
        holder = json.loads((tmp_path / "lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(WinnowError, match=f"is being written by pid {os.getpid()} on host"):
            StageLock(tmp_path / "lock").acquire()
    assert (tmp_path / "lock").read_text() == ""  # released: emptied, never deleted
    with StageLock(tmp_path / "lock"):
        pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path, capfd):
    code = f"from winnow.lock import StageLock; import os; StageLock({str(tmp_path / 'lock')!r}).acquire(); os.kill(os.getpid(), 9)"
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    dead = json.loads((tmp_path / "lock").read_text())["pid"]
    with StageLock(tmp_path / "lock"):
        assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
    assert f"taking over {tmp_path / 'lock'} from pid {dead}" in capfd.readouterr().err


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "winnow", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def holds_lock(folder: Path, pid: int):
    def check() -> bool:
        try:
            return json.loads((folder / "lock").read_text()).get("pid") == pid
        except (OSError, ValueError):
            return False

    return check


@pytest.mark.parametrize("change", [["--temperature", "0.7"], ["--seed", "5"]])
def test_a_second_generate_is_refused_while_the_first_writes(tmp_path, tiny_policy, change):
    """Two real processes on one run dir: the second is refused at once, naming the first;
    after the first is killed, the changed config is still refused, and the first resumes,
    taking over the dead process's lock."""
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"item {i}"} for i in range(12)])
    first = gen_args(tmp_path, tiny_policy, "--shard-size", "1", shard_size=2)
    folder = tmp_path / "run/generate"
    # Held for good in its generate call for shard 4, holding the lock: the second process
    # meets a live writer however fast the first one runs.
    a = start_held(first, after=3)
    wait_for(lambda: len(list(folder.glob("shard-*.jsonl"))) >= 3, proc=a)
    try:
        b = subprocess.run(
            [sys.executable, "-m", "winnow", *first, *change], capture_output=True, text=True, timeout=300
        )
        assert b.returncode == 2, b.stderr
        assert f"is being written by pid {a.pid} on host" in b.stderr and "Traceback" not in b.stderr
    finally:
        a.kill()
        a.wait(timeout=60)
    # the first claimed the stage: the second's config is refused by name, before it takes the lock
    b = subprocess.run([sys.executable, "-m", "winnow", *first, *change], capture_output=True, text=True, timeout=300)
    assert b.returncode == 2 and "refusing to resume" in b.stderr and change[0][2:] in b.stderr
    done = subprocess.run([sys.executable, "-m", "winnow", *first], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"taking over {folder / 'lock'} from pid {a.pid} on host" in done.stderr  # the dead writer's lock
    manifest = json.loads((folder / "manifest.json").read_text())
    stored = json.loads((folder / "config.json").read_text())
    assert manifest["config"] == stored
    assert stored["generate"]["temperature"] == 1.0 and stored["generate"]["seed"] == 0
    assert manifest["num_completions"] == 12 * 4
    assert main(["verify", str(tmp_path / "run")]) == 0


def test_a_second_score_is_refused_while_the_first_writes(workdir, tiny_policy):
    run = workdir / "run"
    assert main(gen_args(workdir, tiny_policy, shard_size=2)) == 0
    (workdir / "rewards.py").write_text(REWARDS)
    # The first writer's reward function holds it inside the stage (lock taken) until the
    # test lets it go, so the second writer meets the lock however fast the machine is.
    env = {**os.environ, "WINNOW_TEST_GATE": str(workdir / "gate")}
    a = subprocess.Popen(
        [sys.executable, "-m", "winnow", "score", "--run-dir", str(run), "--reward-fn", f"{workdir}/rewards.py:first"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for(lambda: (workdir / "gate.held").exists(), proc=a)
        assert holds_lock(run / "score", a.pid)()
        b = subprocess.run(
            [
                sys.executable,
                "-m",
                "winnow",
                "score",
                "--run-dir",
                str(run),
                "--reward-fn",
                f"{workdir}/rewards.py:other",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        (workdir / "gate").write_text("go")
    assert b.returncode == 2 and f"is being written by pid {a.pid}" in b.stderr, b.stderr
    assert a.wait(timeout=300) == 0, a.stderr.read() if a.stderr else ""
    manifest = json.loads((run / "score/manifest.json").read_text())
    assert manifest["config"]["score"]["reward_fn"].endswith("rewards.py:first")
    assert manifest["config"] == json.loads((run / "score/config.json").read_text())
    assert np.load(run / "score/rewards.npy").tolist() == [[1.0] * 4] * 5


REWARDS = """
import os, pathlib, time

def first(prompts, completions, **kw):
    gate = os.environ.get("WINNOW_TEST_GATE")
    if gate:  # hold here, inside the locked stage, until the test writes the gate file
        pathlib.Path(gate + ".held").touch()
        deadline = time.time() + 300
        while not pathlib.Path(gate).exists() and time.time() < deadline:
            time.sleep(0.02)
    return [1.0] * len(completions)

def other(prompts, completions, **kw):
    return [2.0] * len(completions)
"""


# ---- verified contents and repair ----------------------------------------------------------


def test_emptied_generate_shard_is_named_by_score_and_repaired_by_generate(finished, workdir, tiny_policy, capsys):
    shard = finished / "generate/shard-m0-00002.jsonl"
    before = tree_digest(finished)
    shutil.rmtree(finished / "score")
    shard.write_text("")
    fails(
        ["score", "--run-dir", str(finished), "--reward-fn", "length"],
        capsys,
        str(shard),
        "0 rows, the manifest records 4",
        one_error=True,
    )
    assert main(gen_args(workdir, tiny_policy, shard_size=2)) == 0
    assert main(["score", "--run-dir", str(finished), "--reward-fn", "length"]) == 0
    assert tree_digest(finished) == before


def test_deleted_generate_shard_is_named_and_repaired(finished, workdir, tiny_policy, capsys):
    shard = finished / "generate/shard-m0-00001.jsonl"
    before = shard.read_bytes()
    shard.unlink()
    fails(
        ["select", "--run-dir", str(finished), "--strategy", "top_per_prompt"],
        capsys,
        f"{shard}: missing",
        one_error=True,
    )
    assert main(gen_args(workdir, tiny_policy, shard_size=2)) == 0
    assert shard.read_bytes() == before


def test_deleted_rewards_are_named_and_rebuilt(finished, capsys):
    path = finished / "score/rewards.npy"
    before = tree_digest(finished)
    path.unlink()
    shutil.rmtree(finished / "select")
    fails(["select", "--run-dir", str(finished)], capsys, f"{path}: missing", "rerun `winnow score`", one_error=True)
    assert main(["score", "--run-dir", str(finished), "--reward-fn", "length"]) == 0
    assert main(["select", "--run-dir", str(finished)]) == 0
    assert tree_digest(finished) == before


def test_rewards_of_the_wrong_shape_are_named_and_rebuilt(finished, capsys):
    path = finished / "score/rewards.npy"
    before = tree_digest(finished)
    np.save(path, np.zeros((5, 3)))
    shutil.rmtree(finished / "select")
    fails(
        ["select", "--run-dir", str(finished)],
        capsys,
        f"{path}: shape (5, 3), the manifest records (5, 4)",
        one_error=True,
    )
    assert main(["score", "--run-dir", str(finished), "--reward-fn", "length"]) == 0
    assert main(["select", "--run-dir", str(finished)]) == 0
    assert tree_digest(finished) == before


@pytest.mark.parametrize("stage", ["generate", "score"])
def test_truncated_manifest_is_named_and_rebuilt_without_redoing_shards(finished, workdir, tiny_policy, capsys, stage):
    path = finished / stage / "manifest.json"
    before = tree_digest(finished)
    shards = {p: p.stat().st_mtime_ns for p in (finished / stage).glob("shard-*.jsonl")}
    path.write_text(path.read_text()[:50])
    shutil.rmtree(finished / "select")
    fails(["select", "--run-dir", str(finished)], capsys, f"{path}: damaged (not valid JSON", one_error=True)
    rerun = (
        gen_args(workdir, tiny_policy, shard_size=2)
        if stage == "generate"
        else ["score", "--run-dir", str(finished), "--reward-fn", "length"]
    )
    assert main(rerun) == 0
    assert {p: p.stat().st_mtime_ns for p in shards} == shards  # rebuilt from the verified shards
    assert main(["select", "--run-dir", str(finished)]) == 0
    assert tree_digest(finished) == before


def test_damaged_shard_of_an_unfinished_stage_is_remade(finished, workdir, tiny_policy):
    """No manifest yet (a killed run): shards are checked against the driver's ledger."""
    before = tree_digest(finished / "generate")
    (finished / "generate/manifest.json").unlink()
    (finished / "generate/shard-m0-00000.jsonl").write_text('{"prompt_id": "p0", "sample_index": 0}\n')
    (finished / "generate/.shard-m0-00001.jsonl.x1y2.tmp").write_text("half a shard")  # a kill left it
    assert main(gen_args(workdir, tiny_policy, shard_size=2)) == 0
    assert tree_digest(finished / "generate") == before


def test_unrecorded_shard_is_not_trusted(finished, workdir, tiny_policy):
    """A shard written just before a kill, not yet recorded, is made again (same bytes)."""
    before = tree_digest(finished / "generate")
    (finished / "generate/manifest.json").unlink()
    ledger = finished / "generate/verified.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    ledger.write_text("".join(lines[:1]) + lines[1][:20])  # the last record cut short by the kill
    (finished / "generate/shard-m0-00001.jsonl").write_text("")
    assert main(gen_args(workdir, tiny_policy, shard_size=2)) == 0
    assert tree_digest(finished / "generate") == before


def test_a_worker_writing_keys_of_another_shard_is_caught(tmp_path):
    from winnow.executors import write_shard
    from winnow.rundir import Stage

    stage = Stage(tmp_path, "score", {"x": 1})
    with stage:
        stage.claim()
        write_shard(stage.dir, "00000", [{"prompt_id": "p9", "sample_index": 0}], config_hash=stage.hash)
        with pytest.raises(WinnowError, match=r"shard-00000.jsonl:1: key \('p9', 0\) is not one of this shard's"):
            stage.record_shard("00000", {("p0", 0)}, exact=True)
        assert not (stage.dir / "shard-00000.jsonl").exists()


def test_a_writer_refuses_a_stage_whose_config_changed(tmp_path):
    from winnow.executors import write_shard
    from winnow.rundir import Stage

    stage = Stage(tmp_path, "score", {"x": 1})
    with stage:
        stage.claim()
    (stage.dir / "config.json").write_text('{"x": 2}\n')
    with pytest.raises(WinnowError, match="config changed under this writer"):
        write_shard(stage.dir, "00000", [], config_hash=stage.hash)
    assert not (stage.dir / "shard-00000.jsonl").exists()


# ---- winnow verify: every kind of file damaged in a finished run dir -----------------------


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_policy) -> tuple[Path, list[str]]:
    """A finished run dir through sft, and the generate command that made it."""
    d = tmp_path_factory.mktemp("full")
    write_jsonl(d / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"prompt number {i}"} for i in range(5)])
    gen = gen_args(d, tiny_policy, shard_size=2)
    assert main(gen) == 0
    assert main(["score", "--run-dir", str(d / "run"), "--reward-fn", "length"]) == 0
    assert main(["select", "--run-dir", str(d / "run")]) == 0
    sft = ["sft", "--run-dir", str(d / "run"), "--sft-model", str(tiny_policy), "--device", "cpu", "--epochs", "1"]
    assert main(sft) == 0
    assert main(["verify", str(d / "run")]) == 0
    return d / "run", gen


def empty(p: Path) -> None:
    p.write_text("")


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


DAMAGE = [
    # (file, damage, the stage whose rerun repairs it, or None: the rerun refuses clearly)
    ("generate/shard-m0-00001.jsonl", empty, "generate"),
    ("generate/shard-m0-00000.jsonl", Path.unlink, "generate"),
    ("generate/prompts.jsonl", truncate, "generate"),
    ("generate/manifest.json", truncate, "generate"),
    ("generate/config.json", truncate, None),
    ("score/shard-00000.jsonl", flip, "score"),
    ("score/rewards.npy", flip, "score"),
    ("score/rewards.npy", Path.unlink, "score"),
    ("score/manifest.json", Path.unlink, "score"),
    ("select/selected.jsonl", truncate, "select"),
    ("select/manifest.json", empty, "select"),
    ("sft/checkpoint/model.safetensors", flip, "sft"),
    ("sft/checkpoint/config.json", Path.unlink, "sft"),
    ("sft/manifest.json", truncate, "sft"),
]


@pytest.mark.parametrize("relpath, damage, repairer", DAMAGE, ids=[f"{d[0]}-{d[1].__name__}" for d in DAMAGE])
def test_verify_names_each_damaged_file_and_a_rerun_repairs_it(
    full_run, tmp_path, tiny_policy, capsys, relpath, damage, repairer
):
    source, gen = full_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    before = tree_digest(run)
    damage(run / relpath)
    assert main(["verify", str(run)]) == 2
    out, err = capsys.readouterr()
    stage = relpath.split("/")[0]
    named = str(run / relpath)
    assert any(line.startswith(f"{stage:9} PROBLEM {named}") for line in out.splitlines()), out
    assert err.strip().splitlines()[-1].startswith("winnow: error:") and "problem(s) in" in err
    commands = {
        "generate": [*gen[: -0 or None]],
        "score": ["score", "--run-dir", str(run), "--reward-fn", "length"],
        "select": ["select", "--run-dir", str(run)],
        "sft": ["sft", "--run-dir", str(run), "--sft-model", str(tiny_policy), "--device", "cpu", "--epochs", "1"],
    }
    commands["generate"][commands["generate"].index("--run-dir") + 1] = str(run)
    if repairer is None:
        fails(commands[stage], capsys, named, "damaged", one_error=True)
        return
    assert main(commands[repairer]) == 0
    assert tree_digest(run) == before
    assert main(["verify", str(run)]) == 0
