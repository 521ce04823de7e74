"""Recorded figures: a demo's figures checked against its record, and the README and docs
stating figures only through the records (``winnow.figures``, ``scripts/record_figures.py``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import import_file

from winnow import demo, figures

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "c0ffee" * 6 + "c0ff"


def docs_hooks():
    return import_file(ROOT / "scripts" / "docs_hooks.py")


def quick_demo(run_dir: Path, policy: Path, monkeypatch, **train) -> dict:
    """``winnow demo --quick`` on the tiny policy, as report.json holds it; ``train`` changes a
    sampling detail of the training prompts' generate config. VADER scores the tiny model's
    random words 0 whatever it samples: the length reward sees every changed token."""
    from winnow.config import ScoreConfig

    monkeypatch.setattr(demo, "SMOLLM2", str(policy))
    monkeypatch.setattr(demo, "ScoreConfig", lambda **kw: ScoreConfig(**{**kw, "reward_fn": "length"}))
    monkeypatch.setattr(demo, "TRAIN", {**demo.TRAIN, **train})
    demo.run_demo(run_dir, quick=True)
    return json.loads((run_dir / "report.json").read_text())


def test_a_changed_sampling_detail_fails_the_exact_check_and_a_rerun_passes_it(
    tmp_path, tiny_policy, monkeypatch, one_thread
):
    recorded = quick_demo(tmp_path / "a", tiny_policy, monkeypatch)
    capability = recorded["machine"]["cpu_capability"]
    folder = tmp_path / "figures"
    path = figures.record(
        "demo", recorded, commit=COMMIT, dirty=False, date="2026-12-07", wall_seconds=1.0, folder=folder
    )
    assert path == folder / "demo" / f"{capability}.json"
    assert json.loads(path.read_text())["figures"] == figures.vader_figures(recorded)

    again = quick_demo(tmp_path / "b", tiny_policy, monkeypatch)
    assert figures.check("demo", again, capability, folder) == ("exact", [])

    moved = quick_demo(tmp_path / "c", tiny_policy, monkeypatch, temperature=0.7)
    verdict, problems = figures.check("demo", moved, capability, folder)
    want, got = figures.vader_figures(recorded), figures.vader_figures(moved)
    differing = sorted(k for k in want if want[k] != got[k])
    assert verdict == "exact" and "train_mean_reward" in differing
    assert problems == [
        f"demo: {k}: recorded {want[k]!r} ({capability}, commit c0ffeec0ffee), got {got[k]!r}" for k in differing
    ]


def report_of(figs: dict, cap: str = "AVX512") -> dict:
    """A minimal VADER report with the given mean rewards and gain."""
    return {
        "mean_reward": {"start": figs["start"], "round 1": figs["round 1"]},
        "gains": [{"before": "start", "after": "round 1", "gain": figs["gain"], "ci95": figs["ci95"]}],
        "train_mean_reward": 0.3,
        "train_mean_best_reward": 0.8,
        "heldout_prompts": 32,
        "samples_per_prompt": 8,
        "machine": {"cpu_capability": cap},
    }


def write_record(folder: Path, cap: str, figs: dict, provenance: str = "run") -> None:
    (folder / "demo").mkdir(parents=True, exist_ok=True)
    rec = {"provenance": provenance, "commit": COMMIT, "machine": {}, "figures": figures.vader_figures(report_of(figs))}
    (folder / "demo" / f"{cap}.json").write_text(json.dumps(rec))


AVX2 = {"start": 0.246, "round 1": 0.409, "gain": 0.163, "ci95": [0.084, 0.24]}


def test_a_new_capability_is_held_to_the_claims_that_hold_anywhere(tmp_path):
    write_record(tmp_path, "AVX2", AVX2)
    near = report_of({"start": 0.198, "round 1": 0.379, "gain": 0.181, "ci95": [0.103, 0.265]})
    assert figures.check("demo", near, "AVX512", tmp_path) == ("new", [])

    far = report_of({"start": 0.198, "round 1": 0.2, "gain": 0.002, "ci95": [-0.05, 0.06]})
    assert figures.check("demo", far, "AVX512", tmp_path) == (
        "new",
        [
            "demo: gain round 1 over start: 95% interval reaches -0.050, not above zero",
            "demo: mean_reward round 1: 0.2 is outside the band around AVX2's 0.409",
            "demo: gain round 1 over start: 0.002 is outside the band around AVX2's 0.163",
        ],
    )


def test_a_copied_record_is_not_held_exactly_a_run_record_is(tmp_path):
    write_record(tmp_path, "AVX2", AVX2, provenance="copied")
    near = report_of({"start": 0.25, "round 1": 0.4, "gain": 0.15, "ci95": [0.07, 0.23]}, cap="AVX2")
    assert figures.check("demo", near, "AVX2", tmp_path) == ("new", [])
    write_record(tmp_path, "AVX2", AVX2)
    verdict, problems = figures.check("demo", near, "AVX2", tmp_path)
    assert verdict == "exact"
    assert problems[0] == "demo: gain round 1 over start: recorded 0.163 (AVX2, commit c0ffeec0ffee), got 0.15"


def test_the_demo_prints_how_its_figures_compare_with_the_record(tmp_path):
    write_record(tmp_path, "AVX2", AVX2)
    same = report_of(AVX2, cap="AVX2")
    assert figures.against_records("demo", same, tmp_path) == (
        "the figures recorded on AVX2 (commit c0ffeec0ffee): these, exactly"
    )
    assert figures.against_records("demo", report_of(AVX2, cap="AVX512"), tmp_path) == (
        "no run recorded on AVX512 yet (recorded: AVX2); scripts/record_figures.py records one"
    )
    assert figures.against_records("demo", same, tmp_path / "absent") is None
    rec = json.loads((tmp_path / "demo" / "AVX2.json").read_text())
    (tmp_path / "demo" / "AVX2.json").write_text(json.dumps({**rec, "report": same}))
    assert figures.against_records("demo", {**same, "heldout_prompts": 4}, tmp_path) is None  # --quick


def test_every_recorded_demo_has_records_and_each_run_record_its_provenance():
    for name in figures.DEMOS:
        found = figures.records(name)
        assert found, name
        for cap, rec in found.items():
            assert rec["capability"] == cap and rec["command"] == figures.command(name)
            if rec["provenance"] == "run":
                assert re.fullmatch(r"[0-9a-f]{40}", rec["commit"]) and rec["machine"]["cpu_capability"] == cap
                assert rec["figures"] == figures.DEMOS[name].figures(rec["report"])
            else:
                assert rec["provenance"] == "copied" and "earlier" in rec["note"]


def test_the_readme_states_the_recorded_figures():
    text = (ROOT / "README.md").read_text()
    assert "<!-- winnow:figures demo -->" in text and "<!-- winnow:figures constraints -->" in text
    assert docs_hooks().fill_blocks(text) == text, "README.md is stale: python scripts/record_figures.py readme"


def recorded_numbers() -> set[str]:
    """Every recorded rate, reward or gain as a page would print it (3 decimals); 0 and 1 are
    left out: pages state them for other reasons (a verdict, a bound)."""
    out = set()
    for name in figures.DEMOS:
        for rec in figures.records(name).values():
            out |= {f"{abs(v):.3f}" for v in rec["figures"].values() if isinstance(v, float)}
    return out - {"0.000", "1.000"}


def test_no_page_types_a_recorded_figure_outside_a_generated_table():
    numbers = recorded_numbers()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    found = []
    for page in pages:
        text = docs_hooks().BLOCK.sub("", page.read_text())
        # a JSON excerpt shows a file's fields (a manifest's match, a Jaccard), never a demo's figure
        text = re.sub(r"```json\n.*?```", "", text, flags=re.S)
        found += [f"{page.relative_to(ROOT)}: {n}" for n in re.findall(r"\d\.\d{3}", text) if n in numbers]
    assert found == []


def test_readme_check_says_the_readme_is_up_to_date(tmp_path):
    script = [sys.executable, str(ROOT / "scripts" / "record_figures.py"), "readme", "--check"]
    done = subprocess.run(script, capture_output=True, text=True, cwd=ROOT)
    assert (done.returncode, done.stdout) == (0, "README.md's figures are the recorded ones\n")


def test_an_unknown_demo_is_refused_in_one_line():
    script = [sys.executable, str(ROOT / "scripts" / "record_figures.py"), "check", "demo-nope"]
    done = subprocess.run(script, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "record_figures.py: error: no demo 'demo-nope': one of demo, demo-rounds-2, demo-constraints"
    )


@pytest.mark.parametrize("table", ["demo", "constraints", "constraints-families"])
def test_each_table_has_a_column_per_recorded_capability(table):
    hooks = docs_hooks()
    demos = {demo for _, demo, _ in hooks.TABLES[table][1]}
    caps = sorted({c for d in demos for c in figures.records(d)})
    header = hooks.figures_table(table).splitlines()[0]
    assert sorted(header.strip("| ").split(" | ")[1:]) == caps
