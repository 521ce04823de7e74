"""Leave no process behind of a Ray instance that winnow started, whatever ends the driver.

Ray's own shutdown runs only when the driver exits cleanly; after a SIGKILL of the driver,
or once the GCS is gone, Ray's agents (DashboardAgent, RuntimeEnvAgent) and raylet live
on under PID 1. So before it starts a local instance the driver starts this reaper: a
process in a session of its own (Ctrl-C and a kill of the driver's process group pass
it by) that reads its stdin, a pipe only the driver holds. The pipe closes when the driver
ends, however it ends, and the reaper then kills every process that carries the
instance's mark: an environment variable set only while Ray starts its processes, so
that the GCS, the raylet, the agents and the workers the raylet starts later all inherit
it, and nothing else does. Linux only (it reads ``/proc``); elsewhere there is no reaper.

    python -m winnow.executors.reaper TOKEN    # kills the processes marked TOKEN at EOF
"""

from __future__ import annotations

import contextlib
import os
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
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0"):
            out.append(int(entry.name))
    return out


def reap(token: str) -> None:
    """SIGKILL every marked process, scanning again until none is left (ROUNDS at most)."""
    for _ in range(ROUNDS):
        pids = marked_pids(token)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def main(token: str) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe ends the wait
    while sys.stdin.buffer.read(4096):
        pass
    reap(token)


if __name__ == "__main__":
    main(sys.argv[1])
