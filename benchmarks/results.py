"""What a benchmark's ``main(argv)`` hands ``run_all.py``, and the table of checks it prints.

A check row is ``{check, measured, target, passed, detail}``. ``passed`` is None where a row
has no target or the run is a smoke run (``--quick``: small sizes measure nothing), so a
benchmark passes when no row failed:

>>> rows = checks([("speed-up", 2.5, ">= 2", True), ("memory (GB)", 7.0, "<= 6", False)], quick=True)
>>> result("example", rows, seconds=1.0)["passed"], rows[1]["passed"]
(True, None)
>>> print_checks(rows, detail=False)
<BLANKLINE>
| check | measured | target | result |
|---|---:|---|---|
| speed-up | 2.5 | >= 2 | - |
| memory (GB) | 7 | <= 6 | - |
"""

from __future__ import annotations


def check(name: str, measured: float, target: str, passed: bool | None, detail: str = "") -> dict:
    """One row of the checks table; ``target`` as the table shows it (``">= 2"``, ``"-"``)."""
    return {"check": name, "measured": measured, "target": target, "passed": passed, "detail": detail}


def checks(rows: list[tuple[str, float, str, bool]], *, quick: bool) -> list[dict]:
    """Rows from (name, measured, target, met) tuples; under ``quick`` none is judged."""
    return [check(name, value, target, None if quick else ok) for name, value, target, ok in rows]


def print_checks(rows: list[dict], *, title: str | None = None, detail: bool = True) -> None:
    """The checks as a Markdown table after a blank line (under a ``### title`` heading when
    given): PASS, FAIL, or "-" for an unjudged row; ``detail=False`` leaves the detail column out."""
    if title:
        print(f"\n### {title}")
    head = "| check | measured | target | result |" + (" detail |" if detail else "")
    print(f"\n{head}\n|---|---:|---|---|" + ("---|" if detail else ""))
    for r in rows:
        result = "-" if r["passed"] is None else "PASS" if r["passed"] else "FAIL"
        cells = f"| {r['check']} | {r['measured']:.3g} | {r['target']} | {result} |"
        print(cells + (f" {r['detail']} |" if detail else ""))


def result(benchmark: str, rows: list[dict], **extra) -> dict:
    """``main``'s return: the benchmark's name, its check rows, whether none failed, and
    ``extra`` (its own figures, for ``run_all.py --json``)."""
    return {"benchmark": benchmark, "rows": rows, "passed": all(r["passed"] is not False for r in rows), **extra}
