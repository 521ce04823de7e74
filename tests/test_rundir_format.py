"""The run-dir format: recorded in every stage's config.json and manifest.json; a run dir
of the current format is read, one of another format (or of none: made before formats were
recorded) is refused by every command in one line saying what to do, exit 2, and is left
as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import tree_digest, write_jsonl

from winnow.cli import main
from winnow.errors import WinnowError
from winnow.rundir import FORMAT, Stage, completed_manifest

FOLDERS = ("generate", "score", "select")


def args(command: str, d: Path, model: Path, *extra: str) -> list[str]:
    argv = [command, "--prompts", str(d / "prompts.jsonl"), "--run-dir", str(d / "run"), "--model", str(model)]
    return [*argv, "--n", "2", "--max-new-tokens", "4", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_policy) -> Path:
    """A run dir made by this winnow: bon (generate, score), select, report."""
    d = tmp_path_factory.mktemp("format")
    write_jsonl(d / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"count to {i}"} for i in range(3)])
    run = str(d / "run")
    assert main(args("bon", d, tiny_policy, "--reward-fn", "length")) == 0
    assert main(["select", "--run-dir", run, "--strategy", "top_per_prompt"]) == 0
    assert main(["report", run, "--bootstrap-iters", "10"]) == 0
    return d


@pytest.fixture()
def workdir(made, tmp_path) -> Path:
    shutil.copytree(made, tmp_path, dirs_exist_ok=True)
    return tmp_path


def set_format(run: Path, value) -> None:
    """Every stage's config.json and manifest.json as another format wrote it (None: unrecorded)."""
    for path in [*run.glob("*/config.json"), *run.glob("*/manifest.json")]:
        data = json.loads(path.read_text())
        for stored in (data, data.get("config")):
            if isinstance(stored, dict):
                stored.pop("format", None)
                if value is not None:
                    stored["format"] = value
        path.write_text(json.dumps(data))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_every_config_and_manifest_records_the_format(workdir, capsys):
    run = workdir / "run"
    for name in FOLDERS:
        for file in ("config.json", "manifest.json"):
            assert json.loads((run / name / file).read_text())["format"] == FORMAT == 3
    assert main(["verify", str(run)]) == 0, capsys.readouterr()


WRITTEN = {
    None: "format 0 (before run dirs recorded their format)",
    0: "format 0",
    2: "format 2",
    4: "format 4 (a newer winnow)",
    "1": "an unknown format ('1')",
    True: "an unknown format (True)",
}


def refusal(run: Path, name: str, found) -> str:
    """The line that refuses ``run/name`` of format ``found``, written out by hand."""
    after = {"generate": ["score", "select"], "score": ["select"], "select": []}[name]
    later = ", ".join(str(run / s) for s in after)
    delete = (
        f"{run}/{name} and the stages made from it ({later}) to redo them"
        if later
        else f"{run}/{name} to redo this stage"
    )
    return (
        f"{run}/{name} was written by run-dir {WRITTEN[found]}; this winnow reads format 3: use a new "
        f"--run-dir, or delete {delete}."
    )


COMMANDS = {
    "generate": ("generate", lambda d, m: args("generate", d, m)),
    "score": ("generate", lambda d, m: ["score", "--run-dir", str(d / "run"), "--reward-fn", "length"]),
    "select": ("generate", lambda d, m: ["select", "--run-dir", str(d / "run"), "--strategy", "top_per_prompt"]),
    "report": ("generate", lambda d, m: ["report", str(d / "run"), "--bootstrap-iters", "10"]),
    "bon": ("generate", lambda d, m: args("bon", d, m, "--reward-fn", "length")),
    "export": ("generate", lambda d, m: ["export", str(d / "run"), "--to", str(d / "out")]),
}
"""command -> (the stage folder it refuses first, its arguments)."""


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("found", [None, 2])
def test_another_format_is_refused_in_one_line(workdir, tiny_policy, capsys, command, found):
    run = workdir / "run"
    set_format(run, found)
    before = tree_digest(run)
    name, argv = COMMANDS[command]
    assert main(argv(workdir, tiny_policy)) == 2
    assert one_line_error(capsys) == f"winnow: error: {refusal(run, name, found)}"
    assert tree_digest(run) == before


@pytest.mark.parametrize("found", [None, 2])
def test_verify_names_each_stage_of_another_format(workdir, capsys, found):
    run = workdir / "run"
    set_format(run, found)
    assert main(["verify", str(run)]) == 2
    out = capsys.readouterr()
    for name in FOLDERS:  # the line every command refuses the folder with
        assert f"{name:9} PROBLEM {refusal(run, name, found)}\n" in out.out
    assert f"report    PROBLEM {run}/report: made from another generate and score stage" in out.out
    assert out.err == f"winnow: error: 4 problem(s) in {run}\n"


@pytest.mark.parametrize("found", list(WRITTEN))
def test_a_stage_of_another_format_is_neither_resumed_nor_read(tmp_path, found):
    with Stage(tmp_path, "sft", {"a": 1}) as stage:
        stage.finish(outputs=[])
    for file in ("config.json", "manifest.json"):
        path = tmp_path / "sft" / file
        data = {k: v for k, v in json.loads(path.read_text()).items() if k != "format"}
        path.write_text(json.dumps(data if found is None else {**data, "format": found}))
    line = (
        f"{tmp_path}/sft was written by run-dir {WRITTEN[found]}; this winnow reads format 3: "
        f"use a new --run-dir, or delete {tmp_path}/sft to redo this stage."
    )
    with pytest.raises(WinnowError) as e:
        completed_manifest(tmp_path, "sft")
    assert str(e.value) == line
    with pytest.raises(WinnowError) as e, Stage(tmp_path, "sft", {"a": 1}):
        pass
    assert str(e.value) == line


def test_a_manifest_that_is_not_an_object_is_damaged_not_of_another_format(tmp_path):
    (tmp_path / "score").mkdir()
    (tmp_path / "score" / "manifest.json").write_text("[1]")
    with pytest.raises(WinnowError) as e:
        completed_manifest(tmp_path, "score")
    assert str(e.value) == (
        f"{tmp_path}/score/manifest.json: damaged (no file records); rerun `winnow score` on this run dir to rebuild it"
    )
