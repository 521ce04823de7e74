"""Plain helpers shared by the test files: argument lists, refusals, file digests, waiting,
processes held mid-run, run dirs made by hand, and scripts imported by path.

Fixtures live in ``conftest.py``; these are ordinary functions, imported as ``from helpers import ...``
from any test folder. Where test files need different checks, the difference is a keyword here, never
a second copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from winnow.cli import main
from winnow.errors import WinnowError

# The chapter's 5 x 4 reward matrix: rows are prompts p0..p4, columns sample indices 0..3.
CHAPTER = [[0.7, 0.3, 0.5, 0.2], [0.4, 0.8, 0.6, 0.5], [0.9, 0.3, 0.4, 0.7], [0.2, 0.5, 0.8, 0.6], [0.5, 0.4, 0.3, 0.6]]


def flags(**options: Any) -> list[str]:
    """Command-line flags from keywords, in the order given: ``n=4`` -> ``--n 4``, ``run_dir=p``
    -> ``--run-dir p``; ``None`` leaves a flag out.

    >>> flags(n=4, max_new_tokens=8, seed=None, device="cpu")
    ['--n', '4', '--max-new-tokens', '8', '--device', 'cpu']
    """
    return [
        arg for key, value in options.items() if value is not None for arg in (f"--{key.replace('_', '-')}", str(value))
    ]


def gen_args(
    d: Path,
    model: Path,
    *extra: str,
    run: Path | None = None,
    prompts: Path | None = None,
    max_new_tokens: int = 4,
    shard_size: int | None = None,
) -> list[str]:
    """``winnow generate`` of ``d/prompts.jsonl`` into ``d/run`` on the CPU, n=4, then ``extra``.

    ``run`` and ``prompts`` name other paths; ``shard_size`` adds ``--shard-size`` (none: the default).
    """
    return [
        "generate",
        *flags(prompts=prompts or d / "prompts.jsonl", run_dir=run or d / "run", model=model, n=4),
        *flags(max_new_tokens=max_new_tokens, shard_size=shard_size, device="cpu"),
        *extra,
    ]


def fails(argv: list[str], capsys, *patterns: str, one_error: bool = False, error_last: bool = False) -> str:
    """Run ``winnow ARGV``, assert exit 2 and each of ``patterns`` in stderr; return stderr.

    ``one_error``: also no traceback and exactly one ``winnow: error:`` in stderr.
    ``error_last``: also no traceback and the one ``winnow: error:`` line is stderr's last line.
    """
    assert main(argv) == 2
    err = capsys.readouterr().err
    for p in patterns:
        assert p in err, err
    if one_error:
        assert "Traceback" not in err and err.count("winnow: error:") == 1, err
    if error_last:
        assert "Traceback" not in err
        assert [line for line in err.splitlines() if line.startswith("winnow: error:")] == [
            err.strip().splitlines()[-1]
        ]
    return err


def tree_digest(root: Path, *, hidden: bool = True, executor: bool = True) -> dict[str, str]:
    """sha256 of every file below ``root`` by relative path.

    ``hidden=False`` leaves out dot files (a temp file a killed worker left behind);
    ``executor=False`` hashes each manifest.json without its executor record (which differs by executor).
    """
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or (not hidden and p.name.startswith(".")):
            continue
        data = p.read_bytes()
        if not executor and p.name == "manifest.json":
            manifest = json.loads(data)
            manifest.pop("executor", None)
            data = json.dumps(manifest, sort_keys=True).encode()
        out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 120.0,
    what: str = "condition",
    *,
    proc: subprocess.Popen | None = None,
    poll_s: float = 0.02,
    fail: bool = True,
) -> Any:
    """Poll ``condition`` every ``poll_s`` seconds until it is truthy; return its value.

    Past ``timeout`` seconds: fail naming ``what``, or with ``fail=False`` return the last (falsy) value.
    With ``proc``: fail as soon as that process has exited, naming what it wrote to its stderr pipe
    (or its stdout pipe, where stderr goes there).
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if proc is not None and proc.poll() is not None:
            pipe = proc.stderr or proc.stdout
            raise AssertionError(f"finished (exit {proc.returncode}) before {what}: {pipe.read() if pipe else ''}")
        if time.monotonic() >= deadline:
            assert not fail, f"timed out waiting for {what}"
            return condition()
        time.sleep(poll_s)
    return value


def import_file(path: Path) -> ModuleType:
    """The module in ``path``, a script outside any package (``scripts/docs_hooks.py``,
    ``benchmarks/bench_*.py``), imported afresh under its file's stem and registered in
    ``sys.modules`` as an import would (a dataclass looks its module up there)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The one line of the ``WinnowError`` that ``call(*args, **kwargs)`` raises (it must raise one).

    >>> def load(path):
    ...     raise WinnowError(f"{path}: field 'n': expected an integer")
    >>> refusal(load, "cfg.yaml")
    "cfg.yaml: field 'n': expected an integer"
    """
    try:
        call(*args, **kwargs)
    except WinnowError as e:
        return str(e)
    raise AssertionError(f"{getattr(call, '__name__', call)} refused nothing")


def write_jsonl(path: Path, rows: list) -> Path:
    """One line a row: a dict as JSON, a string as given (to write broken lines on purpose)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- runs of the command line

# The scripted reward of adaptive sampling (test_adaptive.py, test_plan.py): sample j of
# prompt q passes (1.0) exactly when j is listed, else 0.0.
ADAPTIVE_SCRIPT = """
PASSES = {"q0": {0}, "q1": {2, 3}, "q2": {5}, "q3": set()}


def reward(prompts, completions, prompt_ids, sample_indices, **kw):
    return [float(j in PASSES[q]) for q, j in zip(prompt_ids, sample_indices, strict=True)]


def same_answer(text):
    return "42"
"""


def rounds_cmd(prompts: Path, model: Path, *extra: str) -> list[str]:
    """``winnow run``: two rounds with tiny models; one prompt a shard, so a kill lands between shards."""
    # a relative run dir: the checkpoint a round samples from is recorded as run/round-1/...
    return [
        "run",
        *flags(prompts=prompts, run_dir="run", model=model, rounds=2, n=4, max_new_tokens=16, shard_size=1),
        *flags(batch_size=1, device="cpu", reward_fn="length", epochs=1, sft_batch_size=8),
        *extra,
    ]


# ---------------------------------------------------------------- a process held mid-run


def held_run(after: int) -> str:
    """A script running ``winnow ARGV`` (``python -c SCRIPT ARGV``) as the CLI does, except that the
    backend's generate call number ``after + 1`` (one a shard) waits there for good, until a
    signal comes. A test waits for the ``after``-th shard file to appear and then signals, so
    the signal lands mid-generation however fast the machine is."""
    return f"""
import signal
import sys
import time

# Ctrl-C as a shell delivers it: a parent (pytest-xdist's worker) may have left SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

from winnow.generate import hf

real_generate = hf.HFBackend.generate
calls = 0


def held_generate(self, *args, **kwargs):
    global calls
    calls += 1
    while calls > {after}:
        time.sleep(60)
    return real_generate(self, *args, **kwargs)


hf.HFBackend.generate = held_generate
from winnow.cli import main

sys.exit(main(sys.argv[1:]))
"""


def start_held(argv: list[str], *, after: int, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    """``winnow ARGV`` in a new process held for good in generate call ``after + 1`` (``held_run``).

    ``stderr``: a pipe by default; an open file where the process may write more than a pipe holds.
    """
    return subprocess.Popen(
        [sys.executable, "-c", held_run(after), *argv],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


# ---------------------------------------------------------------- run dirs made by hand


def fake_generate(run: Path, prompts: list, texts: dict[str, list[str]]) -> None:
    """A finished generate stage of ``run`` holding the given completion texts (prompt id -> texts
    by sample index), written through ``rundir.Stage`` as the generate stage writes one.

    ``prompts``: ``records.Prompt`` rows; every prompt has the same number of texts (the columns).
    """
    from winnow.records import atomic_write_jsonl
    from winnow.rundir import Stage

    n = len(next(iter(texts.values())))
    rows = [
        {
            "prompt_id": p.id,
            "sample_index": j,
            "model": "m",
            "text": texts[p.id][j],
            "num_tokens": len(texts[p.id][j].split()),
            "finish_reason": "stop",
        }
        for p in prompts
        for j in range(n)
    ]
    with Stage(run, "generate", {"fake": [p.to_row() for p in prompts]}) as stage:
        stage.claim()
        atomic_write_jsonl(stage.dir / "shard-m0-00000.jsonl", rows)
        stage.record_shard("m0-00000", {(r["prompt_id"], r["sample_index"]) for r in rows}, exact=True)
        atomic_write_jsonl(stage.dir / "prompts.jsonl", [p.to_row() for p in prompts])
        stage.finish(["m0-00000"], outputs=["prompts.jsonl"], num_columns=n)


# The report's hand-made run: prompt -> [(text, num_tokens, finish_reason, reward)] for sample indices 0, 1, 2
HAND_RUN = {
    "p0": [("good day", 3, "stop", 0.5), ("good day", 3, "stop", 0.5), ("a bad bad day", 5, "length", -0.5)],
    "p1": [("the sun", 3, "stop", 1.0), ("the rain falls", 4, "length", 0.0), ("sun", 2, "stop", 0.2)],
    "p2": [("ok", 2, "stop", 0.1), ("ok then", 3, "stop", 0.3), ("hmm", 2, "stop", float("nan"))],
}


def make_run(root: Path, samples: dict[str, list[tuple[str, int, str, float]]] = HAND_RUN) -> Path:
    """generate + score stage folders of ``root`` as the stages write them: prompts, one shard,
    rewards, manifests (max_new_tokens 5).

    ``samples``: prompt id -> [(text, num_tokens, finish_reason, reward)] by sample index, the same
    count for each prompt (default ``HAND_RUN``); a NaN reward is unscored.
    """
    import numpy as np

    from winnow.records import config_hash, file_record
    from winnow.rundir import FORMAT

    gen, score = root / "generate", root / "score"
    gen.mkdir(parents=True)
    score.mkdir()
    write_jsonl(gen / "prompts.jsonl", [{"id": p, "prompt": f"say something about {p}"} for p in samples])
    rows = [
        {"prompt_id": p, "sample_index": j, "model": "m", "text": t, "num_tokens": n, "finish_reason": f}
        for p, row in samples.items()
        for j, (t, n, f, _) in enumerate(row)
    ]
    write_jsonl(gen / "shard-m0-00000.jsonl", rows)
    config = {"generate": {"models": ["m"], "max_new_tokens": 5}}
    files = {name: file_record(gen / name) for name in ("prompts.jsonl", "shard-m0-00000.jsonl")}
    manifest = {"format": FORMAT, "config": config, "config_hash": config_hash(config), "shards": ["m0-00000"]}
    manifest["num_columns"] = len(next(iter(samples.values())))
    (gen / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
    np.save(score / "rewards.npy", np.array([[s[3] for s in row] for row in samples.values()]))
    files = {"rewards.npy": file_record(score / "rewards.npy")}
    (score / "manifest.json").write_text(
        json.dumps({"format": FORMAT, "config": {}, "config_hash": config_hash({}), "files": files})
    )
    return root
