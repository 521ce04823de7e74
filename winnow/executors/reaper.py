"""Leave no process behind of a Ray instance that winnow started, whatever ends the driver.

Ray's own shutdown runs only when the driver exits cleanly; after a SIGKILL of the driver,
or once the GCS is gone, Ray's agents (DashboardAgent, RuntimeEnvAgent) and raylet live
on under PID 1. So before it starts a local instance the driver starts this reaper: a
process in a session of its own (Ctrl-C and a kill of the driver's process group pass
it by) that reads its stdin, a pipe only the driver holds. The pipe closes when the driver
ends, however it ends, and the reaper then kills every process that carries the
instance's mark, and their descendants: the mark is an environment variable set only
while Ray starts its processes, so that the GCS, the raylet, the agents and the workers
the raylet starts later all inherit it, and nothing else does. While it waits, the reaper
notes that family once a second, so that a process whose parent died first is still
known. Linux only (it reads ``/proc``); elsewhere there is no reaper.

    python -m winnow.executors.reaper TOKEN    # kills the processes marked TOKEN at EOF
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

MARK = "WINNOW_RAY_INSTANCE"
"""The environment variable holding the instance's token."""
ROUNDS = 20
"""Scans after the driver ended: a raylet may start a worker while its siblings die."""
SCAN_EVERY = 1.0
"""Seconds between looks at the instance's processes while the driver lives."""


def start() -> str | None:
    """Start a reaper for a Ray instance about to be started; its token, or None off Linux.

    The write end of the pipe stays open in this process alone (``os.pipe`` makes it
    non-inheritable, so Ray's processes do not hold it): the reaper's stdin reaches EOF
    when this process ends.
    """
    if not Path("/proc/self/environ").exists():
        return None
    token = uuid.uuid4().hex
    read, write = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != MARK}
    subprocess.Popen(
        [sys.executable, "-m", "winnow.executors.reaper", token],
        stdin=read,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    os.close(read)
    _held.append(write)  # kept open for the life of this process
    return token


_held: list[int] = []


@contextlib.contextmanager
def marked(token: str | None) -> Iterator[None]:
    """The mark in this process's environment while Ray starts its processes, then removed
    (processes this driver starts later, a test server say, are not Ray's)."""
    if token is None:
        yield
        return
    before = os.environ.get(MARK)
    os.environ[MARK] = token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MARK, None)
        else:
            os.environ[MARK] = before


def marked_pids(token: str) -> list[int]:
    """Processes of this user whose environment carries ``MARK=token``."""
    needle = f"{MARK}={token}".encode()
    out = []
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0"):
            out.append(pid)
    return out


def family(token: str) -> dict[int, str]:
    """The marked processes and all their descendants: pid -> start time (a pid reused by
    another process later has another start time). Descendants count too, because a
    process that retitles itself (Ray's ``ray::`` workers do) may overwrite the memory
    ``/proc/PID/environ`` shows, and the mark with it."""
    stats = {pid: stat for pid in _pids() if (stat := _stat(pid)) is not None}
    out = {pid: stats[pid][1] for pid in marked_pids(token) if pid in stats}
    grew = True
    while grew:
        grew = False
        for pid, (parent, start) in stats.items():
            if pid not in out and parent in out:
                out[pid] = start
                grew = True
    return out


def reap(token: str, known: dict[int, str]) -> None:
    """SIGKILL what was seen of the family while the driver lived (if still the same
    process) and what carries the mark now, scanning again until none is left."""
    for _ in range(ROUNDS):
        now = family(token)
        targets = set(now) | {pid for pid, start in known.items() if (_stat(pid) or (0, ""))[1] == start}
        if not targets:
            return
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        known = {}
        time.sleep(0.1)


def _pids() -> list[int]:
    own = os.getpid()
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and int(e.name) != own]


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) from ``/proc/PID/stat``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    return int(fields[1]), fields[19]


def main(token: str) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe ends the wait
    known: dict[int, str] = {}
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], SCAN_EVERY)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
        known.update(family(token))  # the tree while it is whole: orphans lose their parent
    reap(token, known)


if __name__ == "__main__":
    main(sys.argv[1])
