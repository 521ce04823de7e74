"""End to end: wall time and peak memory of `winnow demo`, step by step.

Runs the demo in a child process (a fresh run dir, so nothing is resumed; the converted
model cache is reused, as on any machine after the first run) and reads its report.
Targets from the demo's spec: <= 15 minutes on 2 CPU cores, peak memory <= 6 GB, and a
gain whose bootstrap 95% interval excludes zero.

    python benchmarks/bench_demo.py [--quick] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import check, print_checks, result

MAX_SECONDS = 15 * 60
MAX_MEMORY_MB = 6 * 1024


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's --quick smoke size (no targets)")
    parser.add_argument("--run-dir", help="where the demo writes (default: a temp folder)")
    parser.add_argument("--rounds", type=int, default=1, help="the demo's --rounds (default 1)")
    args = parser.parse_args(argv)

    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="winnow-bench-demo-"))
    cmd = [sys.executable, "-m", "winnow", "demo", "--run-dir", str(run_dir), "--rounds", str(args.rounds)]
    cmd += ["--quick"] if args.quick else []
    start, cpu_start = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    report = json.loads((run_dir / "report.json").read_text())

    print("\n## End to end: `winnow demo`\n")
    print("| step | wall seconds | CPU seconds | peak memory (MB) |\n|---|---:|---:|---:|")
    for step, seconds in report["seconds"].items():
        cpu_step = report["cpu_seconds"][step]
        print(f"| {step} | {seconds:.1f} | {cpu_step:.1f} | {report['peak_memory_mb_by_step'].get(step) or 0:.0f} |")
    print(
        f"| **whole command** (process start to exit) | **{wall:.1f}** | **{cpu:.1f}** | **{report['peak_memory_mb']}** |"
    )
    for g in report["gains"]:
        print(f"\n{g['after']} over {g['before']}: {g['gain']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]", end="")
    print("\nmean held-out reward: " + ", ".join(f"{k} {v:.3f}" for k, v in report["mean_reward"].items()))
    low, high = report["gain_ci95"]
    rows = [
        check(
            "demo wall time, whole command",
            wall / 60,
            "<= 15 min",
            wall <= MAX_SECONDS,
            f"{wall:.0f} s, CPU {cpu:.0f} s",
        ),
        check(
            "demo peak memory",
            report["peak_memory_mb"] / 1024,
            "<= 6 GB",
            report["peak_memory_mb"] <= MAX_MEMORY_MB,
            f"{report['peak_memory_mb']} MB",
        ),
        check(
            "demo gain, lower end of the 95% CI",
            low,
            "> 0",
            low > 0,
            f"gain {report['gain']:+.3f} [{low:+.3f}, {high:+.3f}]",
        ),
    ]
    if args.quick:  # a smoke run measures nothing
        for r in rows:
            r["passed"] = None
    print_checks(rows)
    return result("demo", rows, wall_seconds=wall, cpu_seconds=cpu, report=report)


def _children_cpu() -> float:
    """User + system seconds of finished child processes (the demo, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
