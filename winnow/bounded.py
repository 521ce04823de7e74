"""Calls bounded in time wherever they run: per-item limits in a long-lived worker process.

``bounded_map("module:function", items, timeout_s)`` calls ``function(*item)`` for each
item in a worker process and returns the results in order, with :data:`OUT_OF_TIME` in
place of each call that ran past ``timeout_s`` (or ended its worker). It holds in any
thread of the caller: the caller only waits on a pipe, with a deadline.

Why a process: sympy (under math-verify) can spend minutes on one adversarial expression,
and a thread cannot be stopped. math-verify's own limit is SIGALRM, which only the main
thread may set, so from a worker thread (``--reward-timeout``, a server) there was none.

How the limit is kept, cheaply:

- the worker is started once and reused (a pool of them, one per concurrent caller), so
  the common case costs a pipe round trip per batch and a small message per item, not a
  process per item;
- in the worker, each call runs under an interval timer (``setitimer``, the worker's own
  main thread) that raises :class:`OutOfTime`, a ``BaseException`` that the libraries'
  ``except Exception`` cannot swallow; the worker then goes on with the next item;
- should a call not come back within ``timeout_s + GRACE_S`` (time spent in C code, which
  no signal interrupts, or a crash), the caller kills the worker, records the item as
  :data:`OUT_OF_TIME` and starts a fresh worker for the rest of the batch.

An exception raised by ``function`` itself comes back as RuntimeError naming it; functions
run here should return verdicts, not raise.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

from winnow.loader import resolve

GRACE_S = 1.0
"""How long past its limit the caller waits for a call before it kills the worker."""

NAP_S = 0.002
"""After an answer, the caller naps this long when the next is not there yet, and then reads
the ones that came together: waking for each (thousands a second) took CPU from the worker."""

START_TIMEOUT_S = 120.0
"""How long a new worker may take to start and import the function's module (sympy: ~1 s)."""


class OutOfTime(BaseException):
    """Raised in the worker when a call runs past its limit (not an Exception, so that the
    ``except Exception`` blocks of the code being run do not swallow it)."""


class _OutOfTimeType:
    def __repr__(self) -> str:
        return "OUT_OF_TIME"


OUT_OF_TIME = _OutOfTimeType()
"""The result of a call that ran past its limit."""


def bounded_map(fn: str, items: list[tuple], timeout_s: float, *, setup: str | None = None) -> list:
    """``[function(*item) for item in items]``, each call limited to ``timeout_s`` seconds.

    fn: ``"module:function"``, imported in the worker. setup: a ``"module:function"`` that
    each worker calls once before its first item (imports, say), outside the items' limits.
    Returns list, len = items: each call's result, or OUT_OF_TIME. Raises RuntimeError
    when a call raised.

    >>> bounded_map("operator:add", [(1, 2), ("a", "b")], timeout_s=5)
    [3, 'ab']
    >>> bounded_map("time:sleep", [(0,), (30,)], timeout_s=0.2)
    [None, OUT_OF_TIME]
    """
    out: list = []
    while len(out) < len(items):
        worker = _POOL.take()
        try:
            done = worker.run(fn, setup, items[len(out) :], timeout_s, out)
        except BaseException:
            worker.kill()  # mid-batch: its pipe may still hold answers meant for this call
            raise
        if done:
            _POOL.give(worker)
        else:  # the next item ran out of time in C code, or ended the worker
            worker.kill()
            out.append(OUT_OF_TIME)
    return out


class _Worker:
    """One worker process and the caller's end of its pipe."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "winnow.bounded", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self.conn = Connection(ours.detach())

    def run(self, fn: str, setup: str | None, items: list[tuple], timeout_s: float, out: list) -> bool:
        """Append each item's result to ``out`` as it comes; False at the first item that
        did not come back in time (not appended), True when all did."""
        self.conn.send((fn, setup, items, timeout_s))
        try:  # the worker imports fn's module and runs setup first
            if not self.conn.poll(START_TIMEOUT_S):
                raise RuntimeError(f"bounded worker did not load {fn!r} within {START_TIMEOUT_S:g} s")
            status, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"bounded worker exited before loading {fn!r}") from None
        if status == "error":
            raise RuntimeError(value)
        for left in range(len(items) - 1, -1, -1):
            try:
                if not self.conn.poll(timeout_s + GRACE_S):
                    return False
                status, value = self.conn.recv()
                if left and not self.conn.poll(0):  # let a few answers gather before waking again
                    time.sleep(NAP_S)
            except (EOFError, OSError):  # the worker died on this item
                return False
            if status == "error":
                raise RuntimeError(value)
            out.append(OUT_OF_TIME if status == "timeout" else value)
        return True

    def kill(self) -> None:
        self.conn.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class _Pool:
    """Idle workers; a caller takes one (or starts one) and gives it back when done."""

    def __init__(self) -> None:
        self.idle: list[_Worker] = []
        self.lock = threading.Lock()

    def take(self) -> _Worker:
        with self.lock:
            while self.idle:
                worker = self.idle.pop()
                if worker.process.poll() is None:
                    return worker
                worker.kill()
        return _Worker()

    def give(self, worker: _Worker) -> None:
        with self.lock:
            self.idle.append(worker)

    def close(self) -> None:
        with self.lock:
            workers, self.idle = self.idle, []
        for worker in workers:
            worker.kill()

    def forget(self) -> None:
        """In a forked child: the workers are the parent's; this process starts its own."""
        self.lock = threading.Lock()
        for worker in self.idle:
            worker.conn.close()
        self.idle = []


_POOL = _Pool()
atexit.register(_POOL.close)
os.register_at_fork(after_in_child=_POOL.forget)


# ---- the worker's side ----------------------------------------------------------------------


def _alarm(signum, frame) -> None:
    raise OutOfTime


def _serve(conn: Connection) -> None:
    """Answer batches until the caller closes the pipe: ("ready", None), then one
    ("ok", result) / ("timeout", None) per item, or ("error", message)."""
    signal.signal(signal.SIGALRM, _alarm)
    set_up: set[str] = set()
    while True:
        try:
            fn_spec, setup, items, timeout_s = conn.recv()
        except (EOFError, OSError):
            return
        try:
            fn = resolve(fn_spec)
            if setup is not None and setup not in set_up:
                resolve(setup)()
                set_up.add(setup)
        except Exception as e:  # noqa: BLE001 -- reported to the caller, which raises it
            conn.send(("error", f"cannot load {fn_spec!r} (setup {setup!r}): {type(e).__name__}: {e}"))
            continue
        conn.send(("ready", None))
        for item in items:
            try:
                signal.setitimer(signal.ITIMER_REAL, timeout_s)
                try:
                    reply = ("ok", fn(*item))
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except OutOfTime:
                reply = ("timeout", None)
            except Exception as e:  # noqa: BLE001 -- reported to the caller, which raises it
                reply = ("error", f"{fn_spec} raised {type(e).__name__}: {e}")
            conn.send(reply)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
