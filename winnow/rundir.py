"""The run directory: one folder per stage, shards written atomically, a manifest last.

Layout (``run/`` is the ``--run-dir``)::

    run/prompts.jsonl                 the prompts, ids assigned
    run/generate/config.json          what the shards were made under
    run/generate/shard-00000.jsonl    finished shards (temp file + rename)
    run/generate/manifest.json        written last: its presence means "complete"
    run/score/...  run/select/...  run/sft/...

A stage first compares the stored ``config.json`` with its own; if they differ it refuses,
naming the fields that changed, because shards made under one config must not be mixed
with shards made under another. The stored config includes the hashes of the manifests
the stage reads, so a changed upstream is caught too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from winnow.config import config_hash
from winnow.errors import WinnowError
from winnow.executors import shard_file
from winnow.records import Prompt, atomic_write_json, read_jsonl


class Stage:
    """One stage folder in a run directory."""

    def __init__(self, run_dir: str | Path, name: str, config: dict):
        self.dir = Path(run_dir) / name
        self.name = name
        self.config = json.loads(json.dumps(config))  # normalise tuples etc. to JSON types
        self.hash = config_hash(self.config)

    def begin(self) -> None:
        """Create the folder, refusing it if outputs made under another config are there.

        The folder is claimed (config.json written) only with its first output, so a run
        that failed before producing anything (a typo in a model path, say) can be rerun
        with the mistake fixed.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        stored_path = self.dir / "config.json"
        if stored_path.exists():
            stored = json.loads(stored_path.read_text())
            if stored != self.config:
                changes = "; ".join(_diff(stored, self.config)) or "(unknown)"
                raise WinnowError(
                    f"refusing to resume {self.dir} under a changed config: {changes}. "
                    f"Use a new --run-dir, or delete {self.dir} to redo this stage."
                )

    def claim(self) -> None:
        """Record the config the outputs are made under; called before the first output."""
        path = self.dir / "config.json"
        if not path.exists():
            atomic_write_json(path, self.config)

    def is_complete(self) -> bool:
        path = self.dir / "manifest.json"
        return path.exists() and json.loads(path.read_text()).get("config_hash") == self.hash

    def manifest(self) -> dict:
        path = self.dir / "manifest.json"
        if not path.exists():
            raise WinnowError(f"{self.dir} is not complete: run the {self.name} stage first")
        return json.loads(path.read_text())

    def has_shard(self, name: str) -> bool:
        return shard_file(self.dir, name).exists()

    def read_shards(self, names: list[str]) -> list[dict]:
        return read_shards(self.dir, names)

    def finish(self, **summary) -> dict:
        """Write the manifest, last: config, its hash and a summary of the outputs."""
        self.claim()
        manifest = {"stage": self.name, "config": self.config, "config_hash": self.hash, **summary}
        atomic_write_json(self.dir / "manifest.json", manifest)
        return manifest


def read_shards(folder: Path, names: list[str]) -> list[dict]:
    """The rows of shards ``names`` in ``folder``, in the order given."""
    rows = []
    for name in names:
        rows.extend(row for _, row in read_jsonl(shard_file(folder, name)))
    return rows


def completed_manifest(run_dir: str | Path, name: str) -> dict:
    """The manifest of a finished upstream stage, or a clear error."""
    path = Path(run_dir) / name / "manifest.json"
    if not path.exists():
        raise WinnowError(f"{path} not found: run `winnow {name}` on this run dir first")
    return json.loads(path.read_text())


def load_generations(run_dir: str | Path) -> tuple[list[Prompt], list[dict], dict]:
    """Prompts (row order), completion rows and the generate manifest of a finished stage."""
    manifest = completed_manifest(run_dir, "generate")
    folder = Path(run_dir) / "generate"
    prompts = [_prompt_from_row(row) for _, row in read_jsonl(folder / "prompts.jsonl")]
    completions = read_shards(folder, manifest["shards"])
    return prompts, completions, manifest


def load_scored(run_dir: str | Path) -> tuple[list[Prompt], dict, np.ndarray, dict]:
    """What selection reads: prompts (matrix rows), completions keyed by (prompt_id,
    sample_index), the reward matrix float (M, C) and the score manifest."""
    prompts, completions, _ = load_generations(run_dir)
    manifest = completed_manifest(run_dir, "score")
    rewards = np.load(Path(run_dir) / "score" / "rewards.npy")
    return prompts, {(c["prompt_id"], c["sample_index"]): c for c in completions}, rewards, manifest


def load_selected(run_dir: str | Path) -> list[dict]:
    """The rows of a finished select stage, in TRL's prompt-completion format."""
    completed_manifest(run_dir, "select")
    return [row for _, row in read_jsonl(Path(run_dir) / "select" / "selected.jsonl")]


def _prompt_from_row(row: dict) -> Prompt:
    if "messages" in row:
        return Prompt(id=row["id"], messages=tuple(row["messages"]))
    return Prompt(id=row["id"], text=row["prompt"])


def _diff(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
    return []
