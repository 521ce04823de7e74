"""What the score stage hands its workers, without holding every completion in the driver.

Score shard k holds completions k*S .. k*S+S-1 of the generate shards read in order
(S = ``score.shard_size``). A task's payload is a ``ScoreSlice``: which generate shards, and
which of their rows, make it up; the worker reads those rows itself (the generate shards are
on the file system every executor writes to). The driver thus keeps only the reward
matrix, and a task costs a few numbers however long the texts are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from winnow.errors import WinnowError
from winnow.executors import shard_file
from winnow.records import Prompt
from winnow.stream import iter_lines, iter_shard_rows, load_prompts, loads, verified_shard


@dataclass
class ScoreSlice:
    """Rows ``start .. stop-1`` (counting non-blank lines) of each listed generate shard.

    pieces: (shard file name, its record in the generate manifest, start, stop), in order.
    """

    run_dir: str
    pieces: list[tuple[str, dict, int, int]]
    _keys: set | None = field(default=None, repr=False, compare=False)

    def rows(self) -> list[dict]:
        folder = Path(self.run_dir) / "generate"
        out: list[dict] = []
        for name, record, start, stop in self.pieces:
            path = folder / name
            data = verified_shard(path, record, stage="generate")
            for k, (lineno, _, line) in enumerate(iter_lines(data)):
                if k >= stop:
                    break
                if k >= start:
                    out.append(loads(line, path, lineno))
        return out

    def pairs(self, contents: Mapping[str, object]) -> list[tuple[object, dict]]:
        """(prompt content, completion row) of each row, what the score worker takes."""
        rows = self.rows()
        self._keys = {(c["prompt_id"], c["sample_index"]) for c in rows}
        return [(contents[c["prompt_id"]], c) for c in rows]

    def keys(self) -> set[tuple[str, int]]:
        """The (prompt_id, sample_index) pairs of the slice (kept from ``pairs`` when the worker
        ran in this process; read again otherwise)."""
        keys, self._keys = self._keys, None  # asked for once, when the shard is recorded
        if keys is None:
            keys = {(c["prompt_id"], c["sample_index"]) for c in self.rows()}
        return keys


def plan_slices(run_dir: str | Path, manifest: dict, shard_size: int) -> list[ScoreSlice]:
    """The slices of every score shard, from the generate manifest's row counts."""
    slices: list[ScoreSlice] = []
    current: list[tuple[str, dict, int, int]] = []
    filled = 0
    for name in manifest["shards"]:
        relpath = shard_file(Path(run_dir) / "generate", name).name
        record = manifest["files"].get(relpath) or {}
        rows, sha = record.get("rows"), record.get("sha256")
        if not isinstance(rows, int) or not isinstance(sha, str):
            raise WinnowError(
                f"{Path(run_dir) / 'generate' / 'manifest.json'}: damaged (no record of {relpath}); "
                "rerun `winnow generate` to rebuild it"
            )
        start = 0
        while start < rows:
            take = min(rows - start, shard_size - filled)
            current.append((relpath, record, start, start + take))
            filled += take
            start += take
            if filled == shard_size:
                slices.append(ScoreSlice(str(run_dir), current))
                current, filled = [], 0
    if current:
        slices.append(ScoreSlice(str(run_dir), current))
    return slices


class SliceKeys(Mapping):
    """shard name -> its keys, computed when the shard is recorded (``Stage.recorder``)."""

    def __init__(self, slices: dict[str, ScoreSlice]):
        self.slices = slices

    def __getitem__(self, name: str) -> set[tuple[str, int]]:
        return self.slices[name].keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.slices)

    def __len__(self) -> int:
        return len(self.slices)


_CONTENTS: dict[str, dict[str, object]] = {}


def prompt_contents(run_dir: str) -> dict[str, object]:
    """prompt id -> what the reward receives as the prompt; read once per process and run dir."""
    if run_dir not in _CONTENTS:
        from winnow.rundir import completed_manifest

        prompts = load_prompts(run_dir, completed_manifest(run_dir, "generate"))
        _CONTENTS.clear()  # one run dir at a time: a long-lived worker does not pile them up
        _CONTENTS[run_dir] = {p.id: p.content for p in prompts}
    return _CONTENTS[run_dir]


def stream_matrix(
    folder: Path, names: list[str], records: dict, prompts: list[Prompt], num_columns: int
) -> tuple[np.ndarray, dict]:
    """The reward matrix float64 (M, C) (NaN = no row) and the scoring-path summary
    (``winnow.stages.score.scoring_paths``), in one pass over the score shards."""
    index = {p.id: i for i, p in enumerate(prompts)}
    matrix = np.full((len(prompts), num_columns), np.nan, dtype=np.float64)
    paths: Counter = Counter()
    saved = 0
    first = True
    has_paths = False
    for row in iter_shard_rows(folder, names, records, stage="score"):
        if first:
            has_paths, first = "scored_by" in row, False
        if row["reward"] is not None:
            matrix[index[row["prompt_id"]], row["sample_index"]] = row["reward"]
        if has_paths:
            paths[row["scored_by"]] += 1
            saved += row["prompt_tokens_saved"]
    summary = {"rows_by_scoring_path": dict(sorted(paths.items())), "prompt_tokens_saved": saved} if has_paths else {}
    return matrix, summary


def count_rows(manifest: dict, names: Iterable[str], folder: Path) -> int:
    return sum(int(manifest["files"][shard_file(folder, n).name]["rows"]) for n in names)
