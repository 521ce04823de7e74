"""The CLI end to end on a tiny model, the chapter's example, and every bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CHAPTER, fails, gen_args, write_jsonl

from winnow.cli import main

# The chapter's 5 x 4 reward matrix, served by prompt_id and sample_index.
REWARD_FILE = f"""
R = {CHAPTER!r}

def chapter(prompts, completions, prompt_ids, sample_indices, **kw):
    return [R[int(p[1:])][j] for p, j in zip(prompt_ids, sample_indices, strict=True)]

def boom(prompts, completions, **kw):
    raise RuntimeError("reward server down")

def short(prompts, completions, **kw):
    return [0.0] * (len(completions) - 1)

def words(prompts, completions, **kw):
    return ["good"] * len(completions)
"""


WORKDIR_FILES = {"rewards.py": REWARD_FILE}


def selected_pairs(path: Path) -> list[tuple[str, int, float]]:
    return [(r["prompt_id"], r["sample_index"], r["reward"]) for r in map(json.loads, path.read_text().splitlines())]


def chapter_runs(workdir: Path, model: Path) -> tuple[Path, Path]:
    """Two copies of a run dir generated (5 prompts x 4) and scored with the chapter's matrix."""
    run, other = workdir / "run", workdir / "run2"
    assert main(gen_args(workdir, model)) == 0
    assert main(["score", "--run-dir", str(run), "--reward-fn", f"{workdir}/rewards.py:chapter"]) == 0
    shutil.copytree(run, other)
    return run, other


def test_chapter_example_through_the_cli(workdir, tiny_policy):
    run, other = chapter_runs(workdir, tiny_policy)
    assert main(["select", "--run-dir", str(run), "--strategy", "top_k_overall", "--k", "5"]) == 0
    # flattened order 8, 5, 14, 0, 11 -> (row, column) = divmod(index, 4)
    assert selected_pairs(run / "select/selected.jsonl") == [
        ("p2", 0, 0.9),
        ("p1", 1, 0.8),
        ("p3", 2, 0.8),
        ("p0", 0, 0.7),
        ("p2", 3, 0.7),
    ]
    assert main(["select", "--run-dir", str(other), "--strategy", "top_per_prompt"]) == 0
    rows = [json.loads(line) for line in (other / "select/selected.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [
        ("p0", 0),
        ("p1", 1),
        ("p2", 0),
        ("p3", 2),
        ("p4", 3),
    ]
    # TRL conversational prompt-completion rows, carrying the completion that was generated
    completions = {
        (c["prompt_id"], c["sample_index"]): c["text"]
        for c in map(json.loads, (run / "generate/shard-m0-00000.jsonl").read_text().splitlines())
    }
    assert rows[0]["prompt"] == [{"role": "user", "content": "prompt number 0"}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": completions[("p0", 0)]}]


def test_run_and_bon_as_a_subprocess(workdir, tiny_policy, tmp_path):
    """`python -m winnow bon` in a child process: written, printed, exit 0."""
    out = tmp_path / "best.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "winnow",
        "bon",
        "--prompts",
        str(workdir / "prompts.jsonl"),
        "--run-dir",
        str(tmp_path / "bon"),
        "--model",
        str(tiny_policy),
        "--n",
        "4",
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
        "--reward-fn",
        f"{workdir}/rewards.py:chapter",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    best = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(b["prompt_id"], b["sample_index"], b["reward"]) for b in best] == [
        ("p0", 0, 0.7),
        ("p1", 1, 0.8),
        ("p2", 0, 0.9),
        ("p3", 2, 0.8),
        ("p4", 3, 0.6),
    ]
    assert "Best-of-4" in proc.stdout and "0.900" in proc.stdout
    assert "more prompts in" not in proc.stdout  # 5 rows: all on the terminal


def test_best_of_n_terminal_shows_the_first_rows_and_counts_the_rest(capsys):
    from winnow.cli import print_best_of_n

    head = [{"prompt_id": f"p{i}", "reward": 0.5, "mean_reward": 0.25, "completion": f"text {i}"} for i in range(20)]
    print_best_of_n(head, 1_000_020, Path("runs/best.jsonl"), 8)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines at spaces
    assert "p19" in out and "... and 1,000,000 more prompts in runs/best.jsonl" in out


def test_yaml_config_with_flag_override(workdir, tiny_policy):
    (workdir / "cfg.yaml").write_text(
        f"prompts: {workdir / 'prompts.jsonl'}\nrun_dir: {workdir / 'run'}\n"
        f"generate:\n  models: [{tiny_policy}]\n  n: 3\n  max_new_tokens: 2\n  device: cpu\n"
    )
    assert main(["generate", "--config", str(workdir / "cfg.yaml"), "--n", "2"]) == 0
    manifest = json.loads((workdir / "run/generate/manifest.json").read_text())
    assert manifest["config"]["generate"]["n"] == 2 and manifest["config"]["generate"]["max_new_tokens"] == 2
    assert manifest["num_completions"] == 10


def test_chapter_example_pairs_best_worst(workdir, tiny_policy):
    run, other = chapter_runs(workdir, tiny_policy)
    assert main(["select", "--run-dir", str(run), "--pairs", "best-worst"]) == 0
    pairs = [json.loads(line) for line in (run / "select/pairs.jsonl").read_text().splitlines()]
    # best and worst of each row of the chapter's matrix, by hand
    expected = [
        ("p0", 0, 3, 0.7, 0.2),
        ("p1", 1, 0, 0.8, 0.4),
        ("p2", 0, 1, 0.9, 0.3),
        ("p3", 2, 0, 0.8, 0.2),
        ("p4", 3, 2, 0.6, 0.3),
    ]
    got = [
        (p["prompt_id"], p["chosen_index"], p["rejected_index"], p["chosen_reward"], p["rejected_reward"])
        for p in pairs
    ]
    assert got == expected
    assert [p["margin"] for p in pairs] == pytest.approx([0.5, 0.4, 0.6, 0.6, 0.3])
    # TRL's conversational preference format, each side the completion that was generated
    shard = map(json.loads, (run / "generate/shard-m0-00000.jsonl").read_text().splitlines())
    completions = {(c["prompt_id"], c["sample_index"]): c for c in shard}
    first = pairs[0]
    assert first["prompt"] == [{"role": "user", "content": "prompt number 0"}]
    assert first["chosen"] == [{"role": "assistant", "content": completions[("p0", 0)]["text"]}]
    assert first["rejected"] == [{"role": "assistant", "content": completions[("p0", 3)]["text"]}]
    assert first["chosen_model"] == first["rejected_model"] == str(tiny_policy)
    assert first["rejected_tokens"] == completions[("p0", 3)]["num_tokens"]
    manifest = json.loads((run / "select/manifest.json").read_text())
    assert manifest["num_pairs"] == 5 and manifest["mean_margin"] == pytest.approx(2.4 / 5)
    # a minimum margin keeps p0 (0.5), p2 and p3 (0.6)
    assert main(["select", "--run-dir", str(other), "--pairs", "best-worst", "--min-margin", "0.45"]) == 0
    kept = [json.loads(line)["prompt_id"] for line in (other / "select/pairs.jsonl").read_text().splitlines()]
    assert kept == ["p0", "p2", "p3"]


def test_rso_strategy_and_pairs_through_the_cli(workdir, tiny_policy):
    run = workdir / "run"
    assert main(gen_args(workdir, tiny_policy)) == 0
    assert main(["score", "--run-dir", str(run), "--reward-fn", f"{workdir}/rewards.py:chapter"]) == 0
    flags = ["--strategy", "rso", "--beta", "1e-6", "--k", "2", "--pairs", "rso", "--pair-k", "4"]
    assert main(["select", "--run-dir", str(run), *flags]) == 0
    # beta -> 0: the two best of each row, best first
    assert [(p, j) for p, j, _ in selected_pairs(run / "select/selected.jsonl")] == [
        ("p0", 0),
        ("p0", 2),
        ("p1", 1),
        ("p1", 2),
        ("p2", 0),
        ("p2", 3),
        ("p3", 2),
        ("p3", 3),
        ("p4", 3),
        ("p4", 0),
    ]
    # RSO pairs with beta -> 0 accept in reward order and pair (1st, 2nd), (3rd, 4th):
    # p0 [0.7, 0.3, 0.5, 0.2] -> (0, 2), (1, 3); p1 [0.4, 0.8, 0.6, 0.5] -> (1, 2), (3, 0)
    pairs = [json.loads(line) for line in (run / "select/pairs.jsonl").read_text().splitlines()]
    assert [(p["prompt_id"], p["chosen_index"], p["rejected_index"]) for p in pairs][:4] == [
        ("p0", 0, 2),
        ("p0", 1, 3),
        ("p1", 1, 2),
        ("p1", 3, 0),
    ]


@pytest.mark.parametrize("command", ["generate", "score", "select", "sft", "run", "bon", "demo", "report", "verify"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0 and "usage: winnow" in capsys.readouterr().out


# ---- bad input: a clear message, exit 2, nothing half-written --------------------------------


@pytest.mark.parametrize(
    "rows, patterns",
    [
        (['{"prompt": "ok"}', '{"prompt": "broken"'], ["prompts.jsonl:2", "malformed JSON"]),
        (['{"id": "x"}'], ["prompts.jsonl:1", "field 'prompt'", "missing prompt"]),
        (['{"prompt": "   "}'], ["prompts.jsonl:1", "field 'prompt'", "empty"]),
        (
            ['{"id": 1, "prompt": "a"}', '{"id": "1", "prompt": "b"}'],
            ["prompts.jsonl:2", "field 'id'", "duplicate id '1'"],
        ),
    ],
)
def test_bad_prompt_files(tmp_path, tiny_policy, capsys, rows, patterns):
    write_jsonl(tmp_path / "prompts.jsonl", rows)
    fails(gen_args(tmp_path, tiny_policy), capsys, *patterns)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--n", "0"], "generate.n: must be between 1 and 10000, got 0"),
        (
            ["--temperature", "-0.5"],
            "generate.temperature: must be 0 (greedy) or a number between 1e-05 and 100, got -0.5",
        ),
        (["--top-p", "0"], "generate.top_p: must be in (0, 1]"),
        (["--top-p", "1.5"], "generate.top_p: must be in (0, 1]"),
        (["--backend", "magic"], "unknown backend 'magic'"),
    ],
)
def test_bad_generate_options(workdir, tiny_policy, capsys, flags, pattern):
    fails(gen_args(workdir, tiny_policy, *flags), capsys, pattern)
    assert not (workdir / "run").exists()


def test_model_path_that_does_not_exist(workdir, capsys):
    fails(gen_args(workdir, workdir / "no-such-model"), capsys, "model path does not exist", "no-such-model")
    assert not list((workdir / "run/generate").glob("shard-*"))


def test_prompt_longer_than_context(workdir, tiny_policy, capsys):
    write_jsonl(workdir / "prompts.jsonl", [{"id": "ok", "prompt": "hi"}, {"id": "big", "prompt": "fox " * 400}])
    fails(gen_args(workdir, tiny_policy), capsys, "prompt 'big' (row 2)", "--long-prompts skip")
    assert main(gen_args(workdir, tiny_policy, "--long-prompts", "skip")) == 0  # nothing was claimed
    assert json.loads((workdir / "run/generate/manifest.json").read_text())["skipped_prompts"] == 1


@pytest.mark.parametrize(
    "fn, patterns",
    [
        ("boom", ["rewards.py:boom' raised RuntimeError: reward server down (batch starting at prompt_id 'p0')"]),
        ("short", ["returned 19 values for 20 completions"]),
        ("words", ["returned 'good' (str) at position 0", "expected a number or None"]),
        ("nope", ["has no callable 'nope'"]),
    ],
)
def test_bad_reward_functions(workdir, tiny_policy, capsys, fn, patterns):
    assert main(gen_args(workdir, tiny_policy)) == 0
    score = ["score", "--run-dir", str(workdir / "run"), "--reward-fn", f"{workdir}/rewards.py:{fn}"]
    fails(score, capsys, *patterns)
    assert not (workdir / "run/score/manifest.json").exists()
    assert not (workdir / "run/score/rewards.npy").exists()
    assert not list((workdir / "run/score").glob("shard-*"))


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--strategy", "best_vibes"], "unknown strategy 'best_vibes'"),
        (["--strategy", "top_k_overall", "--k", "0"], "select.k: must be >= 1, got 0"),
        (["--strategy", "top_k_overall", "--k", "21"], "k must be between 1 and M x N = 20, got 21"),
        (["--strategy", "top_k_overall"], "select.k: strategy top_k_overall needs k"),
        (["--strategy", "rso"], "select.beta: strategy rso needs beta"),
        (["--strategy", "rso", "--beta", "0"], "select.beta: must be finite and > 0, got 0.0"),
        (["--pairs", "rso"], "select.beta: pairs rso needs beta"),
        (["--pairs", "best-of"], "select.pairs: unknown pairing 'best-of'"),
        (["--pairs", "all", "--min-margin", "-1"], "select.min_margin: must be finite and >= 0"),
    ],
)
def test_bad_select_options(workdir, tiny_policy, capsys, flags, pattern):
    assert main(gen_args(workdir, tiny_policy)) == 0
    assert main(["score", "--run-dir", str(workdir / "run"), "--reward-fn", "length"]) == 0
    fails(["select", "--run-dir", str(workdir / "run"), *flags], capsys, pattern)
    assert not (workdir / "run/select/selected.jsonl").exists()


def test_stage_before_its_input(workdir, capsys):
    fails(["score", "--run-dir", str(workdir / "run")], capsys, "generate/manifest.json not found")


def test_a_failed_start_does_not_claim_the_run_dir(workdir, tiny_policy, capsys):
    """A typo that fails before any output can be fixed and rerun in the same run dir."""
    fails(gen_args(workdir, workdir / "typo"), capsys, "model path does not exist")
    assert main(gen_args(workdir, tiny_policy)) == 0
    fails(["score", "--run-dir", str(workdir / "run"), "--reward-fn", f"{workdir}/rewards.py:boom"], capsys, "boom")
    assert main(["score", "--run-dir", str(workdir / "run"), "--reward-fn", "length"]) == 0
