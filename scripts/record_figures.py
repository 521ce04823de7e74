"""Run the demos and record their figures, or check them against the records.

    python scripts/record_figures.py record [DEMO ...]   # rewrite figures/<demo>/<CAPABILITY>.json, then README.md
    python scripts/record_figures.py check [DEMO ...] [--write-new]   # what CI runs
    python scripts/record_figures.py readme [--check]    # README.md's figure blocks from the records

DEMO is a folder name of ``winnow.figures.DEMOS`` (default: all of them). Each demo runs as
a user runs it, ``winnow demo ...`` in a fresh run dir of its own, in a child process;
``demo-rounds-2`` resumes ``demo``'s run dir (round 1 is the one-round demo: it is not run
twice), so its wall time is round 2's. ``record`` writes the record of this machine's CPU
capability with the commit (and whether the work tree had changes), the machine and the
command's wall time. ``check`` compares each demo's figures with the record of this
capability (exactly) or, where none was made by a run, with the claims that hold anywhere
(``winnow.figures.check``); ``--write-new`` then records the new capability. It exits 1
on any difference, naming each figure.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from winnow import figures  # noqa: E402

QUIET_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}
"""OpenMP threads sleep while they wait instead of spinning: on a machine shared with other jobs a
spinning thread burns the turn its partner needs (the demo ran several times slower). How threads
wait changes no arithmetic: the figures are the same."""
RESUMES = {"demo-rounds-2": "demo"}
"""A demo that resumes another's run dir: run after it, in the same folder."""


def run_demos(names: list[str], scratch: Path) -> dict[str, tuple[dict, float]]:
    """Each demo's report.json and the wall seconds of its command, in DEMOS order."""
    out: dict[str, tuple[dict, float]] = {}
    for name in [n for n in figures.DEMOS if n in names or any(RESUMES.get(m) == n for m in names)]:
        run_dir = scratch / RESUMES.get(name, name)
        argv = [sys.executable, "-m", "winnow", *figures.DEMOS[name].argv, "--run-dir", str(run_dir)]
        print(f"$ {figures.command(name)} --run-dir {run_dir}", flush=True)
        start = time.perf_counter()
        subprocess.run(argv, check=True, cwd=ROOT, env=os.environ | QUIET_WAIT)
        out[name] = json.loads((run_dir / "report.json").read_text()), time.perf_counter() - start
    return {n: out[n] for n in names}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def record(names: list[str], scratch: Path) -> None:
    commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", "winnow", "pyproject.toml"))
    date = datetime.date.today().isoformat()
    for name, (report, wall) in run_demos(names, scratch).items():
        path = figures.record(name, report, commit=commit, dirty=dirty, date=date, wall_seconds=wall)
        print(f"recorded {path.relative_to(ROOT)}: {wall:.0f} s")
    readme(check_only=False)


def check(names: list[str], scratch: Path, write_new: bool) -> int:
    commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", "winnow", "pyproject.toml"))
    failed = False
    for name, (report, wall) in run_demos(names, scratch).items():
        capability = report["machine"]["cpu_capability"]
        verdict, problems = figures.check(name, report, capability)
        for line in problems:
            print(line)
        failed |= bool(problems)
        if verdict == "exact":
            print(f"{name}: {'differs from' if problems else 'equals'} the {capability} record ({wall:.0f} s)")
            continue
        print(
            f"{name}: no run recorded on {capability}; the claims that hold anywhere: {'FAIL' if problems else 'hold'}"
        )
        if write_new and not problems:
            date = datetime.date.today().isoformat()
            path = figures.record(name, report, commit=commit, dirty=dirty, date=date, wall_seconds=wall)
            print(f"{name}: recorded {path.relative_to(ROOT)}: commit it")
    if failed:
        print("a demo's figures moved: if the change meant to move them, `python scripts/record_figures.py record`")
    return 1 if failed else 0


def readme(check_only: bool) -> int:
    """README.md's figure blocks regenerated from the records (the docs hook renders them)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    path = ROOT / "README.md"
    text = path.read_text()
    fresh = hooks.fill_blocks(text)
    if check_only:
        print("README.md's figures are the recorded ones" if fresh == text else "README.md's figures are stale")
        return 0 if fresh == text else 1
    path.write_text(fresh)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["record", "check", "readme"])
    parser.add_argument("demos", nargs="*", metavar="DEMO", help="one of: " + ", ".join(figures.DEMOS))
    parser.add_argument("--write-new", action="store_true", help="check: record a capability that has no run record")
    parser.add_argument("--check", action="store_true", help="readme: only say whether README.md is up to date")
    parser.add_argument("--scratch", help="where the demos run (default: a temp folder)")
    args = parser.parse_args(argv)
    names = args.demos or list(figures.DEMOS)
    if unknown := [n for n in names if n not in figures.DEMOS]:
        parser.error(f"no demo {unknown[0]!r}: one of {', '.join(figures.DEMOS)}")
    if args.action == "readme":
        return readme(check_only=args.check)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="winnow-figures-"))
    if args.action == "record":
        record(names, scratch)
        return 0
    return check(names, scratch, args.write_new)


if __name__ == "__main__":
    sys.exit(main())
