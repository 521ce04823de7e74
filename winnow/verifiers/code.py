"""The ``code`` verifier: Python completions run against their row's unit tests.

Rows follow HumanEval's schema (Chen et al. 2021): the prompt holds the function's
signature and docstring, ``test`` defines ``check(candidate)`` and ``entry_point`` names
the function. The program run is

    <prompt's code> + <completion's code> + test + check(<entry_point>)

where the completion's code is the first fenced block that defines ``entry_point`` (or
else the first Python block), appended after the prompt so that the prompt's imports and
helper functions stay defined and the block's definition replaces the stub; a completion
without a fenced block is taken as HumanEval writes completions: the function body that
continues the prompt. A prompt holding a fenced block (a chat-style instruction) gives
that block as the prompt's code.

Every program runs in :mod:`winnow.verifiers.sandbox`, never in this process.
"""

from __future__ import annotations

import re

from winnow.verifiers import Scores
from winnow.verifiers.sandbox import run_many

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3", "py3")


def _text(prompt) -> str:
    """The prompt's text: the string itself, or the last message's content."""
    if isinstance(prompt, str):
        return prompt
    return str(prompt[-1]["content"]) if prompt else ""


def _blocks(text: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _PYTHON_TAGS]


def _parses(source: str) -> bool:
    try:
        compile(source, "program.py", "exec", dont_inherit=True)  # parses only; nothing runs
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


def build_program(prompt, completion: str, test: str, entry_point: str) -> str | None:
    """The program to run for one completion, or None when it holds no code.

    >>> p = build_program("def f(x):\\n", "    return x\\n", "def check(c):\\n    assert c(1) == 1\\n", "f")
    >>> p.splitlines()[-1]
    'check(f)'
    >>> build_program("def f(x):\\n", "I cannot help with that.", "", "f") is None
    True
    """
    prompt_text = _text(prompt)
    prompt_blocks = _blocks(prompt_text) if "```" in prompt_text else []
    head = prompt_blocks[-1] if prompt_blocks else prompt_text
    if not completion.strip():
        return None
    blocks = [b for b in _blocks(completion) if b.strip()]
    if blocks:
        defines = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
        chosen = next((b for b in blocks if defines.search(b)), blocks[0])
        body = head.rstrip("\n") + "\n\n" + chosen if defines.search(chosen) else head + chosen
    else:
        body = head + completion
        if not _parses(body):
            return None  # prose, not code
    return f"{body}\n\n{test}\n\ncheck({entry_point})\n"


def code(
    prompts: list,
    completions: list[str],
    *,
    test: list[str],
    entry_point: list[str],
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    workers: int | None = None,
    isolation: str = "auto",
    **kw,
) -> Scores:
    """1.0 where the completion passes its row's tests, else 0.0; len = completions.

    ``test[i]`` and ``entry_point[i]`` are completion i's row columns. Programs run in
    parallel, ``workers`` at a time (default: one per CPU), each limited to ``timeout_s``
    seconds of wall time and ``memory_mb`` of address space; ``isolation`` is "auto" (namespaces
    where the machine allows them), "bwrap" (namespaces or an error) or "rlimits" (no
    namespaces; see docs/howto/sandbox.md). A completion with no code (blank,
    or prose that does not parse as Python) scores 0.0 and counts in ``no_answer``.
    """
    programs: list[str] = []
    where: list[int] = []
    for i, (prompt, completion, t, ep) in enumerate(zip(prompts, completions, test, entry_point, strict=True)):
        program = build_program(prompt, completion, t, ep)
        if program is not None:
            programs.append(program)
            where.append(i)
    values = [0.0] * len(completions)
    for i, result in zip(
        where,
        run_many(programs, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, isolation=isolation),
        strict=True,
    ):
        values[i] = 1.0 if result.status == "passed" else 0.0
    return Scores(values, no_answer=len(completions) - len(programs))
