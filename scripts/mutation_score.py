"""Score one mutmut run: called by scripts/mutation.sh from the run's scratch folder.

usage: python mutation_score.py NAME DOTTED_MODULE EQUIVALENT_MD SECONDS

Reads mutmut's results for DOTTED_MODULE (e.g. winnow.report.stats), takes out the mutants
listed as equivalent in EQUIVALENT_MD (lines "- `winnow.report.stats.x_fn__mutmut_N`: why"),
prints the survivors to stderr and one summary line to stdout:
    NAME  killed / scored  score%  equivalent  survivors  seconds
A timeout counts as killed (the mutant hung the tests: they noticed).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

KILLED = {1, 3, 36, 24, -24, 152, 255, 37}  # failed tests, pytest error, timeouts, type check


def equivalent_names(path: Path, dotted: str) -> set[str]:
    pattern = re.compile(rf"^\s*[-*]\s*`({re.escape(dotted)}\.x\S+?__mutmut_\d+)`")
    return {m.group(1) for line in path.read_text().splitlines() if (m := pattern.match(line))}


def main(label: str, dotted: str, equivalent_md: str, seconds: str) -> None:
    meta = json.loads(Path("mutants", *dotted.split(".")).with_suffix(".py.meta").read_text())
    results: dict[str, int | None] = meta["exit_code_by_key"]
    equivalent = equivalent_names(Path(equivalent_md), dotted)
    stale = sorted(name for name in equivalent if name in results and results[name] in KILLED)
    unknown = sorted(equivalent - results.keys())
    scored = {name: code for name, code in results.items() if name not in equivalent}
    killed = sum(code in KILLED for code in scored.values())
    survivors = sorted(name for name, code in scored.items() if code not in KILLED)
    for name in survivors:
        print(f"  survived ({results[name]}): mutmut show {name}", file=sys.stderr)
    for name in stale + unknown:
        print(f"  listed as equivalent but {'killed' if name in stale else 'not generated'}: {name}", file=sys.stderr)
    score = 100.0 * killed / len(scored) if scored else 100.0
    listed = len(equivalent & results.keys())
    print(
        f"{label:<10} {killed:>6} / {len(scored):<6}   {score:5.1f}%   {listed:>10}   {len(survivors):>9}   {seconds:>7}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
