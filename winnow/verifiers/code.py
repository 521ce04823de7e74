"""The ``code`` verifier: Python completions run against their row's unit tests.

Rows follow HumanEval's schema (Chen et al. 2021): the prompt holds the function's
signature and docstring, ``test`` defines ``check(candidate)`` and ``entry_point`` names
the function. The program run is

    <prompt's code> + <completion's code> + test + check(<entry_point>)

The rule, in order:

- **Unscored** (None): a row whose ``test`` is not a non-blank string or whose
  ``entry_point`` is not a Python name (``null``, a number, ``""``): the row is at fault,
  not the model.
- **The prompt's code** is its last fenced Python block (a chat-style instruction), else
  the whole prompt when it is Python (a HumanEval stub: it parses, and holds a statement
  other than a bare expression), else the imports and definitions of an unfenced stub
  inside an instruction ("Complete this code: ..."), else nothing: a prose prompt
  (MBPP's "Write a function ...") gives no code, and the completion must define the
  function itself.
- **The completion's code** is its first fenced block that defines ``entry_point`` (or
  else its first Python block), placed after the prompt's code so that the prompt's
  imports and helpers stay defined and the block's definition replaces the stub. Without
  a fence, it is the body that continues the prompt's code when the two parse together,
  as HumanEval writes completions; else the completion itself when it is Python, or its
  lines from the first that starts a definition or an import to the last that keeps them
  Python (prose before and after the code dropped), which must define ``entry_point``
  when the prompt has code.
- **No answer** (0.0, counted in ``no_answer``): a blank completion, or one where the rule
  above finds no Python.

A test of the form ``assert candidate(x) == y`` passes a result whose ``__eq__`` always
answers True (a known reward hack). ``strict_results=True`` refuses it: every result the
tests get from the candidate must be of an exact builtin type (None, bool, int, float,
complex, str, bytes, and lists, tuples, dicts, sets and frozensets of those, at any
depth), or the program fails. Use it for datasets whose answers are such values.

Every program runs in :mod:`winnow.verifiers.sandbox`, never in this process.
"""

from __future__ import annotations

import ast
import re

from winnow.verifiers import Scores
from winnow.verifiers.sandbox import run_many

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3", "py3")
_STARTS_CODE = re.compile(r"(?:(?:async\s+)?def\s+\w+\s*\(|class\s+\w+|import\s+\w|from\s+[\w.]+\s+import\b|@\w)")
_MAX_TRIES = 50  # trailing lines dropped at most, a parse each: bounds the cost of a long completion
_UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)


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
    except _UNPARSABLE:
        return False
    return True


def _tree(text: str) -> tuple[str, ast.Module] | None:
    """``text`` and its syntax tree when it parses; else, when it ends in a header
    (``def f(x):``, a stub's signature whose body the completion writes), that text with a
    ``pass`` body and its tree; else None."""
    try:
        return text, ast.parse(text)
    except _UNPARSABLE:
        pass
    last = text.rstrip().rpartition("\n")[2]
    if not last.endswith(":"):
        return None
    text = text.rstrip() + "\n" + last[: len(last) - len(last.lstrip())] + "    pass\n"
    try:
        return text, ast.parse(text)
    except _UNPARSABLE:
        return None


def is_code(text: str) -> bool:
    """Whether ``text`` is Python: it parses (given a body, when it ends in a header such as
    ``def f(x):``), and holds a statement other than a bare expression (a word of prose
    parses as a name).

    >>> is_code("def f(x):\\n    'Return x + 1.'\\n"), is_code("import math\\n"), is_code("def f(x):\\n")
    (True, True, True)
    >>> is_code("Write a Python function f(x) that returns x+1."), is_code("Hello"), is_code("")
    (False, False, False)
    """
    parsed = _tree(text)
    return parsed is not None and any(not isinstance(node, ast.Expr) for node in parsed[1].body)


def code_in(text: str) -> str | None:
    """The code of a text without a fence: the text when it is Python, else its lines from
    the first that starts a definition, a class, an import or a decorator (at column 0) to
    the last that keeps them Python; None when there is none.

    >>> code_in("def f(x):\\n    return x + 1\\n")
    'def f(x):\\n    return x + 1\\n'
    >>> code_in("Here it is:\\ndef f(x):\\n    return x + 1\\nIt adds one.")
    'def f(x):\\n    return x + 1\\n'
    >>> code_in("I would add one to x.") is None
    True
    """
    if is_code(text):
        return text
    lines = text.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if _STARTS_CODE.match(line)), None)
    if first is None:
        return None
    for end in range(len(lines), max(first, len(lines) - _MAX_TRIES), -1):
        candidate = "".join(lines[first:end])
        if is_code(candidate):
            return candidate
    return None


_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def prompt_code(prompt) -> str:
    """The code a prompt gives the program: its last fenced Python block; else the prompt
    when it is Python (a HumanEval stub); else, from an instruction holding an unfenced
    stub, the imports and definitions of its code (:func:`code_in`; an example call or an
    ``assert`` in the instruction is left out, as it would run before the answer); else ""
    (prose).

    >>> prompt_code("def f(x):\\n    'Return x + 1.'\\n")
    "def f(x):\\n    'Return x + 1.'\\n"
    >>> prompt_code("Write a Python function f(x) that returns x+1.")
    ''
    >>> prompt_code("Complete this:\\n```python\\ndef f(x):\\n```")
    'def f(x):\\n'
    >>> print(prompt_code("Complete the code:\\nimport math\\ndef f(x):\\n    'Doc.'\\nassert f(1) == 2\\n"))
    import math
    def f(x):
        'Doc.'
    <BLANKLINE>
    """
    text = _text(prompt)
    blocks = _blocks(text) if "```" in text else []
    if blocks:
        return blocks[-1]
    if is_code(text):
        return text
    found = code_in(text)
    parsed = _tree(found) if found is not None else None
    if parsed is None:
        return ""
    source, tree = parsed
    lines = source.splitlines(keepends=True)
    kept = []
    for node in tree.body:
        if isinstance(node, _KEPT):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            kept.append("".join(lines[first - 1 : node.end_lineno]))
    return "".join(kept)


# Wraps the candidate given to check(): a result of another type than these exact builtin
# ones (a subclass neither) ends the program. The types come from literals and the class of
# a tuple's class, which no program can rebind; a program written to subvert the harness
# itself is out of reach of any check in its own process (docs/howto/sandbox.md).
_STRICT = """
def __winnow_strict(candidate, T=().__class__.__class__, _os=__import__("os"), _id=id):
    leaves = {T(None), T(True), T(0), T(0.0), T(0j), T(""), T(b"")}
    dict_, containers = T({}), {T([]), T(()), T({0}), T(frozenset())}
    write, exit_ = _os.write, _os._exit

    def check(result):
        todo, seen = [result], set()
        while todo:
            value = todo.pop()
            kind = T(value)
            if kind in leaves:
                continue
            if kind is not dict_ and kind not in containers:
                try:  # a name that raises must not let a test catch the refusal
                    write(2, ("strict_results: the candidate returned a " + kind.__name__ + "\\n").encode())
                finally:
                    exit_(1)
            if _id(value) not in seen:
                seen.add(_id(value))
                todo.extend([*value.keys(), *value.values()] if kind is dict_ else value)
        return result

    def strict(*args, **kwargs):
        return check(candidate(*args, **kwargs))

    return strict
"""


def row_is_scorable(test, entry_point) -> bool:
    """A row the verifier can grade: ``test`` a non-blank string, ``entry_point`` a name.

    >>> row_is_scorable("def check(c): pass", "f"), row_is_scorable(None, "f"), row_is_scorable("t", None)
    (True, False, False)
    """
    return isinstance(test, str) and bool(test.strip()) and isinstance(entry_point, str) and entry_point.isidentifier()


def _stub(head: str) -> str:
    """The prompt's code before a completion's own definition replaces its stub: a bare
    header given a ``pass`` body, then a blank line."""
    parsed = _tree(head)
    return (parsed[0] if parsed else head).rstrip("\n") + "\n\n"


def build_program(prompt, completion: str, test: str, entry_point: str, *, strict_results: bool = False) -> str | None:
    """The program to run for one completion, or None when it holds no code.

    >>> p = build_program("def f(x):\\n", "    return x\\n", "def check(c):\\n    assert c(1) == 1\\n", "f")
    >>> p.splitlines()[-1]
    'check(f)'
    >>> build_program("def f(x):\\n", "I cannot help with that.", "", "f") is None
    True
    >>> build_program("Write f(x), returning x + 1.", "def f(x):\\n    return x + 1\\n", "", "f").splitlines()[0]
    'def f(x):'
    """
    head = prompt_code(prompt)
    if not completion.strip():
        return None
    blocks = [b for b in _blocks(completion) if b.strip()]
    defines = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    if blocks:
        chosen = next((b for b in blocks if defines.search(b)), blocks[0])
        body = _stub(head) + chosen if head and defines.search(chosen) else head + chosen
    elif head and _parses(head + completion):
        body = head + completion  # HumanEval's form: the body that continues the prompt
    else:
        found = code_in(completion)  # a whole answer, perhaps between sentences
        if found is None or (head and not defines.search(found)):
            return None  # prose, not code
        body = _stub(head) + found if head else found
    if strict_results:
        return f"{body}\n\n{test}\n{_STRICT}\ncheck(__winnow_strict({entry_point}))\n"
    return f"{body}\n\n{test}\n\ncheck({entry_point})\n"


def code(
    prompts: list,
    completions: list[str],
    *,
    test: list | None = None,
    entry_point: list | None = None,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_procs: int = 16,
    workers: int | None = None,
    isolation: str = "auto",
    strict_results: bool = False,
    **kw,
) -> Scores:
    """1.0 where the completion passes its row's tests, 0.0 where it fails or holds no code,
    None where the row cannot be graded; len = completions.

    ``test[i]`` and ``entry_point[i]`` are completion i's row columns. Programs run in
    parallel, ``workers`` at a time (default: one per CPU), each limited to ``timeout_s``
    seconds of wall time, ``memory_mb`` of memory and ``max_procs`` processes and threads
    (where the machine can enforce it); ``isolation`` is "auto" (namespaces where the
    machine allows them), "bwrap" (namespaces or an error) or "rlimits" (no namespaces;
    see docs/howto/sandbox.md). ``strict_results``: the tests see only results of exact
    builtin types. The module's docstring gives the rule; completions with no code are
    in ``no_answer_at``. Raises KeyError naming the column when ``test`` or
    ``entry_point`` is not given (the prompts lack the column).
    """
    for name, column in (("test", test), ("entry_point", entry_point)):
        if column is None:
            given = {"test": test, "entry_point": entry_point}
            have = sorted([k for k in kw if k not in ("prompt_ids", "sample_indices")] + [k for k in given if given[k]])
            raise KeyError(
                f"verifier 'code' reads the columns 'test' and 'entry_point' (HumanEval's schema); the prompts "
                f"have no {name!r} (columns: {', '.join(have) or 'none'})"
            )
    assert test is not None and entry_point is not None
    values: list[float | None] = [0.0] * len(completions)
    programs: list[str] = []
    where: list[int] = []
    no_answer_at: list[int] = []
    for i, (prompt, completion, t, ep) in enumerate(zip(prompts, completions, test, entry_point, strict=True)):
        if not row_is_scorable(t, ep):
            values[i] = None
            continue
        program = build_program(prompt, completion, t, ep, strict_results=strict_results)
        if program is None:
            no_answer_at.append(i)
        else:
            programs.append(program)
            where.append(i)
    results = run_many(
        programs, timeout_s=timeout_s, memory_mb=memory_mb, max_procs=max_procs, workers=workers, isolation=isolation
    )
    for i, result in zip(where, results, strict=True):
        values[i] = 1.0 if result.status == "passed" else 0.0
    return Scores(values, no_answer_at=no_answer_at)
