"""Decontamination against eval files and near-dedup in the select stage: exact rows dropped,
the next-best taken instead, counts in the manifest and the report, resume, bad files."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import fails, make_run, read_rows, tree_digest, write_jsonl

from winnow.cli import main
from winnow.decontaminate import EvalIndex, minhash, shingles
from winnow.report import run_report

WORDS = [f"w{k}" for k in range(40)]
EVAL = " ".join(WORDS[:30])  # the eval item: w0 .. w29


def text(*spans: tuple[int, int], pad: str = "") -> str:
    """Words w[a:b] of each span, separated by an unrelated word so no n-gram crosses spans."""
    return f" zz{pad} ".join(" ".join(WORDS[a:b]) for a, b in spans)


# prompt -> [(text, tokens, finish, reward)]: p0's best holds a 13-gram of the eval item (w5..w17),
# p1's best only a 12-gram (w0..w11), p2's prompt is an eval item itself (plain-text file, below)
SAMPLES = {
    "p0": [
        (f"so {text((5, 18))} ok", 9, "stop", 0.9),
        ("a clean answer", 3, "stop", 0.5),
        (f"{text((10, 23))}", 9, "stop", 0.7),
    ],
    "p1": [(f"{text((0, 12))} then", 9, "stop", 0.8), ("another answer", 2, "stop", 0.1), ("x", 1, "stop", 0.0)],
    "p2": [("fine", 1, "stop", 0.3), ("fine too", 2, "stop", 0.2), ("y", 1, "stop", 0.1)],
}


@pytest.fixture
def run(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", [{"id": "e1", "question": "what now?", "answer": EVAL}])
    (tmp_path / "more.txt").write_text("unrelated line\n\nsay something about p2 please\n")
    return make_run(tmp_path / "run", SAMPLES)


def select(run, *extra: str) -> int:
    return main(["select", "--run-dir", str(run), *extra])


def test_a_13_gram_drops_the_row_a_12_gram_does_not_and_the_next_best_is_taken(run, capsys):
    evals = run.parent / "evals.jsonl"
    assert select(run, "--decontaminate", str(evals)) == 0
    assert "(left out: 0 contaminated prompts, 2 contaminated completions) ->" in capsys.readouterr().out
    picked = [(r["prompt_id"], r["sample_index"]) for r in read_rows(run / "select" / "selected.jsonl")]
    # p0: samples 0 and 2 hold 13-grams; the clean sample 1 (0.5) is taken. p1: a 12-gram stays.
    assert picked == [("p0", 1), ("p1", 0), ("p2", 0)]
    manifest = json.loads((run / "select" / "manifest.json").read_text())
    assert (manifest["contaminated_prompts"], manifest["contaminated_completions"]) == (0, 2)
    assert manifest["contamination_matches"] == [
        {"prompt_id": "p0", "sample_index": 0, "eval_item": f"{evals}:1", "ngram": " ".join(WORDS[5:18])},
        {"prompt_id": "p0", "sample_index": 2, "eval_item": f"{evals}:1", "ngram": " ".join(WORDS[10:23])},
    ]


def test_a_prompt_in_a_plain_text_eval_file_drops_the_whole_prompt(run):
    more = run.parent / "more.txt"
    assert select(run, "--decontaminate", str(more), "--decontaminate-ngram", "4") == 0
    picked = [(r["prompt_id"], r["sample_index"]) for r in read_rows(run / "select" / "selected.jsonl")]
    assert picked == [("p0", 0), ("p1", 0)]
    manifest = json.loads((run / "select" / "manifest.json").read_text())
    assert (manifest["contaminated_prompts"], manifest["contaminated_completions"]) == (1, 0)
    assert manifest["contamination_matches"] == [
        {"prompt_id": "p2", "sample_index": None, "eval_item": f"{more}:3", "ngram": "say something about p2"}
    ]


# 24 distinct words give 20 five-shingles. Changing the last word keeps 19 of 21: Jaccard 19/21
# = 0.905; changing the middle word (index 12) touches 5 shingles: 15 shared of 25, Jaccard 0.6.
BASE = [f"v{k}" for k in range(24)]
NEAR = " ".join(BASE[:-1] + ["other"])
FAR = " ".join(BASE[:12] + ["other"] + BASE[13:])


def jaccard(a: str, b: str) -> float:
    sa, sb = set(shingles(a)), set(shingles(b))
    return len(sa & sb) / len(sa | sb)


def test_near_duplicates_above_the_threshold_are_dropped_below_kept(tmp_path):
    assert jaccard(" ".join(BASE), NEAR) == pytest.approx(19 / 21) and jaccard(" ".join(BASE), FAR) == 0.6
    assert minhash(" ".join(BASE)).jaccard(minhash(NEAR)) >= 0.8 > minhash(" ".join(BASE)).jaccard(minhash(FAR))
    samples = {
        "p0": [(" ".join(BASE), 24, "stop", 0.9), ("short one", 2, "stop", 0.1)],
        "p1": [(NEAR, 24, "stop", 0.9), ("a different reply", 3, "stop", 0.4)],
        "p2": [(FAR, 24, "stop", 0.9), ("y", 1, "stop", 0.2)],
        "p3": [(NEAR, 24, "stop", 0.9), (" ".join(BASE), 24, "stop", 0.8)],  # no clean candidate left
    }
    run = make_run(tmp_path / "run", samples)
    assert select(run, "--near-dedup") == 0
    picked = [(r["prompt_id"], r["sample_index"]) for r in read_rows(run / "select" / "selected.jsonl")]
    # p1's best is like p0's: its next-best is taken; p2's (Jaccard 0.6) stays; p3 has none left
    assert picked == [("p0", 0), ("p1", 1), ("p2", 0)]
    manifest = json.loads((run / "select" / "manifest.json").read_text())
    assert manifest["near_duplicates_removed"] == 3
    assert [(m["prompt_id"], m["sample_index"], m["like_prompt_id"]) for m in manifest["near_duplicate_matches"]] == [
        ("p1", 0, "p0"),
        ("p3", 0, "p0"),
        ("p3", 1, "p0"),
    ]
    md = (run_report(run, iters=50, out_dir=tmp_path / "rep"), (tmp_path / "rep" / "report.md").read_text())[1]
    assert "Near-duplicates (Jaccard >= 0.8): 3 selected completions dropped" in md
    assert "- p1 sample 0 is like p0 sample 0 (Jaccard " in md


def test_report_shows_counts_and_matches(run, tmp_path):
    evals = run.parent / "evals.jsonl"
    assert select(run, "--decontaminate", str(evals)) == 0
    r = run_report(run, iters=50, out_dir=tmp_path / "rep")
    assert (r["selection"]["contaminated_prompts"], r["selection"]["contaminated_completions"]) == (0, 2)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Decontaminated (13-grams shared with an eval item): 0 prompts and 2 further completions left out." in md
    assert f'- p0 sample 0 shares "{" ".join(WORDS[5:18])}" with {evals}:1' in md


def test_rerun_and_a_fresh_copy_give_identical_files_and_a_changed_eval_file_refuses(run, capsys):
    evals = run.parent / "evals.jsonl"
    args = ("--decontaminate", str(evals), "--near-dedup")
    shutil.copytree(run, run.parent / "copy")
    assert select(run, *args) == 0
    first = tree_digest(run / "select")
    assert select(run, *args) == 0 and tree_digest(run / "select") == first
    (run / "select" / "manifest.json").unlink()  # as if killed before the manifest
    assert select(run, *args) == 0 and tree_digest(run / "select") == first
    assert select(run.parent / "copy", *args) == 0 and tree_digest(run.parent / "copy" / "select") == first
    capsys.readouterr()
    evals.write_text(evals.read_text() + json.dumps({"text": "one more item"}) + "\n")
    fails(["select", "--run-dir", str(run), *args], capsys, "changed config", "eval_sha256", one_error=True)


def test_a_missing_eval_file_is_one_line_before_any_work(run, capsys):
    fails(["select", "--run-dir", str(run), "--decontaminate", "nope.jsonl"], capsys, "nope.jsonl", one_error=True)
    assert not (run / "select").exists()


def test_a_bad_eval_row_names_file_line_and_field(run, capsys):
    bad = run.parent / "bad.jsonl"
    write_jsonl(bad, [{"question": "fine"}, {"question": 3}])
    fails(
        ["select", "--run-dir", str(run), "--decontaminate", str(bad)],
        capsys,
        f"{bad}:2: field 'question': must be a string",
        one_error=True,
    )
    write_jsonl(bad, [{"id": "only an id"}])
    fails(
        ["select", "--run-dir", str(run), "--decontaminate", str(bad)], capsys, f"{bad}:1: no eval text", one_error=True
    )


def test_eval_ngrams_are_held_as_hashes():
    index = EvalIndex.build([], 13)
    assert index.hashes.dtype.name == "uint64" and index.find(EVAL) is None
