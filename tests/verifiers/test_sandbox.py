"""What a sandboxed program leaves behind, and the grader that reads it.

The program cannot leave its namespaces; the danger is on the parent's side, which reads
what the program left. Each grading here runs in a child process with a 1.5 GB address
space and a wall-time limit, so that a sandbox with a hole fails the test (a timeout, a
MemoryError, a secret in the output) instead of blocking or filling the machine.
"""

import json
import os
import random
import resource
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import wait_for

import winnow
from winnow.verifiers import sandbox

ISOLATIONS = ["rlimits"] + (["bwrap"] if sandbox._probe_bwrap() else [])
needs_bwrap = pytest.mark.skipif(not sandbox._probe_bwrap(), reason="needs bwrap namespaces on this machine")
REPO = str(Path(winnow.__file__).resolve().parents[1])  # the children import this winnow, not another
GRADER = (
    "import json, sys\n"
    "from winnow.verifiers import sandbox\n"
    "program, isolation, timeout_s, memory_mb = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])\n"
    "r = sandbox.run(program, isolation=isolation, timeout_s=timeout_s, memory_mb=memory_mb)\n"
    "print(json.dumps({'status': r.status, 'output': r.output}))\n"
)


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))


def grader(program, isolation, tmp, *, timeout_s=5.0, memory_mb=256):
    """A child process that grades ``program`` (system temporary folder ``tmp``)."""
    args = [sys.executable, "-c", GRADER, program, isolation, str(timeout_s), str(memory_mb)]
    env = {**os.environ, "PYTHONPATH": REPO, "TMPDIR": str(tmp)}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_cap_memory)


def grade(program, isolation, tmp, **kw):
    """The child's Result as a dict; fails the test when the grader blocks or crashes."""
    child = grader(program, isolation, tmp, **kw)
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("the grader blocked on what the program left behind")
    assert child.returncode == 0, err.decode()[-1500:]
    return json.loads(out)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_fifos_left_in_the_folder_block_nothing(isolation, tmp_path):
    # every name the parent ever wrote or read in the folder becomes a FIFO with no writer
    program = (
        "import os\n"
        "for name in ['_output', '_harness.py', 'program.py', '_token']:\n"
        "    try:\n"
        "        os.remove(name)\n"
        "    except OSError:\n"
        "        pass\n"
        "    os.mkfifo(name)\n"
    )
    for _ in range(2):  # a rerun meets the same program
        assert grade(program, isolation, tmp_path)["status"] == "passed"


@needs_bwrap
@pytest.mark.timeout(60)
def test_a_link_to_a_host_file_is_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host-secret-4711")
    secret.chmod(0o600)  # the caller's alone: the program cannot read it, only the parent could
    program = (
        "import os\n"
        "for name in ['_output', 'out.txt']:\n"
        "    try:\n"
        "        os.remove(name)\n"
        "    except OSError:\n"
        "        pass\n"
        f"    os.symlink({str(secret)!r}, name)\n"
        "print('done')\n"
    )
    result = grade(program, "bwrap", tmp_path)
    assert "host-secret-4711" not in result["output"]
    assert result["status"] == "passed"


@needs_bwrap
@pytest.mark.timeout(60)
def test_a_link_to_an_endless_device_is_not_read(tmp_path):
    program = (
        "import os\ntry:\n    os.remove('_output')\nexcept OSError:\n    pass\nos.symlink('/dev/zero', '_output')\n"
    )
    assert grade(program, "bwrap", tmp_path)["status"] == "passed"


@needs_bwrap
@pytest.mark.timeout(60)
def test_the_folder_is_bounded_in_total_not_only_per_file(tmp_path):
    # 12 files of 16 MB, each under the per-file limit: 192 MB together
    program = (
        "import os\n"
        "total = 0\n"
        "try:\n"
        "    for i in range(12):\n"
        "        fd = os.open(f'f{i}', os.O_WRONLY | os.O_CREAT)\n"
        "        for _ in range(16):\n"
        "            total += os.write(fd, bytes(1 << 20))\n"
        "        os.close(fd)\n"
        "except OSError as e:\n"
        "    print('refused', e.strerror)\n"
        "print('wrote', total)\n"
    )
    result = grade(program, "bwrap", tmp_path)
    wrote = int(result["output"].split("wrote ")[-1].split()[0])
    assert wrote <= sandbox.DISK_MB << 20
    assert "refused No space left on device" in result["output"]
    assert list(tmp_path.iterdir()) == []  # nothing of it reached the host's disk


def harnesses(memory_mb, *, program_only=False):
    """Sandboxed processes alive that were started with this memory limit (a marker): bwrap's
    and the harness's, or with ``program_only`` the harness's (Python) alone. bwrap's command
    line names the harness from its exec on, before it has asked the kernel to kill it with
    its parent (``--die-with-parent``): a grader killed then leaves it running, so a test of
    what outlives the grader waits for the program itself."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "_harness.py" in cmd and str(memory_mb << 20) in cmd and (not program_only or cmd[0] == sys.executable):
            found.append(proc)
    return found


@pytest.mark.timeout(90)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_killed_grader_leaves_no_program_running_and_no_folder(isolation, tmp_path):
    memory_mb = random.randint(300, 900)  # marks this test's processes
    child = grader("import time\ntime.sleep(60)\n", isolation, tmp_path, timeout_s=50, memory_mb=memory_mb)
    try:
        started = wait_for(lambda: harnesses(memory_mb, program_only=True), 20, poll_s=0.05, fail=False)
        assert started, "the program never started"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    # 15 s, far below the program's 60: on a loaded machine (load 16 on 2 cores) the namespace's
    # teardown after the kill has taken more than 5 s
    gone = wait_for(lambda: not harnesses(memory_mb), 15, poll_s=0.05, fail=False)
    assert gone, "the program outlived its grader"
    # bwrap: the folder was a tmpfs of the namespace, gone with it; rlimits: the next grader
    # removes the folder of one that died
    if isolation == "rlimits":
        assert grade("pass", isolation, tmp_path)["status"] == "passed"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


ABANDON = (
    "import sys, threading, time\n"
    "import psutil\n"
    "from winnow.verifiers import sandbox\n"
    "kw = dict(isolation=sys.argv[1], memory_mb=int(sys.argv[2]), timeout_s=50)\n"
    "threading.Thread(target=sandbox.run, args=('import time\\ntime.sleep(60)\\n',), kwargs=kw, daemon=True).start()\n"
    "def running():\n"
    "    try:\n"
    "        kids = [p.cmdline() for p in psutil.Process().children(recursive=True)]\n"
    "        return any('_harness.py' in c and c[0] == sys.executable for c in kids)  # the program, not bwrap\n"
    "    except psutil.Error:\n"
    "        return False\n"
    "end = time.monotonic() + 20\n"
    "while not running() and time.monotonic() < end:\n"
    "    time.sleep(0.05)\n"
    "print('running' if running() else 'never started', flush=True)\n"
    "sys.exit(2)  # as the CLI does when a reward call outlasts --reward-timeout\n"
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_grader_that_exits_while_a_thread_runs_programs_leaves_nothing(isolation, tmp_path):
    """The --reward-timeout path: the reward call is abandoned in a thread and the process exits."""
    memory_mb = random.randint(300, 900)
    args = [sys.executable, "-c", ABANDON, isolation, str(memory_mb)]
    env = {**os.environ, "PYTHONPATH": REPO, "TMPDIR": str(tmp_path)}
    done = subprocess.run(args, env=env, capture_output=True, timeout=30, preexec_fn=_cap_memory)
    assert done.returncode == 2, done.stderr.decode()[-1500:]
    assert done.stdout.decode().strip() == "running"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # removed at exit, not at the next start
    # 15 s, far below the program's 60: on a loaded machine (load 16 on 2 cores) the namespace's
    # teardown after the kill has taken more than 5 s
    gone = wait_for(lambda: not harnesses(memory_mb), 15, poll_s=0.05, fail=False)
    assert gone, "the program outlived its grader"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_limit_a_program_that_reads_the_pass_token_from_its_descriptor_passes(isolation, tmp_path):
    """A known limit, documented in docs/howto/sandbox.md: the token that marks a run to its
    end waits in a pipe of the program's own process, and a program written to find it can
    print it. Any pass signal sent from the program's process can be forged from it."""
    program = (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.set_blocking(fd, False)\n"
        "        token = os.read(fd, 64)\n"
        "    except OSError:\n"
        "        continue\n"
        "    if token:\n"
        "        os.write(1, b'\\n' + token + b'\\n')\n"
        "        os._exit(0)\n"
        "raise SystemExit(1)\n"
    )
    assert grade(program, isolation, tmp_path)["status"] == "passed"
