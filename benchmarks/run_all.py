"""Run every benchmark and print one table of all checks.

    python benchmarks/run_all.py            # full sizes (about 20 minutes on 2 CPU cores)
    python benchmarks/run_all.py --quick    # smoke sizes (a few minutes; targets not meaningful)
    python benchmarks/run_all.py --only adaptive --json figures/benchmarks   # also a result file per benchmark

Each ``bench_*.py`` has ``main(argv) -> {"benchmark", "rows": [{check, measured, target,
passed, detail}], "passed"}`` (``results.py``) and prints its own detailed tables; this
script runs them one after another (never concurrently: they time the same cores) and summarises.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))

import bench_adaptive
import bench_decontaminate
import bench_demo
import bench_fallback
import bench_generate
import bench_images
import bench_ray
import bench_score
import bench_select
import bench_serve
import bench_test_time
import bench_verifier_agreement
import bench_verifiers

BENCHMARKS = {
    "select": bench_select,
    "score": bench_score,
    "generate": bench_generate,
    "serve": bench_serve,
    "fallback": bench_fallback,
    "ray": bench_ray,
    "demo": bench_demo,
    "verifiers": bench_verifiers,
    "agreement": bench_verifier_agreement,
    "adaptive": bench_adaptive,
    "decontaminate": bench_decontaminate,
    "test_time": bench_test_time,
    "images": bench_images,
    "packing": SimpleNamespace(main=lambda argv: bench_score.main(["--packing", *argv])),
}
"""name -> a module (or namespace) whose ``main(argv)`` runs it; ``packing`` is bench_score.py --packing."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes")
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run just these")
    parser.add_argument(
        "--json",
        metavar="FOLDER",
        help="write FOLDER/<benchmark>.json: its rows with the commit, machine, date and command",
    )
    args = parser.parse_args(argv)

    import numpy
    import torch
    import transformers

    print(f"# winnow benchmarks, {date.today()}\n")
    print(
        f"machine: {platform.machine()}, {_cpus()} CPU cores, {platform.system()} | python {platform.python_version()}"
        f" | numpy {numpy.__version__} | torch {torch.__version__} | transformers {transformers.__version__}"
        f" | CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    results = {}
    for name in args.only or BENCHMARKS:
        start = time.perf_counter()
        results[name] = BENCHMARKS[name].main(["--quick"] if args.quick else [])
        seconds = time.perf_counter() - start
        print(f"\n({name}: {seconds:.0f} s)")
        if args.json:
            _write_json(Path(args.json) / f"{name}.json", name, results[name], seconds, args.quick)

    print("\n## Summary\n\n| benchmark | check | measured | target | result |\n|---|---|---:|---|---|")
    for name, result in results.items():
        for r in result["rows"]:
            status = "-" if r["passed"] is None else "PASS" if r["passed"] else "FAIL"
            print(f"| {name} | {r['check']} | {r['measured']:.3g} | {r['target']} | {status} |")
    failed = [r["check"] for res in results.values() for r in res["rows"] if r["passed"] is False]
    print(f"\n{len(failed)} target(s) missed" + (": " + "; ".join(failed) if failed else ""))
    return 1 if failed and not args.quick else 0


def _write_json(path: Path, name: str, result: dict, seconds: float, quick: bool) -> None:
    """A benchmark's result as a record: what ran, where, at which commit (``winnow.figures.machine``)."""
    import subprocess

    from winnow.figures import machine
    from winnow.records import atomic_write_json

    git = ["git", "-C", str(Path(__file__).parent)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run([*git, "status", "--porcelain", "--", "winnow"], capture_output=True, text=True).stdout)
    path.parent.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/run_all.py --only {name}" + (" --quick" if quick else "")
    record = {"benchmark": name, "command": command, "commit": commit, "dirty": dirty, "date": date.today().isoformat()}
    atomic_write_json(path, {**record, "machine": machine(), "wall_seconds": round(seconds, 1), "result": result})


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
