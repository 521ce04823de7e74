"""Stages stream: on a run dir whose texts are far larger than the bound, score, select,
report and Best-of-N stay under it (each measured in a process of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_jsonl

from winnow.cli import main

PROMPTS, N, TEXT_BYTES = 40, 8, 250_000
"""80 MB of completion text: a stage that held it would grow by at least that much."""
BOUND_MB = 30

CHILD = r"""
import json, sys
import matplotlib.pyplot  # the report's plots: loaded before the baseline, a fixed cost
from winnow.config import ScoreConfig, SelectConfig
from winnow.report import run_report
from winnow.stages import score, select

def peak_kb():  # VmHWM: this process image's peak RSS (ru_maxrss would include the parent's before exec)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

run, what = sys.argv[1], sys.argv[2]
base = peak_kb()
if what == "score":
    score(run, ScoreConfig(reward_fn="length", shard_size=8))
elif what == "select":
    select(run, SelectConfig(strategy="top_k_overall", k=100, dedup=True, drop_truncated=True, pairs="best-worst"))
elif what == "bon":  # votes read every text of a prompt: the heavier of bon's two ways
    from winnow.pipeline import best_of_n
    best_of_n(run, aggregate="majority")
else:
    run_report(run, iters=50)
peak = peak_kb()
print(json.dumps({"grew_mb": (peak - base) / 1024}))
"""


def grew_mb(run: Path, stage: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(run), stage], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["grew_mb"]


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    return make_large(tmp_path_factory.mktemp("large"))


def make_large(d: Path) -> Path:
    """A run dir with a generate stage of PROMPTS x N completions of TEXT_BYTES each."""
    write_jsonl(d / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(PROMPTS)])
    words = [f"w{k}" for k in range(1000)]
    with open(d / "completions.jsonl", "w") as f:
        for i in range(PROMPTS):
            for j in range(N):
                # distinct texts (each its own rotation of the vocabulary), one repeat per prompt
                like = 0 if j == N - 1 else j
                start = (i * N + like) % len(words)
                text = " ".join(words[(start + k) % len(words)] for k in range(TEXT_BYTES // 5 + like))
                row = {"prompt_id": f"p{i}", "text": text, "finish_reason": "length" if j == 1 else "stop"}
                f.write(json.dumps(row) + "\n")
    args = ["import", "--completions", d / "completions.jsonl", "--prompts", d / "prompts.jsonl"]
    assert main([str(a) for a in [*args, "--run-dir", d / "run", "--shard-rows", 8]]) == 0
    (d / "completions.jsonl").unlink()
    return d / "run"


def test_score_select_report_bon_stay_under_the_bound_the_text_would_exceed(large):
    text_mb = sum(p.stat().st_size for p in (large / "generate").glob("shard-*.jsonl")) / 2**20
    assert text_mb > 2.4 * BOUND_MB
    grown = {stage: grew_mb(large, stage) for stage in ("score", "select", "report", "bon")}
    assert all(mb < BOUND_MB for mb in grown.values()), (grown, text_mb)
    manifest = json.loads((large / "select" / "manifest.json").read_text())
    assert manifest["num_selected"] == 100 and manifest["truncated_dropped"] == PROMPTS
    assert manifest["duplicates_removed"] == PROMPTS
    assert manifest["num_pairs"] == PROMPTS
    report = json.loads((large / "report" / "report.json").read_text())
    # 75 MB of text: distinct-n on a stated sample of what fits in 16 MiB; duplicates exact
    assert 0 < report["all"]["distinct_sample"] < 100 and report["all"]["duplicates"] == PROMPTS
    assert "distinct_sample" not in report["selected"] or report["selected"]["distinct_sample"] < 100
    assert (
        "Distinct-n computed on a uniform sample of completions (all: " in (large / "report" / "report.md").read_text()
    )
    best = [json.loads(line) for line in (large / "best.jsonl").read_text().splitlines()]
    assert [b["prompt_id"] for b in best] == [f"p{i}" for i in range(PROMPTS)]
    assert all(len(b["completion"]) > TEXT_BYTES * 0.9 for b in best)
    selected = (large / "select" / "selected.jsonl").read_text().splitlines()
    assert len(json.loads(selected[0])["completion"][0]["content"]) > TEXT_BYTES * 0.9
