"""One writer per stage: an exclusive OS file lock on ``RUN/<stage>/lock``.

The lock is ``flock`` on the file, so the kernel drops it when the holder dies, however it
dies (SIGKILL included): a lock left by a dead process is simply free, and the next writer
takes it over. The file holds the holder's host and pid, which is what a refused second
writer is told, and what the next holder reports when it takes over after a crash. The
file itself is never deleted: removing it while another process waits to open it would let
two processes lock two different files of the same name. It is emptied on release.
On NFS, Linux emulates flock with POSIX locks, which NFS shares between machines.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from winnow.errors import WinnowError


class StageLock:
    """``with StageLock(folder / "lock"):`` holds the lock, or raises WinnowError naming the holder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise busy(self.path, holder) from None
        except OSError:
            os.close(fd)
            raise
        previous = _read(fd)
        if previous:  # a holder that died without releasing (killed, machine lost)
            print(f"winnow: taking over {self.path} from {_describe(previous)}, no longer running", file=sys.stderr)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self.fd = fd

    def check_held(self) -> None:
        """Raise unless the lock file on disk is still the one this process locked.

        A lock file removed (or replaced) while held lets a second writer lock a new file of
        the same name; the first then learns it here, before its next output lands.
        """
        if self.fd is None:
            raise WinnowError(f"{self.path}: not held by this process")
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            on_disk = None
        held = os.fstat(self.fd)
        if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino):
            raise WinnowError(
                f"{self.path} was removed or replaced while this process held it: another writer may have "
                f"started on {self.path.parent}; stopping. Make sure only one writer runs, then rerun"
            )

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> StageLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def busy(path: Path, holder: dict) -> WinnowError:
    """The error of a second writer: the folder is being written, by whom."""
    return WinnowError(
        f"{path.parent} is being written by {_describe(holder)} (lock {path}); "
        "wait for it to finish, or stop it, then rerun"
    )


def check_free(path: Path) -> None:
    """Raise ``busy`` if another process holds the lock at ``path``; writes nothing.

    A shared lock taken and dropped at once on a read-only descriptor: a plan checked
    before any work (``winnow.plan``) learns of a live writer without claiming the folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody has written the folder
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise busy(Path(path), _read(fd)) from None
    finally:
        os.close(fd)  # closing drops the shared lock, if taken


def _read(fd: int) -> dict:
    raw = os.pread(fd, 4096, 0)
    try:
        holder = json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:80].decode(errors="replace")} if raw.strip() else {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if "pid" in holder:
        return f"pid {holder['pid']} on host {holder.get('host', '?')}"
    return "another process"
