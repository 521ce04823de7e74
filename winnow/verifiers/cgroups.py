"""Per-program control groups for the sandbox, where this process may create them.

A control group bounds what rlimits cannot: the number of processes of a program as a
whole (RLIMIT_NPROC does not bind a root caller) and the memory of all its processes
together (RLIMIT_AS bounds each process alone). It also finds every process a program
left, even one that moved to a session of its own, so that all can be killed.

Both cgroup layouts are tried: v1 (a ``pids`` and a ``memory`` hierarchy) and v2 (one
unified tree, which needs ``pids`` and ``memory`` enabled in this process's subtree). A
group is created under this process's own group; creating one needs write access there,
which usually means root or a delegated systemd slice. Where it fails, the sandbox goes on
without this layer and says so.
"""

from __future__ import annotations

import os
import signal
import time
from functools import lru_cache
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, Path]:
    """{"pids": folder, "memory": folder} (v1) or {"unified": folder} (v2) of this process."""
    found: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            if c in ("pids", "memory"):
                found[c] = _ROOT / c / path.lstrip("/")
    if not found:
        for line in lines:
            if line.startswith("0::"):
                found["unified"] = _ROOT / line[3:].lstrip("/")
    return found


def _limits(kind: str, max_procs: int, memory_bytes: int) -> dict[str, str]:
    if kind == "pids":
        return {"pids.max": str(max_procs)}
    if kind == "memory":
        return {"memory.limit_in_bytes": str(memory_bytes)}
    return {"pids.max": str(max_procs), "memory.max": str(memory_bytes), "memory.swap.max": "0"}


def create(name: str, *, max_procs: int, memory_bytes: int) -> list[Path] | None:
    """Create the group(s) ``name`` with these limits; None where this machine does not allow it."""
    made: list[Path] = []
    try:
        bases = _own_paths()
        if not (("pids" in bases and "memory" in bases) or "unified" in bases):
            return None
        for kind, base in bases.items():
            folder = base / name
            folder.mkdir()
            made.append(folder)
            for file, value in _limits(kind, max_procs, memory_bytes).items():
                if kind == "unified" and file == "memory.swap.max" and not (folder / file).exists():
                    continue  # no swap accounting on this kernel
                (folder / file).write_text(value)
    except OSError:
        remove(made)
        return None
    return made


def _remove_stale() -> None:
    """Remove the groups of a scorer that died (``winnow-<pid>-...``, pid gone), killing first
    the programs still in them: a SIGKILLed scorer could not end them itself."""
    for base in _own_paths().values():
        for folder in base.glob("winnow-*-*"):
            pid = folder.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                kill_all([folder])
                remove([folder])


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether :func:`create` works here (tried once with a throwaway group)."""
    _remove_stale()
    made = create(f"winnow-probe-{os.getpid()}", max_procs=8, memory_bytes=64 << 20)
    if made is None:
        return False
    remove(made)
    return True


def kill_all(groups: list[Path]) -> None:
    """SIGKILL every process in the groups until none is left (forks are bounded by pids.max)."""
    for _ in range(200):
        pids: set[int] = set()
        for g in groups:
            try:
                pids.update(int(p) for p in (g / "cgroup.procs").read_text().split())
            except OSError:
                continue
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def remove(groups: list[Path]) -> None:
    """Remove the (empty) groups, waiting briefly for the kernel to reap their last processes."""
    for g in reversed(groups):
        for _ in range(100):
            try:
                g.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)


def settle(groups: list[Path], timeout_s: float = 2.0) -> bool:
    """Wait until the groups count no process (killed ones included, until the kernel
    releases them); True if they did within ``timeout_s``, so the groups can be reused."""
    end = time.monotonic() + timeout_s
    counters = [g / "pids.current" for g in groups if (g / "pids.current").exists()]
    while True:
        try:
            if all(int(c.read_text()) == 0 for c in counters):
                return True
        except (OSError, ValueError):
            return False
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
