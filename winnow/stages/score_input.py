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

from winnow.budget import Usage
from winnow.errors import WinnowError
from winnow.executors import shard_file
from winnow.records import Prompt
from winnow.stream import iter_lines, iter_shard_rows, load_prompts, loads, verified_shard


@dataclass
class ScoreSlice:
    """Rows ``start .. stop-1`` (counting non-blank lines) of each listed generate shard.

    pieces: (shard file name, its record in the generate manifest, start, stop), in order.
    generate_hash: the config hash of the generate stage the slice was planned from (the
    prompts a worker reads for it must be that stage's, not a cached earlier one's).
    """

    run_dir: str
    pieces: list[tuple[str, dict, int, int]]
    generate_hash: str = ""
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

    def triples(self, records: Mapping[str, tuple[object, dict]]) -> list[tuple[object, dict, dict]]:
        """(prompt content, completion row, prompt columns) of each row, what the score worker takes.

        records: prompt id -> (content, columns), as ``prompt_records`` reads them."""
        rows = self.rows()
        self._keys = {(c["prompt_id"], c["sample_index"]) for c in rows}
        out = []
        for c in rows:
            content, columns = records[c["prompt_id"]]
            out.append((content, c, columns))
        return out

    def keys(self) -> set[tuple[str, int]]:
        """The (prompt_id, sample_index) pairs of the slice (kept from ``triples`` when the worker
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
                slices.append(ScoreSlice(str(run_dir), current, manifest["config_hash"]))
                current, filled = [], 0
    if current:
        slices.append(ScoreSlice(str(run_dir), current, manifest["config_hash"]))
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


_RECORDS: dict[tuple[str, str], dict[str, tuple[object, dict]]] = {}


def prompt_records(run_dir: str, generate_hash: str) -> dict[str, tuple[object, dict]]:
    """prompt id -> (what the reward receives as the prompt, the prompt row's other columns)
    of the generate stage with config hash ``generate_hash``; read once per process and stage
    (a generate stage made anew in the same run dir has another hash, so it is read anew)."""
    key = (run_dir, generate_hash)
    if key not in _RECORDS:
        from winnow.rundir import completed_manifest

        manifest = completed_manifest(run_dir, "generate")
        if manifest["config_hash"] != generate_hash:
            raise WinnowError(
                f"{run_dir}/generate was replaced while score ran (config {manifest['config_hash']}, "
                f"planned from {generate_hash}): rerun `winnow score`"
            )
        remember_prompts(run_dir, generate_hash, load_prompts(run_dir, manifest))
    return _RECORDS[key]


def remember_prompts(run_dir: str, generate_hash: str, prompts: list[Prompt]) -> None:
    """Hold the prompts of one generate stage for the score workers of this process (the
    driver, which has read them already, saves a local worker reading them again)."""
    _RECORDS.clear()  # one stage at a time: a long-lived worker does not pile them up
    # images ride with the columns (``images`` is a reserved column name): the worker decodes them per call
    _RECORDS[(run_dir, generate_hash)] = {
        p.id: (p.content, p.columns | {"images": p.images} if p.images else p.columns) for p in prompts
    }


@dataclass
class Streamed:
    """What one pass over the score shards keeps: numbers only."""

    total: np.ndarray
    """float64 (M, C): the reward (weighted sum) of each cell, NaN = no row or unscored."""
    components: list[np.ndarray]
    """float64 (M, C) per reward of a weighted sum (empty for one reward)."""
    paths: dict
    """A reward model's rows per scoring path and prompt tokens saved; empty for functions."""
    counts: Counter
    """``no_answer`` and ``unfinished_reasoning`` over the rows."""
    judge_usage: Usage | None = None
    """What the judge's requests used, summed over the rows (None: no judge)."""


def stream_matrices(
    folder: Path, names: list[str], records: dict, prompts: list[Prompt], num_columns: int, *, components: int = 0
) -> Streamed:
    """The reward matrices, the scoring-path summary and the answer counts, in one pass over
    the score shards (one in memory at a time). components: K rewards kept per row under
    ``rewards`` (0: one reward)."""
    index = {p.id: i for i, p in enumerate(prompts)}
    shape = (len(prompts), num_columns)
    matrix = np.full(shape, np.nan, dtype=np.float64)
    parts = [np.full(shape, np.nan, dtype=np.float64) for _ in range(components)]
    paths: Counter = Counter()
    counts: Counter = Counter()
    saved = 0
    judged = Usage()
    for row in iter_shard_rows(folder, names, records, stage="score"):
        i, j = index[row["prompt_id"]], row["sample_index"]
        if row["reward"] is not None:
            matrix[i, j] = row["reward"]
        for k, part in enumerate(parts):
            value = row["rewards"][k]
            if value is not None:
                part[i, j] = value
        if "scored_by" in row:  # rows of unfinished reasoning were not shown to a reward model
            paths[row["scored_by"]] += 1
            saved += row["prompt_tokens_saved"]
        counts["no_answer"] += bool(row.get("no_answer")) + row.get("no_answer_in_call", 0)
        counts["unfinished_reasoning"] += bool(row.get("unfinished_reasoning"))
        if "judge_usage" in row:
            judged.add(row["judge_usage"])
    summary = {"rows_by_scoring_path": dict(sorted(paths.items())), "prompt_tokens_saved": saved} if paths else {}
    return Streamed(matrix, parts, summary, counts, judged if judged.requests else None)


def count_rows(manifest: dict, names: Iterable[str], folder: Path) -> int:
    return sum(int(manifest["files"][shard_file(folder, n).name]["rows"]) for n in names)
