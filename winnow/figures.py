"""Recorded figures: what each demo measured, per CPU capability, and the checks against them.

A demo's figures are deterministic on one machine: every draw is seeded. They still depend on
what the arithmetic runs on: torch picks its CPU kernels by instruction set (AVX2, AVX512),
and a different rounding of the logits samples different tokens from there on; the thread
count splits reductions differently; torch and transformers change kernels and sampling
code between versions. So a figure is recorded per CPU capability, with the machine that
made it, in ``figures/<demo>/<CAPABILITY>.json`` (``scripts/record_figures.py`` writes them,
the docs and README show them, CI checks the demos against them):

- ``provenance: "run"``: written by the record command from the demo's ``report.json``,
  with the commit, the command, the machine and its wall time;
- ``provenance: "copied"``: figures stated by the docs before anything recorded them, from
  an earlier commit; kept as what is known, checked by no one, replaced by the first run
  on that capability.

The check: where a ``run`` record exists for this capability, every figure equals it
exactly (as recorded: floats rounded to ``DIGITS``); elsewhere, only what holds on any
machine: every gain's 95% interval lies above zero, and the headline figures sit within
``BAND`` of each recorded capability's.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent / "figures"
"""Where the records live: ``figures/`` of the repository (absent from an installed package)."""
DIGITS = 6
"""Floats are recorded and compared rounded to this many decimals."""
BAND = {"share": 0.10, "count": 0.20}
"""Where no record exists for a capability: a reward, pass rate or gain may differ from a recorded
capability's by at most 0.10 (absolute), a count (samples, prompts passing) by at most 20%
(relative): wide enough for the move from one CPU capability to another, which the records
show, narrow enough to catch a demo that stopped working."""


def machine() -> dict:
    """What a demo's figures depend on besides the seeds: the CPU's instruction set as torch
    uses it, torch's thread count, and the library versions."""
    import torch

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{name: _version(name) for name in ("torch", "transformers", "trl", "numpy")},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def depends_on(m: dict, seeds: dict) -> str:
    """One line saying what the figures depend on.

    >>> depends_on({"cpu_capability": "AVX2", "torch_threads": 2, "torch": "2.13.0", "transformers": "5.24.0"},
    ...            {"train": 0, "held-out": 1})
    'figures depend on: seeds train 0, held-out 1; CPU capability AVX2; 2 torch threads; torch 2.13.0, transformers 5.24.0'
    """
    return (
        "figures depend on: seeds "
        + ", ".join(f"{k} {v}" for k, v in seeds.items())
        + f"; CPU capability {m['cpu_capability']}; {m['torch_threads']} torch threads"
        + f"; torch {m['torch']}, transformers {m['transformers']}"
    )


def _rounded(value):
    return round(value, DIGITS) if isinstance(value, float) else value


def vader_figures(report: dict) -> dict:
    """The figures of ``winnow demo`` (any ``--rounds``), flat: mean rewards, gains, training rewards."""
    out = {f"mean_reward {name}": v for name, v in report["mean_reward"].items()}
    for g in report["gains"]:
        name = f"{g['after']} over {g['before']}"
        out[f"gain {name}"] = g["gain"]
        out[f"gain {name} ci95 low"], out[f"gain {name} ci95 high"] = g["ci95"]
    out["train_mean_reward"] = report["train_mean_reward"]
    out["train_mean_best_reward"] = report["train_mean_best_reward"]
    out["heldout_prompts"] = report["heldout_prompts"]
    out["samples_per_prompt"] = report["samples_per_prompt"]
    return {k: _rounded(v) for k, v in out.items()}


def constraints_figures(report: dict) -> dict:
    """The figures of ``winnow demo --task constraints``, flat: pass rates, gain, what sampling spent."""
    out = {f"pass_at_1 {name}": v for name, v in report["pass_at_1"].items()}
    out["gain"] = report["gain"]
    out["gain ci95 low"], out["gain ci95 high"] = report["gain_ci95"]
    t = report["train"]
    for key in ("prompts", "samples", "fixed_samples", "prompts_with_a_pass", "selected", "tokens"):
        out[f"train {key}"] = t[key]
    out |= {f"train pass@{k}": v for k, v in t["pass_at_k"].items() if v is not None}
    for name, families in report["pass_at_1_by_family"].items():
        out |= {f"pass_at_1 {name} {family}": v for family, v in families.items()}
    return {k: _rounded(v) for k, v in out.items()}


@dataclass(frozen=True)
class Demo:
    argv: tuple[str, ...]
    """The ``winnow`` arguments that run it (a run dir is added)."""
    figures: Callable[[dict], dict]
    """report.json -> the flat figures recorded and compared."""
    headline: tuple[str, ...]
    """Figures held within ``BAND`` where no record exists for the capability."""


DEMOS = {
    "demo": Demo(
        ("demo",),
        vader_figures,
        ("mean_reward start", "mean_reward round 1", "gain round 1 over start"),
    ),
    "demo-rounds-2": Demo(
        ("demo", "--rounds", "2"),
        vader_figures,
        ("mean_reward start", "mean_reward round 1", "mean_reward round 2", "gain round 2 over start"),
    ),
    "demo-constraints": Demo(
        ("demo", "--task", "constraints"),
        constraints_figures,
        ("pass_at_1 start", "pass_at_1 fine-tuned", "gain", "train samples", "train prompts_with_a_pass"),
    ),
}
"""Each recorded demo, by the name of its folder under ``figures/``."""


def command(name: str) -> str:
    return "winnow " + " ".join(DEMOS[name].argv)


def records(name: str, folder: Path = FOLDER) -> dict[str, dict]:
    """Every record of one demo, by CPU capability ({} where none or no folder)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / name).glob("*.json"))}


def gain_intervals(figures: dict) -> dict[str, float]:
    """Each gain's lower 95% end, by the gain's key."""
    return {k.removesuffix(" ci95 low"): v for k, v in figures.items() if k.endswith("ci95 low")}


def check(name: str, report: dict, capability: str, folder: Path = FOLDER) -> tuple[str, list[str]]:
    """A demo's report against the records: (verdict, one line per problem).

    verdict: ``"exact"`` (a run record for this capability exists: every figure compared),
    ``"new"`` (none: the claims that hold anywhere were checked). Problems empty: it passed.
    """
    got = DEMOS[name].figures(report)
    found = records(name, folder)
    mine = found.get(capability)
    if mine is not None and mine["provenance"] == "run":
        want = mine["figures"]
        problems = [
            f"{name}: {key}: recorded {want.get(key)!r} ({capability}, commit {mine['commit'][:12]}), got {got.get(key)!r}"
            for key in sorted(set(want) | set(got))
            if want.get(key) != got.get(key)
        ]
        if problems:
            problems += _moved(mine["machine"], report.get("machine") or {})
        return "exact", problems
    problems = [
        f"{name}: {key}: 95% interval reaches {low:+.3f}, not above zero"
        for key, low in gain_intervals(got).items()
        if low <= 0
    ]
    for cap, rec in found.items():
        for key in DEMOS[name].headline:
            if key in rec["figures"] and key in got and not _within(got[key], rec["figures"][key]):
                problems.append(
                    f"{name}: {key}: {got[key]!r} is outside the band around {cap}'s {rec['figures'][key]!r}"
                )
    return "new", problems


def _within(got, want) -> bool:
    """Within ``BAND``: counts (ints) relatively, shares and rewards absolutely.

    >>> _within(464, 426), _within(600, 426), _within(0.379, 0.409), _within(0.649, 0.80)
    (True, False, True, False)
    """
    if isinstance(want, int):
        return abs(got - want) <= BAND["count"] * abs(want)
    return abs(got - want) <= BAND["share"]


def _moved(recorded: dict, now: dict) -> list[str]:
    """What the figures depend on that differs from the record's machine: a likely cause."""
    keys = ("torch_threads", "torch", "transformers", "trl", "numpy")
    return [
        f"  differs from the record's machine: {k} {recorded.get(k)} -> {now.get(k)}"
        for k in keys
        if recorded.get(k) != now.get(k)
    ]


def record(
    name: str, report: dict, *, commit: str, dirty: bool, date: str, wall_seconds: float, folder: Path = FOLDER
) -> Path:
    """Write ``figures/<name>/<CAPABILITY>.json`` from a demo's report (the capability from its machine)."""
    from winnow.records import atomic_write_json

    m = report["machine"]
    path = folder / name / f"{m['cpu_capability']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path,
        {
            "demo": name,
            "command": command(name),
            "capability": m["cpu_capability"],
            "provenance": "run",
            "commit": commit,
            "dirty": dirty,
            "date": date,
            "machine": m,
            "wall_seconds": round(wall_seconds, 1),
            "figures": DEMOS[name].figures(report),
            "report": report,
        },
    )
    return path


def against_records(name: str, report: dict, folder: Path = FOLDER) -> str | None:
    """What a demo prints after its results: how they compare with the record for this machine's
    capability (None outside a repository checkout, where no records are)."""
    if name not in DEMOS or not folder.is_dir():
        return None
    report = json.loads(json.dumps(report))  # as report.json holds it (string keys)
    capability = report["machine"]["cpu_capability"]
    found = records(name, folder)
    sizes = {rec["report"]["heldout_prompts"] for rec in found.values() if "report" in rec}
    if sizes and report["heldout_prompts"] not in sizes:  # --quick: a smoke run, not the measurement
        return None
    verdict, problems = check(name, report, capability, folder)
    if verdict == "new":
        known = ", ".join(sorted(found)) or "none"
        return f"no run recorded on {capability} yet (recorded: {known}); scripts/record_figures.py records one"
    commit = found[capability]["commit"][:12]
    if not problems:
        return f"the figures recorded on {capability} (commit {commit}): these, exactly"
    return f"{len(problems)} figures differ from those recorded on {capability} (commit {commit}): " + problems[0]
