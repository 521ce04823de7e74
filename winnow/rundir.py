"""The run directory: one folder per stage, one writer per stage, every file verified.

Layout (``run/`` is the ``--run-dir``)::

    run/generate/config.json          what the outputs are made under (written before the first),
                                      with the run-dir ``format`` first
    run/generate/lock                 held (flock) by the one process writing the stage
    run/generate/shard-m0-00000.jsonl finished shards (temp file + rename)
    run/generate/errors-m0-00000.jsonl rows of that shard that failed and were skipped (on_error: skip)
    run/generate/verified.jsonl       the driver's record of each shard it checked: rows, sha256
    run/generate/errors.jsonl         every shard's errors, in shard order (only when there are any)
    run/generate/prompts.jsonl        the prompts, ids assigned
    run/generate/manifest.json        written last: its presence means "complete"; it records
                                      every output file (bytes, sha256, rows or shape)
    run/score/...  run/select/...  run/sft/...

A stage is written by one driver at a time (``with stage:`` holds the lock), which compares
the stored ``config.json`` with its own and refuses a different one, naming the fields that
changed: outputs made under one config must not be mixed with outputs made under another.
The stored config includes the hash of the upstream stage and the provenance of code and
models (``winnow.provenance``), so a changed upstream, reward function or model is caught too.

Shards are trusted only when recorded: the driver checks each shard the executor wrote
(keys, row count) and appends its sha256 to ``verified.jsonl``. On every rerun the driver
re-checks the shards against those records; a missing or damaged one goes back to the
pending list and is made again (shard seeds are per index, so the result is the same).
Readers check every file against the manifest and name the one that is wrong.

Every config.json and manifest.json records the run-dir ``format`` it was written in
(``FORMAT``). A stage folder of any other format, or of none (made before formats were
recorded), is refused whole, in one line saying what to do: it is never read as this one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from winnow.errors import WinnowError
from winnow.executors import ShardReport, ShardTask, errors_file, shard_file
from winnow.images import stored_prompt
from winnow.loader import split
from winnow.lock import StageLock
from winnow.records import (
    TMP_SUFFIX,
    Prompt,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    check_file,
    config_hash,
    file_record,
    parse_jsonl,
    read_json,
    sha256_file,
)

FORMAT = 3
"""The run-directory format this winnow writes and reads (``format`` in every stage's
config.json and manifest.json; docs/reference/files.md). Raise it whenever what a stage
stores, or how a reader reads it, changes: folders of another format are then refused
rather than misread, and no reader needs to guess which winnow wrote a file.

1: the first recorded format. Every config field is stored, defaults included; a score
stage's reward provenance is a list, one hash per reward.
2: select stores its decontamination and near-dedup fields, sft and dpo their training
options (schedule, warm-up, eval split, TRL mapping); a shard's failed rows are kept in
``errors-<shard>.jsonl``, recorded in the ledger beside the shard.
3: score stores its process reward model fields (``prm_model`` and its options), and its
rows may hold ``step_scores``."""
LEDGER = "verified.jsonl"
ERRORS = "errors.jsonl"
"""A stage's rows that failed and were skipped (``on_error: skip``), one JSON object each."""
TMP_DIR_PREFIX = ".tmp-"
"""Temp folders (a checkpoint being saved) start so; a resumed stage removes those a kill left."""


class Stage:
    """One stage folder in a run directory, written by the driver that holds its lock."""

    def __init__(self, run_dir: str | Path, name: str, config: dict):
        self.dir = Path(run_dir) / name
        self.name = name
        self.config = stored_config(config)
        self.hash = config_hash(self.config)
        self.lock = StageLock(self.dir / "lock")
        self._records: dict[str, dict] | None = None

    def __enter__(self) -> Stage:
        """Take the lock, check the stored config, remove temp files a killed run left.

        The folder is claimed (config.json written) only with its first output, so a run
        that failed before producing anything (a typo in a model path, say) can be rerun
        with the mistake fixed.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self._check_stored_config()
            self._remove_temp_files()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()

    def _check_stored_config(self) -> None:
        stored_path = self.dir / "config.json"
        if stored_path.exists():
            stored = read_json(stored_path)
            check_format(self.dir, stored)
            if stored != self.config:
                changes = "; ".join(_diff(stored, self.config)) or "(unknown)"
                raise WinnowError(
                    f"refusing to resume {self.dir} under a changed config: {changes}{reward_change_note(stored, self.config)}. "
                    f"Use a new --run-dir, or {_to_delete(self.dir.parent, self.name)}"
                )

    def _remove_temp_files(self) -> None:
        """Temp files of a killed writer: safe to remove, since we hold the lock."""
        for path in self.dir.iterdir():
            if path.name.startswith(".") and path.name.endswith(TMP_SUFFIX) and path.is_file():
                path.unlink(missing_ok=True)
            elif path.name.startswith(TMP_DIR_PREFIX) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    def claim(self) -> None:
        """Record the config the outputs are made under; called before the first output.

        Checked again here, under the lock, so no writer adds to a stage of another config.
        """
        path = self.dir / "config.json"
        if path.exists():
            self._check_stored_config()
        else:
            atomic_write_json(path, self.config)

    # ---- what is there, and can it be trusted ------------------------------------------

    def stored_manifest(self) -> dict | None:
        """The manifest, if present, readable and made under this config; else None."""
        path = self.dir / "manifest.json"
        try:
            manifest = read_json(path) if path.exists() else None
        except WinnowError:
            return None  # damaged: the stage is rebuilt from its verified files
        if not isinstance(manifest, dict) or manifest.get("config_hash") != self.hash:
            return None
        return manifest

    def manifest(self) -> dict:
        manifest = self.stored_manifest()
        if manifest is None:
            raise WinnowError(f"{self.dir} is not complete: run the {self.name} stage first")
        return manifest

    def is_complete(self) -> bool:
        return self.stored_manifest() is not None

    def has_shard(self, name: str) -> bool:
        """Whether shard ``name`` is present and matches its record."""
        return self.matches(shard_file(self.dir, name).name)

    def records(self) -> dict[str, dict]:
        """Relative path -> record ({"bytes", "sha256", "rows" or "shape"}) of every verified file."""
        if self._records is None:
            # A sound manifest is the record of a finished stage; the ledger is the record
            # of one still being made, or of one whose manifest was damaged.
            manifest = self.stored_manifest()
            if manifest is not None and isinstance(manifest.get("files"), dict):
                self._records = dict(manifest["files"])
            else:
                self._records = _read_ledger(self.dir / LEDGER, self.hash)
        return self._records

    def matches(self, relpath: str) -> bool:
        """Whether a file is present and identical to its record."""
        record = self.records().get(relpath)
        path = self.dir / relpath
        return record is not None and path.is_file() and sha256_file(path) == record.get("sha256")

    def pending(self, names: Iterable[str]) -> list[str]:
        """The shards among ``names`` still to make: missing, unrecorded or damaged.

        A damaged or unrecorded shard file is removed, so the stage makes it again.
        """
        out = []
        for name in names:
            relpath, errors = shard_file(self.dir, name).name, errors_file(self.dir, name).name
            # a shard's errors file, where it has one, must be whole too: the two are made together
            has_errors = errors in self.records() or (self.dir / errors).exists()
            if self.matches(relpath) and (not has_errors or self.matches(errors)):
                continue
            (self.dir / relpath).unlink(missing_ok=True)
            (self.dir / errors).unlink(missing_ok=True)
            out.append(name)
        return out

    def record_shard(self, name: str, keys: set[tuple[str, int]], *, exact: bool) -> None:
        """Check a shard an executor wrote and append its record to the ledger.

        keys: the (prompt_id, sample_index) pairs the shard may hold (``exact``: must hold
        each once). A shard that breaks this is removed and reported: a worker bug.
        """
        path = shard_file(self.dir, name)
        rows = list(parse_jsonl(path.read_bytes().splitlines(keepends=True), path))
        seen = set()
        for lineno, row in rows:
            key = (row.get("prompt_id"), row.get("sample_index"))
            if key not in keys or key in seen:
                path.unlink(missing_ok=True)
                problem = "repeated" if key in seen else "not one of this shard's"
                raise WinnowError(f"{path}:{lineno}: key {key} is {problem} (prompt_id, sample_index); shard removed")
            seen.add(key)
        if exact and len(seen) != len(keys):
            path.unlink(missing_ok=True)
            raise WinnowError(f"{path}: {len(seen)} rows, expected {len(keys)}; shard removed")
        failed = self._check_errors(name, {prompt_id for prompt_id, _ in keys})
        # the errors file is recorded before its shard: a recorded shard has its errors recorded
        if failed is not None:
            self._record(errors_file(self.dir, name), failed)
        self._record(path, len(rows))

    def _check_errors(self, name: str, prompt_ids: set) -> int | None:
        """Rows in shard ``name``'s errors file (None: it has none), each of this shard's prompts."""
        path = errors_file(self.dir, name)
        if not path.exists():
            return None
        rows = list(parse_jsonl(path.read_bytes().splitlines(keepends=True), path))
        for lineno, row in rows:
            if row.get("prompt_id") not in prompt_ids:
                path.unlink(missing_ok=True)
                shard_file(self.dir, name).unlink(missing_ok=True)
                raise WinnowError(
                    f"{path}:{lineno}: prompt_id {row.get('prompt_id')!r} is not one of this shard's; shard removed"
                )
        return len(rows)

    def _record(self, path: Path, rows: int) -> None:
        """Append a checked file's record to the ledger."""
        record = file_record(path, rows=rows)
        line = json.dumps({"file": path.name, **record, "config_hash": self.hash}, sort_keys=True) + "\n"
        self.lock.check_held()  # a writer that lost its lock must not record what another may redo
        with open(self.dir / LEDGER, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        self.records()[path.name] = record

    def recorder(self, keys: dict[str, set[tuple[str, int]]], *, exact: bool) -> Callable[[str], None]:
        """The ``on_written`` callback for ``run_shards``: check and record each shard as it lands.

        keys: shard name -> the (prompt_id, sample_index) pairs it may hold (see ``record_shard``).
        """

        def on_written(name: str) -> None:
            self.record_shard(name, keys[name], exact=exact)

        return on_written

    def check_made(self, tasks: list[ShardTask], report: ShardReport, keys: dict, *, exact: bool) -> None:
        """After the executor returns: every task's shard is recorded, or a clear error.

        Shards an executor reported only at the end (without ``on_written``) are recorded here.
        """
        if report.failed:
            failures = "; ".join(f"shard {name}: {error}" for name, error in sorted(report.failed.items()))
            raise WinnowError(f"{self.dir}: {len(report.failed)} shard(s) failed: {failures}")
        for name in report.done:
            if shard_file(self.dir, name).name not in self.records():
                self.record_shard(name, keys[name], exact=exact)
        missing = [t.name for t in tasks if shard_file(self.dir, t.name).name not in self.records()]
        if missing:
            raise WinnowError(f"{self.dir}: the executor made no file for shard(s) {', '.join(missing)}")

    def errors(self, shards: list[str]) -> list[dict]:
        """The rows that failed and were skipped in recorded shards ``shards``, in shard order."""
        names = [n for n in shards if errors_file(self.dir, n).name in self.records()]
        return read_shards(self.dir, names, self.records(), stage=self.name, file=errors_file)

    def write_errors(self, rows: list[dict]) -> list[str]:
        """``errors.jsonl``: every shard's errors in one file, for a reader; the outputs to
        record (none when nothing failed, and a stale one removed)."""
        if not rows:
            (self.dir / ERRORS).unlink(missing_ok=True)
            return []
        atomic_write_jsonl(self.dir / ERRORS, rows)
        return [ERRORS]

    def read_shards(self, names: list[str]) -> list[dict]:
        """The rows of recorded shards ``names``, in the order given, each checked."""
        return read_shards(self.dir, names, self.records(), stage=self.name)

    def record_file(self, relpath: str) -> dict:
        """Record an output the driver wrote itself (prompts.jsonl, rewards.npy, a checkpoint file)."""
        record = file_record(self.dir / relpath)
        self.records()[relpath] = record
        return record

    def finish(self, shards: list[str] | None = None, outputs: Iterable[str] = (), **summary) -> dict:
        """Write the manifest, last: config, its hash, every output's record and a summary."""
        self.lock.check_held()
        self.claim()
        names = []
        for s in shards or []:  # each shard, after its errors file where it has one
            failed = errors_file(self.dir, s).name
            names += ([failed] if failed in self.records() else []) + [shard_file(self.dir, s).name]
        files = {relpath: self.records()[relpath] for relpath in names}
        files.update({relpath: self.record_file(relpath) for relpath in outputs})
        # The ledger is rewritten in shard order, so identical runs leave identical files
        # however often they were interrupted.
        if shards is not None:
            lines = [
                json.dumps({"file": n, **files[n], "config_hash": self.hash}, sort_keys=True) + "\n" for n in names
            ]
            atomic_write_text(self.dir / LEDGER, "".join(lines))
        manifest = {
            "format": FORMAT,
            "stage": self.name,
            "config": self.config,
            "config_hash": self.hash,
            "files": files,
            **summary,
        }
        if shards is not None:
            manifest["shards"] = list(shards)
        atomic_write_json(self.dir / "manifest.json", manifest)
        return manifest


def refuse_errors(stage: Stage, rows: list[dict], *, accepted: tuple[str, ...]) -> None:
    """Refuse to finish ``stage`` with failed rows its ``on_error: fail`` does not accept.

    Shards made by an earlier ``--on-error skip`` run may hold failed rows (``on_error`` says
    how hard to try, so a rerun may change it); finished under ``fail``, the stage would
    hold rows that setting promises never to skip. ``accepted``: the ``kind`` of row the
    stage may still hold (``long_prompt`` and ``request`` in generate, ``reward`` in score).
    """
    refused = [row for row in rows if row.get("kind") not in accepted]
    if refused:
        first = refused[0]
        raise WinnowError(
            f"{stage.dir}: {len(refused)} row(s) failed in shards made under --on-error skip (first: "
            f"{first.get('error')}); rerun with --on-error skip to finish the stage with them recorded in "
            f"{stage.dir / ERRORS}, or {_to_delete(stage.dir.parent, stage.name)}"
        )


def stored_config(config: dict) -> dict:
    """The config as a stage stores it (its config.json, hashed): the run-dir format first,
    then ``config`` in JSON types (tuples become lists).

    >>> stored_config({"select": {"k": (1, 2)}})
    {'format': 3, 'select': {'k': [1, 2]}}
    """
    return {"format": FORMAT, **json.loads(json.dumps(config))}


def check_format(folder: Path, stored) -> None:
    """Refuse a stage folder whose config.json or manifest.json (``stored``, as read) was
    written in another run-dir format than ``FORMAT``: one line saying what to do.
    A file that is no JSON object is damaged, not of another format: the caller says so."""
    if not isinstance(stored, dict):
        return
    found = stored.get("format")
    if type(found) is int and found == FORMAT:  # type: True == 1, yet is no format
        return
    raise WinnowError(format_refusal(Path(folder), found))


def format_refusal(folder: Path, found) -> str:
    """The one line that refuses stage ``folder`` of run-dir format ``found`` (None: unrecorded).

    >>> format_refusal(Path("r/score"), None)  # doctest: +NORMALIZE_WHITESPACE
    'r/score was written by run-dir format 0 (before run dirs recorded their format); this
    winnow reads format 3: use a new --run-dir, or delete r/score to redo this stage.'
    """
    if found is None:
        written = "format 0 (before run dirs recorded their format)"
    elif type(found) is int:
        written = f"format {found}" + (" (a newer winnow)" if found > FORMAT else "")
    else:
        written = f"an unknown format ({found!r})"
    return (
        f"{folder} was written by run-dir {written}; this winnow reads format {FORMAT}: "
        f"use a new --run-dir, or {_to_delete(folder.parent, folder.name)}"
    )


def verified_bytes(path: Path, record: dict | None, *, stage: str) -> bytes:
    """The bytes of ``path``, checked against its record; a clear error naming the file if not."""
    hint = f"rerun `winnow {stage}` on this run dir to remake it"
    if record is None:
        raise WinnowError(f"{path}: not recorded in {path.parent}/manifest.json; {hint}")
    problem = check_file(path, record)
    if problem:
        raise WinnowError(f"{path}: {problem}; {hint}")
    return path.read_bytes()


def read_shards(
    folder: Path, names: list[str], records: dict, *, stage: str, file: Callable[[Path, str], Path] = shard_file
) -> list[dict]:
    """The rows of shards ``names`` in ``folder``, in the order given, checked against ``records``
    (``file``: ``errors_file`` reads their errors instead)."""
    rows: list[dict] = []
    for name in names:
        path = file(folder, name)
        data = verified_bytes(path, records.get(path.name), stage=stage)
        rows.extend(row for _, row in parse_jsonl(data.splitlines(keepends=True), path))
    return rows


def _read_ledger(path: Path, config_hash: str) -> dict[str, dict]:
    """Records from the ledger made under ``config_hash``; any other line is skipped.

    A line a kill cut short, an unreadable one, and one made under another config (the
    stage's config.json was deleted, then the stage rerun with other settings) are all
    skipped, so the shards they describe are made again rather than mixed in.
    """
    if not path.exists():
        return {}
    records = {}
    for line in path.read_bytes().splitlines():
        try:
            entry = json.loads(line)
            if entry.pop("config_hash") != config_hash or not isinstance(entry.get("sha256"), str):
                continue
            records[entry.pop("file")] = entry
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            continue
    return records


def completed_manifest(run_dir: str | Path, name: str) -> dict:
    """The manifest of a finished upstream stage, or a clear error naming what is wrong."""
    path = Path(run_dir) / name / "manifest.json"
    if not path.exists():
        raise WinnowError(f"{path} not found: run `winnow {name}` on this run dir first")
    manifest = read_json(path)
    check_format(path.parent, manifest)
    fix = f"rerun `winnow {name}` on this run dir to rebuild it"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise WinnowError(f"{path}: damaged (no file records); {fix}")
    if config_hash(manifest.get("config")) != manifest.get("config_hash"):
        raise WinnowError(f"{path}: damaged (config does not match its hash); {fix}")
    _check_upstream(Path(run_dir), name, manifest)
    return manifest


UPSTREAM = {
    "score": ("generate", "generate_hash"),
    "select": ("score", "score_hash"),
    "sft": ("select", "select_hash"),
    "dpo": ("select", "select_hash"),
}
"""stage -> (the stage it reads, the config field holding that stage's config hash)."""


def _check_upstream(run_dir: Path, name: str, manifest: dict) -> None:
    """Refuse a stage made from another upstream stage than the one now in the run dir.

    Deleting ``generate`` and rerunning it with another seed leaves ``score`` holding the
    old rewards; a reader pairing them with the new texts would be silently wrong. Every
    reader goes through ``completed_manifest``, so each checks the whole chain up to generate.
    A stage pooled over rounds records several hashes (``score_hashes``), checked by ``winnow.pool``.
    """
    if name not in UPSTREAM or not isinstance(manifest.get("config"), dict):
        return
    upstream, field = UPSTREAM[name]
    used = manifest["config"].get(field)
    if used is None:
        return
    current = completed_manifest(run_dir, upstream)["config_hash"]
    if used != current:
        raise WinnowError(
            f"{run_dir / name} was made from another {upstream} stage ({used}) than the one now in "
            f"{run_dir / upstream} ({current}): delete {run_dir / name} and rerun `winnow {name}` "
            "(and the stages after it) on this run dir"
        )


def load_generations(run_dir: str | Path) -> tuple[list[Prompt], list[dict], dict]:
    """Prompts (row order), completion rows and the generate manifest of a finished stage."""
    manifest = completed_manifest(run_dir, "generate")
    folder = Path(run_dir) / "generate"
    path = folder / "prompts.jsonl"
    data = verified_bytes(path, manifest["files"].get("prompts.jsonl"), stage="generate")
    prompts = [stored_prompt(run_dir, row) for _, row in parse_jsonl(data.splitlines(keepends=True), path)]
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not isinstance(manifest.get("num_columns"), int):
        raise WinnowError(f"{folder / 'manifest.json'}: damaged (no shard list); rerun `winnow generate` to rebuild it")
    completions = read_shards(folder, shards, manifest["files"], stage="generate")
    return prompts, completions, manifest


def load_scored(run_dir: str | Path) -> tuple[list[Prompt], dict, np.ndarray, dict]:
    """What selection reads: prompts (matrix rows), completions keyed by (prompt_id,
    sample_index), the reward matrix float (M, C) and the score manifest."""
    prompts, completions, generated = load_generations(run_dir)
    manifest = completed_manifest(run_dir, "score")
    path = Path(run_dir) / "score" / "rewards.npy"
    verified_bytes(path, manifest["files"].get("rewards.npy"), stage="score")
    rewards = np.load(path)
    expected = (len(prompts), generated["num_columns"])
    if rewards.shape != expected:  # recorded, yet not this generate stage's shape: score ran on another one
        raise WinnowError(f"{path}: shape {rewards.shape}, expected {expected}; rerun `winnow score` to remake it")
    return prompts, {(c["prompt_id"], c["sample_index"]): c for c in completions}, rewards, manifest


def load_selected(run_dir: str | Path) -> list[dict]:
    """The rows of a finished select stage, in TRL's prompt-completion format."""
    manifest = completed_manifest(run_dir, "select")
    path = Path(run_dir) / "select" / "selected.jsonl"
    data = verified_bytes(path, manifest["files"].get("selected.jsonl"), stage="select")
    return [row for _, row in parse_jsonl(data.splitlines(keepends=True), path)]


def _to_delete(run_dir: Path, name: str) -> str:
    """What to delete to redo stage ``name``: its folder and every stage folder made from it
    (each records its upstream's hash, so each would be refused next, one rerun at a time).

    >>> _to_delete(Path("r"), "sft")
    'delete r/sft to redo this stage.'
    """
    after: list[str] = []
    for stage, (upstream, _) in UPSTREAM.items():  # in pipeline order
        if upstream == name or upstream in after:
            after.append(stage)
    made = [str(run_dir / stage) for stage in after if (run_dir / stage).exists()]
    if not made:
        return f"delete {run_dir / name} to redo this stage."
    return f"delete {run_dir / name} and the stages made from it ({', '.join(made)}) to redo them."


def reward_change_note(stored: dict, new: dict) -> str:
    """A word on a changed provenance hash, which alone says nothing of its cause."""
    old_reward = (stored.get("provenance") or {}).get("reward")
    if old_reward is None or old_reward == (new.get("provenance") or {}).get("reward"):
        return ""
    spec = (new.get("score") or {}).get("reward_fn")
    specs = [spec] if isinstance(spec, str) else list(spec or [])
    files = [split(s)[0] for s in specs if ":" in s]
    if not files:
        return " (a reward's code or model changed since this stage began: winnow's own, or a reward model's files)"
    return (
        f" (the reward's file changed since this stage began ({', '.join(files)}): a reward is identified by its "
        "whole file, so any edit, a comment included, counts; put the file back as it was to resume)"
    )


def _diff(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
    return []
