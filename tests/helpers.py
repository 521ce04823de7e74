"""Plain helpers shared by the test files: argument lists, refusals, file digests and waiting.

Fixtures live in ``conftest.py``; these are ordinary functions, imported as ``from helpers import ...``.
Where test files need different checks, the difference is a keyword here, never a second copy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from winnow.cli import main


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
    argv = ["generate", "--prompts", str(prompts or d / "prompts.jsonl"), "--run-dir", str(run or d / "run")]
    argv += ["--model", str(model), "--n", "4", "--max-new-tokens", str(max_new_tokens)]
    if shard_size is not None:
        argv += ["--shard-size", str(shard_size)]
    return [*argv, "--device", "cpu", *extra]


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
    With ``proc``: fail as soon as that process has exited, naming what it wrote to stderr.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if proc is not None:
            assert proc.poll() is None, f"finished before the check: {proc.stderr.read() if proc.stderr else ''}"
        if time.monotonic() >= deadline:
            assert not fail, f"timed out waiting for {what}"
            return condition()
        time.sleep(poll_s)
    return value
