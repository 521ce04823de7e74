"""``winnow verify RUN_DIR``: check a whole run dir against its manifests and say what is wrong.

For each stage folder: its config and manifest are readable and agree, every file the
manifest records is present with the recorded size and sha256 (so row counts and the reward
matrix's shape too), and the stage was made from the upstream stage now in the run dir; each
image the prompts name is in ``images/`` with the bytes its name hashes.
Temp files a killed run left, and a writer holding the lock, are reported as notes.
A held-out evaluation (``RUN_DIR/eval`` of ``run --eval-prompts``, or the folder of
``winnow eval``) is checked the same way, one run dir per model evaluated (``eval/start/score
ok``), and its eval.json must be there, naming only models whose folder is.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from winnow.errors import WinnowError
from winnow.images import read_stored
from winnow.records import TMP_SUFFIX, check_file, config_hash, read_json
from winnow.report.evals import FOLDER, RESULT, model_dir
from winnow.rounds import rounds_in
from winnow.rundir import ERRORS, LEDGER, TMP_DIR_PREFIX, check_format

STAGES = ("generate", "score", "select", "sft", "dpo")
UPSTREAM = {
    "score": ("generate", "generate_hash"),
    "select": ("score", "score_hash"),
    "sft": ("select", "select_hash"),
    "dpo": ("select", "select_hash"),
}
"""stage -> (the stage it reads, the config field holding that stage's config hash)."""
EVAL_STAGES = ("generate", "score")
"""The stages of each evaluated model's run dir (``winnow.evaluation``)."""


def verify_run(run_dir: str | Path) -> tuple[list[str], int]:
    """Report lines (one per finding) and the number of problems; 0 means all is well.

    ``run_dir`` is a single-round run dir, one round of a rounds run (``RUN/round-<r>``), or
    a rounds run dir as a whole (every ``round-<r>`` in it is checked, each line prefixed
    with its round). A folder holding neither stages nor rounds is a problem, not "all ok".
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise WinnowError(f"run dir does not exist or is not a folder: {run_dir}")
    rounds = rounds_in(run_dir)
    staged = any((run_dir / name).exists() for name in STAGES)
    if not staged and _evaluated(run_dir, rounds):  # `winnow eval`'s folder (its models may be round-1...)
        return verify_evaluation(run_dir, prefix="")
    if not rounds and not staged:
        return [f"{run_dir}: no stage folders ({', '.join(STAGES)}) and no round-<r> folders: not a run dir"], 1
    lines, problems = _verify_rounds(run_dir, rounds) if rounds and not staged else _verify_stages(run_dir)
    if (run_dir / FOLDER).is_dir():  # `run --eval-prompts`: each model evaluated is a run dir too
        found, count = verify_evaluation(run_dir / FOLDER, prefix=f"{FOLDER}/")
        lines, problems = lines + found, problems + count
    return lines, problems


def verify_evaluation(folder: Path, *, prefix: str) -> tuple[list[str], int]:
    """A held-out evaluation's folder (``winnow.evaluation``): each model's run dir checked
    as any run dir, its lines prefixed ``<prefix><model>/``; and eval.json, written last,
    present and naming only models whose folder is there."""
    lines, problems = [], 0
    for model in sorted(p for p in folder.iterdir() if p.is_dir()):
        if any((model / name).exists() for name in STAGES):
            found, count = _verify_stages(model, EVAL_STAGES)
        else:
            found, count = [f"PROBLEM {model}: no stage folders ({', '.join(STAGES)}): not a model's run dir"], 1
        lines += [f"{prefix}{model.name}/{line}" for line in found]
        problems += count
    found = _check_eval_file(folder)
    problems += len(found)
    lines += [f"{prefix}{RESULT:9} PROBLEM {p}" for p in found] or [f"{prefix}{RESULT:9} ok"]
    return lines, problems


def _evaluated(folder: Path, rounds: list[int]) -> bool:
    """Whether ``folder`` (holding no stage folder) is an evaluation's: its result is there,
    or, unless it holds rounds, a model's run dir (an evaluation killed before its result)."""
    if (folder / RESULT).exists():
        return True
    models = (p for p in folder.iterdir() if p.is_dir())
    return not rounds and any((m / name).is_dir() for m in models for name in STAGES)


def _check_eval_file(folder: Path) -> list[str]:
    path = folder / RESULT
    if not path.is_file():
        return [f"{path}: missing: the evaluation is not finished; rerun the command that evaluated"]
    try:
        models = read_json(path).get("models")
        names = [m["name"] for m in models]
    except (WinnowError, AttributeError, KeyError, TypeError):
        return [f"{path}: damaged; rerun the command that evaluated"]
    return [
        f"{path}: names model {name!r}, whose folder {model_dir(folder, name)} is missing; "
        "rerun the command that evaluated"
        for name in names
        if not model_dir(folder, name).is_dir()
    ]


def _verify_rounds(run_dir: Path, rounds: list[int]) -> tuple[list[str], int]:
    lines, problems = [], 0
    missing = sorted(set(range(1, max(rounds) + 1)) - set(rounds))
    if missing:
        problems += len(missing)
        lines += [
            f"round-{r} PROBLEM {run_dir / f'round-{r}'}: missing (rounds run 1, 2, ... in order)" for r in missing
        ]
    for r in rounds:
        found, count = _verify_stages(run_dir / f"round-{r}")
        lines += [f"round-{r}/{line}" for line in found]
        problems += count
    return lines, problems


def _verify_stages(run_dir: Path, stages: tuple[str, ...] = STAGES) -> tuple[list[str], int]:
    lines, problems = [], 0
    hashes: dict[str, str] = {}
    for name in stages:
        folder = run_dir / name
        if not folder.exists():
            lines.append(f"{name:9} not run")
            continue
        found, notes, stage_hash = _check_stage(folder, name, hashes)
        if stage_hash:
            hashes[name] = stage_hash
        problems += len(found)
        lines += [f"{name:9} PROBLEM {p}" for p in found] + [f"{name:9} note: {n}" for n in notes]
        if not found:
            lines.append(f"{name:9} ok")
    if (run_dir / "report").exists():
        found = check_report(run_dir, hashes)
        problems += len(found)
        lines += [f"{'report':9} PROBLEM {p}" for p in found] or [f"{'report':9} ok"]
    return lines, problems


def _pooled_upstream(folder: Path, used: dict, hashes: dict[str, str]) -> list[str]:
    """Problems with a pooled select's ``score_hashes`` ({round: score hash}): each must be
    the score stage now in that round's folder (this round's is checked above; the others'
    files are checked when their round is verified)."""
    this_round = folder.parent.name
    problems = []
    for r, recorded in sorted(used.items(), key=lambda item: int(item[0])):
        if f"round-{r}" == this_round:
            current = hashes.get("score")
        else:
            manifest = folder.parent.parent / f"round-{r}" / "score" / "manifest.json"
            try:
                current = read_json(manifest).get("config_hash") if manifest.exists() else None
            except WinnowError:
                current = None
        if current is None:
            problems.append(f"made from round {r}'s score stage, which is missing or broken in this run dir")
        elif current != recorded:
            problems.append(
                f"made from another round-{r} score stage ({recorded}) than the one in this run dir ({current}); "
                "rerun `winnow run` in a new run dir"
            )
    return problems


def _check_stage(folder: Path, name: str, hashes: dict[str, str]) -> tuple[list[str], list[str], str | None]:
    """(problems, notes, the stage's config hash when its manifest is sound)."""
    problems: list[str] = []
    notes = _notes(folder)
    config_path, manifest_path = folder / "config.json", folder / "manifest.json"
    try:
        config = read_json(config_path) if config_path.exists() else None
        manifest = read_json(manifest_path) if manifest_path.exists() else None
    except WinnowError as e:
        return [f"{e}; rerun `winnow {name}` to rebuild it"], notes, None
    try:  # a folder of another run-dir format is refused whole, as every command refuses it
        for stored in (config, manifest):
            if stored is not None:
                check_format(folder, stored)
    except WinnowError as e:
        return [str(e)], notes, None
    if manifest is None:
        if config is None:
            notes.append("started, nothing written yet")
            return problems, notes, None
        recorded = sum(1 for line in (folder / LEDGER).read_bytes().splitlines()) if (folder / LEDGER).exists() else 0
        problems.append(
            f"{manifest_path}: missing: the stage is not finished ({recorded} shard(s) recorded); rerun `winnow {name}`"
        )
        return problems, notes, None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return [f"{manifest_path}: damaged (no file records); rerun `winnow {name}`"], notes, None
    stage_hash = manifest.get("config_hash")
    if config_hash(manifest.get("config")) != stage_hash:
        problems.append(f"{manifest_path}: damaged (config does not match its hash); rerun `winnow {name}`")
    if config is not None and config != manifest.get("config"):
        problems.append(f"{config_path}: differs from the config in manifest.json")
    for relpath, record in sorted(manifest["files"].items()):
        problem = check_file(folder / relpath, record)
        if problem:
            problems.append(f"{folder / relpath}: {problem}; rerun `winnow {name}` to remake it")
    pooled = (manifest.get("config") or {}).get("score_hashes") if name == "select" else None
    if isinstance(pooled, dict):  # a round's select, pooled across rounds (winnow.pool)
        problems += _pooled_upstream(folder, pooled, hashes)
    elif name in UPSTREAM:
        upstream, field = UPSTREAM[name]
        used = (manifest.get("config") or {}).get(field)
        if upstream not in hashes:
            problems.append(f"made from a {upstream} stage that is missing or broken in this run dir")
        elif used != hashes[upstream]:
            problems.append(
                f"made from another {upstream} stage ({used}) than the one in this run dir ({hashes[upstream]}); "
                f"rerun `winnow {name}` in a new run dir"
            )
    problems += _check_file_map(folder, name, manifest, stage_hash)
    if name == "generate" and not problems:
        problems += _check_images(folder)
    extra = sorted(p.name for p in folder.glob("shard-*.jsonl") if p.name not in manifest["files"])
    if extra:
        notes.append(f"{len(extra)} shard file(s) not in the manifest, ignored: {', '.join(extra[:3])}")
    return problems, notes, stage_hash if not problems else None


def _check_images(folder: Path) -> list[str]:
    """Each image the prompts name (``images/<sha256>.<ext>`` in the run dir) present, and
    holding the bytes its name hashes."""
    problems, seen = [], set()
    for line in (folder / "prompts.jsonl").read_bytes().splitlines():
        for path in json.loads(line).get("images", ()) if line.strip() else ():
            if path in seen:
                continue
            seen.add(path)
            try:
                read_stored(folder.parent, path)
            except WinnowError as e:
                problems.append(str(e))
    return problems


REQUIRED = {"generate": ("prompts.jsonl",), "score": ("rewards.npy",), "select": ("selected.jsonl",)}
"""The outputs each stage's manifest must record, besides its shards."""


def _check_file_map(folder: Path, name: str, manifest: dict, stage_hash) -> list[str]:
    """The manifest records every output the stage makes, and the ledger agrees with it."""
    path, files = folder / "manifest.json", manifest["files"]
    shards = manifest.get("shards")
    names = []
    for s in shards if isinstance(shards, list) else []:  # each shard, after its errors file where it has one
        names += [f] if (f := f"errors-{s}.jsonl") in files else []
        names.append(f"shard-{s}.jsonl")
    wanted = [*REQUIRED.get(name, ()), *names] + (["pairs.jsonl"] if "num_pairs" in manifest else [])
    wanted += [ERRORS] if manifest.get("errors") else []
    problems = [f"{path}: records no {f}; rerun `winnow {name}`" for f in wanted if f not in files]
    if not files and name not in REQUIRED:
        problems.append(f"{path}: records no files; rerun `winnow {name}`")
    if names and not problems:
        ledger = folder / LEDGER
        if _ledger_entries(ledger, stage_hash) != [{"file": n, **files[n]} for n in names]:
            problems.append(f"{ledger}: does not match the shard records in manifest.json; rerun `winnow {name}`")
    return problems


def _ledger_entries(path: Path, stage_hash) -> list | None:
    """The ledger's entries without their config hash; None if unreadable or of another config."""
    if not path.is_file():
        return None
    entries = []
    for line in path.read_bytes().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if not isinstance(entry, dict) or entry.pop("config_hash", None) != stage_hash:
            return None
        entries.append(entry)
    return entries


def check_report(run_dir: Path, hashes: dict[str, str]) -> list[str]:
    """A report folder holds both its files and a readable report.json made from the
    generate and score stages now in the run dir."""
    folder = run_dir / "report"
    problems = []
    for file in ("report.json", "report.md"):
        if not (folder / file).is_file():
            problems.append(f"{folder / file}: missing; rerun `winnow report`")
    if not problems:
        try:
            report = read_json(folder / "report.json")
        except WinnowError:
            report = None
        if not isinstance(report, dict):
            return [f"{folder / 'report.json'}: damaged; rerun `winnow report`"]
        made_from = report.get("made_from")
        if not isinstance(made_from, dict):
            problems.append(
                f"{folder / 'report.json'}: damaged (no record of the stages it was made from); rerun `winnow report`"
            )
        else:
            stale = [s for s, h in sorted(made_from.items()) if hashes.get(s) != h]
            if stale:
                problems.append(
                    f"{folder}: made from another {' and '.join(stale)} stage than the one now in the run dir; "
                    "rerun `winnow report`"
                )
    return problems


def _notes(folder: Path) -> list[str]:
    notes = []
    temps = [p for p in folder.iterdir() if (p.name.endswith(TMP_SUFFIX) or p.name.startswith(TMP_DIR_PREFIX))]
    if temps:
        notes.append(f"{len(temps)} temp file(s) left by a killed run (removed when the stage runs again)")
    holder = _lock_holder(folder / "lock")
    if holder:
        notes.append(f"being written now by {holder}: files may change while this runs")
    return notes


def _lock_holder(path: Path) -> str | None:
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            return f"pid {holder['pid']} on host {holder['host']}"
        except (ValueError, KeyError, TypeError):
            return "another process"
    finally:
        os.close(fd)
    return None
