"""The error contract: every bad input, bad file and OS error is one line and exit 2, with
nothing half-written; numbers are checked where they enter; provenance catches changed code
and models. Each case observed on the run directory has a test here or in test_rundir.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import fails, gen_args, write_jsonl

from winnow.cli import main

REWARDS = """
def as_dict(prompts, completions, **kw):
    return {c: 1.0 for c in completions}

def too_big(prompts, completions, **kw):
    return [10**400] * len(completions)

def huge(prompts, completions, **kw):
    return [1e308] * len(completions)

def flaky(prompts, completions, prompt_ids, **kw):
    if "p4" in prompt_ids:
        raise RuntimeError("lost connection")
    return [1.0] * len(completions)
"""


def run_args(d: Path, model: Path, *extra) -> list[str]:
    gen = gen_args(d, model)
    return ["run", *gen[1:], "--reward-fn", "length", *extra]


WORKDIR_FILES = {"rewards.py": REWARDS}


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory, tiny_policy) -> Path:
    """A run dir through select, copied by the tests that fine-tune."""
    d = tmp_path_factory.mktemp("selected")
    write_jsonl(d / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"prompt number {i}"} for i in range(5)])
    assert main(gen_args(d, tiny_policy)) == 0
    assert main(["score", "--run-dir", str(d / "run"), "--reward-fn", "length"]) == 0
    assert main(["select", "--run-dir", str(d / "run")]) == 0
    return d / "run"


# ---- numbers that slipped through ------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e-300", "1e-40", "9e-6"])
def test_tiny_temperature_is_refused(workdir, tiny_policy, capsys, value):
    fails(
        gen_args(workdir, tiny_policy, "--temperature", value),
        capsys,
        f"generate.temperature: must be 0 (greedy) or a number between 1e-05 and 100, got {float(value)}",
        error_last=True,
    )
    assert not (workdir / "run").exists()


def test_huge_n_is_refused_before_anything_is_allocated(workdir, tiny_policy, capsys):
    fails(
        gen_args(workdir, tiny_policy, "--n", "1000000000"),
        capsys,
        "generate.n: must be between 1 and 10000",
        error_last=True,
    )
    assert not (workdir / "run").exists()


@pytest.mark.parametrize(
    "fn, pattern",
    [
        ("as_dict", "returned dict, expected a list of numbers"),
        ("too_big", "returned a number too large for a float at position 0"),
    ],
)
def test_reward_function_returning_a_non_list_or_a_huge_int(workdir, tiny_policy, capsys, fn, pattern):
    assert main(gen_args(workdir, tiny_policy)) == 0
    fails(
        ["score", "--run-dir", str(workdir / "run"), "--reward-fn", f"{workdir}/rewards.py:{fn}"],
        capsys,
        pattern,
        error_last=True,
    )
    assert not (workdir / "run/score/manifest.json").exists()


def test_huge_finite_rewards_are_refused_before_anything_is_recorded(workdir, tiny_policy, capsys):
    """Rewards near 1e308 overflow margins, means and histograms downstream: score refuses them."""
    assert main(gen_args(workdir, tiny_policy)) == 0
    assert main(["score", "--run-dir", str(workdir / "run"), "--reward-fn", f"{workdir}/rewards.py:huge"]) == 2
    assert "rewards must be finite and at most 1e+100 in magnitude" in capsys.readouterr().err
    assert not (workdir / "run/score/manifest.json").exists()


def test_diverging_sft_fails_loudly_without_a_checkpoint(selected_run, tmp_path, tiny_policy, capsys):
    run = tmp_path / "run"
    shutil.copytree(selected_run, run)
    sft = ["sft", "--run-dir", str(run), "--sft-model", str(tiny_policy), "--device", "cpu", "--epochs", "2"]
    fails(
        [*sft, "--learning-rate", "1e30"], capsys, "sft: training diverged", "lower sft.learning_rate", error_last=True
    )
    assert not (run / "sft/checkpoint").exists() and not (run / "sft/manifest.json").exists()
    assert not [p for p in (run / "sft").iterdir() if p.name.startswith(".tmp")]
    assert main([*sft, "--learning-rate", "1e-3"]) == 0  # nothing was claimed: a fixed rerun works
    manifest = json.loads((run / "sft/manifest.json").read_text())
    steps = [step for step, _ in manifest["loss_curve"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2
    assert manifest["rows_trained"] == 5
    assert all(0 < loss < 100 for _, loss in manifest["loss_curve"])


def test_sft_max_length_that_leaves_no_completion(selected_run, tmp_path, tiny_policy, capsys):
    run = tmp_path / "run"
    shutil.copytree(selected_run, run)
    argv = ["sft", "--run-dir", str(run), "--sft-model", str(tiny_policy), "--device", "cpu", "--max-length", "8"]
    fails(
        argv,
        capsys,
        "sft.max_length: 8 tokens leave no completion token in any of the 5 selected rows",
        error_last=True,
    )
    assert not (run / "sft/checkpoint").exists()


# ---- tracebacks that became messages -----------------------------------------------------------


def test_invalid_utf8_in_prompts(workdir, tiny_policy, capsys):
    (workdir / "prompts.jsonl").write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9 \xff"}\n')
    fails(
        gen_args(workdir, tiny_policy),
        capsys,
        "prompts.jsonl:2: not valid UTF-8 (byte 0xe9 at column 16)",
        error_last=True,
    )


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--seed", "-1"], "generate.seed: must be between 0 and 2**63 - 1, got -1"),
        (["--device", "gpu"], "generate.device: must be auto, cpu, mps, cuda or cuda:N, got 'gpu'"),
        (["--temperature", "-1e-5"], "generate.temperature: must be 0 (greedy)"),
        (
            ["--temperature", "inf"],
            "generate.temperature: must be 0 (greedy) or a number between 1e-05 and 100, got inf",
        ),
    ],
)
def test_bad_numbers_and_devices(workdir, tiny_policy, capsys, flags, pattern):
    fails(gen_args(workdir, tiny_policy, *flags), capsys, pattern, error_last=True)
    assert not (workdir / "run").exists()


def test_threshold_minus_inf_is_a_value_not_a_flag(workdir, tiny_policy, capsys):
    argv = ["select", "--run-dir", str(workdir / "run"), "--strategy", "threshold", "--threshold", "-inf"]
    fails(argv, capsys, "select.threshold: strategy threshold needs a finite threshold, got -inf", error_last=True)


@pytest.mark.parametrize(
    "yaml_text, pattern",
    [
        ("generate: [1, 2]\n", "field 'generate': expected a mapping of options, got list"),
        ("sft: {lora_r: 0}\n", "sft.lora_r: must be >= 1, got 0"),
        ("sft: {epochs: .inf}\n", "sft.epochs: must be finite and > 0, got inf"),
        ("sft: {learning_rate: .nan}\n", "sft.learning_rate: must be finite and > 0, got nan"),
        ("sft: {seed: -3}\n", "sft.seed: must be between 0"),
        ("run_dir: [a]\n", "field 'run_dir': expected a string"),
        ("generate: {top_k: 1.0e+400}\n", "field 'top_k': expected int"),
        (
            "select: {threshold: 1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000}\n",
            "too large for a float",
        ),
    ],
)
def test_yaml_types_and_ranges_fail_before_any_stage_runs(workdir, tiny_policy, capsys, yaml_text, pattern):
    (workdir / "cfg.yaml").write_text(yaml_text)
    fails([*run_args(workdir, tiny_policy), "--config", str(workdir / "cfg.yaml")], capsys, pattern, error_last=True)
    assert not (workdir / "run").exists()  # generate never started


def test_bon_out_pointing_at_a_folder_fails_before_generating(workdir, tiny_policy, capsys):
    (workdir / "outdir").mkdir()
    argv = ["bon", *gen_args(workdir, tiny_policy)[1:], "--reward-fn", "length", "--out", str(workdir / "outdir")]
    fails(argv, capsys, f"--out {workdir / 'outdir'} is a folder", error_last=True)
    assert not (workdir / "run").exists()


def test_run_dir_in_a_read_only_folder(workdir, tiny_policy):
    """A real process that may not write there. Root ignores permission bits, so as root the
    folder is made immutable (chattr +i), which refuses root too."""
    locked = workdir / "locked"
    locked.mkdir()
    if os.getuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(locked)]).returncode != 0:
            pytest.skip("running as root on a file system without chattr +i")
    else:
        locked.chmod(0o555)
    try:
        argv = gen_args(workdir, tiny_policy)
        argv[argv.index("--run-dir") + 1] = str(locked / "run")
        proc = subprocess.run([sys.executable, "-m", "winnow", *argv], capture_output=True, text=True)
    finally:
        if os.getuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() in {
        f"winnow: error: {reason}: {locked / 'run'}" for reason in ("Permission denied", "Operation not permitted")
    }


def test_disk_full_is_one_line(workdir, tiny_policy, capsys, monkeypatch):
    """ENOSPC cannot be provoked on a shared disk; the OS error is raised where writes sync."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    fails(gen_args(workdir, tiny_policy), capsys, "winnow: error: No space left on device", error_last=True)


def test_corrupt_config_json_in_the_run_dir(workdir, tiny_policy, capsys):
    assert main(gen_args(workdir, tiny_policy)) == 0
    path = workdir / "run/generate/config.json"
    path.write_bytes(b"\x00\x01garbage")
    fails(gen_args(workdir, tiny_policy), capsys, f"{path}: damaged (not valid JSON", error_last=True)


def test_debug_shows_the_traceback(workdir, tiny_policy, capsys):
    assert main([*gen_args(workdir, tiny_policy, "--seed", "-1"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("generate.seed: must be between 0 and 2**63 - 1, got -1")


def test_an_internal_bug_is_not_dressed_up(workdir):
    """Exit 1 with a traceback (Python's own) for a bug, not the exit 2 of bad input."""
    code = "import sys; from winnow import pipeline; from winnow.cli import main\n"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code + "pipeline.run_stages = lambda *a, **k: 1 / 0\nsys.exit(main(sys.argv[1:]))",
            "select",
            "--run-dir",
            str(workdir / "run"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr


# ---- smaller cases ------------------------------------------------------------------------------


def test_utf8_with_bom_is_read(workdir, tiny_policy):
    rows = "".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(2))
    (workdir / "prompts.jsonl").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    (workdir / "cfg.yaml").write_bytes(b"\xef\xbb\xbfgenerate: {n: 2}\n")
    assert main([*gen_args(workdir, tiny_policy), "--config", str(workdir / "cfg.yaml")]) == 0
    manifest = json.loads((workdir / "run/generate/manifest.json").read_text())
    assert manifest["num_prompts"] == 2 and manifest["config"]["generate"]["n"] == 4  # the flag wins over the file


@pytest.mark.parametrize(
    "row, pattern",
    [
        (
            {"prompt": "a", "messages": [{"role": "user", "content": "b"}]},
            "both 'prompt' and 'messages' given",
        ),
        ({"messages": [{"role": "narrator", "content": "b"}]}, "field 'messages[0]': unknown role 'narrator'"),
        ({"messages": [{"role": "user", "content": "b", "name": "x"}]}, "unknown key 'name'"),
    ],
)
def test_ambiguous_prompt_rows_are_refused(workdir, tiny_policy, capsys, row, pattern):
    write_jsonl(workdir / "prompts.jsonl", [{"prompt": "fine"}, row])
    fails(gen_args(workdir, tiny_policy), capsys, "prompts.jsonl:2", pattern, error_last=True)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_files_honour_the_umask(selected_run, tmp_path, tiny_policy, umask, file_mode, dir_mode):
    run = tmp_path / "run"
    shutil.copytree(selected_run, run)
    shutil.rmtree(run / "select")
    old = os.umask(umask)
    try:
        assert main(["select", "--run-dir", str(run)]) == 0
        argv = ["sft", "--run-dir", str(run), "--sft-model", str(tiny_policy), "--device", "cpu", "--epochs", "1"]
        assert main(argv) == 0
    finally:
        os.umask(old)
    made = [*(run / "select").rglob("*"), *(run / "sft").rglob("*")]
    modes = {str(p.relative_to(run)): p.stat().st_mode & 0o777 for p in made}
    assert modes and modes == {k: dir_mode if (run / k).is_dir() else file_mode for k in modes}


def test_relative_prompts_in_yaml_resolve_against_the_yaml_file(workdir, tiny_policy, tmp_path_factory, monkeypatch):
    (workdir / "cfg.yaml").write_text(f"prompts: prompts.jsonl\nrun_dir: {workdir / 'run'}\n")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    argv = ["generate", "--config", str(workdir / "cfg.yaml"), "--model", str(tiny_policy), "--n", "2"]
    assert main([*argv, "--max-new-tokens", "2", "--device", "cpu"]) == 0
    assert json.loads((workdir / "run/generate/manifest.json").read_text())["num_prompts"] == 5


# ---- resume under changed code or models ------------------------------------------------------


def test_resume_after_the_reward_function_changed_is_refused(workdir, tiny_policy, capsys):
    assert main(gen_args(workdir, tiny_policy, "--shard-size", "2")) == 0
    (workdir / "cfg.yaml").write_text("score: {shard_size: 8}\n")
    score = ["score", "--config", str(workdir / "cfg.yaml"), "--run-dir", str(workdir / "run")]
    score += ["--reward-fn", f"{workdir}/rewards.py:flaky"]
    fails(score, capsys, "lost connection", error_last=True)  # interrupted after the first shard
    assert len(list((workdir / "run/score").glob("shard-*.jsonl"))) == 2
    (workdir / "rewards.py").write_text(
        REWARDS.replace('raise RuntimeError("lost connection")', "return [2.0] * len(completions)")
    )
    fails(score, capsys, "refusing to resume", "provenance.reward.0:", error_last=True)
    assert len(list((workdir / "run/score").glob("shard-*.jsonl"))) == 2
    with (workdir / "rewards.py").open("a") as f:  # a comment alone: the words say why it counts
        f.write("# a comment\n")
    err = fails(score, capsys, "refusing to resume", error_last=True)
    assert (
        f"(the reward's file changed since this stage began ({workdir}/rewards.py): a reward is identified by its "
        "whole file, so any edit, a comment included, counts; put the file back as it was to resume). "
        f"Use a new --run-dir, or delete {workdir}/run/score to redo this stage."
    ) in err


def test_resume_after_the_model_changed_is_refused(workdir, tiny_policy, tiny_policy_b, capsys):
    model = workdir / "model"
    shutil.copytree(tiny_policy, model)
    assert main(gen_args(workdir, model)) == 0
    shutil.copy(tiny_policy_b / "model.safetensors", model / "model.safetensors")
    fails(gen_args(workdir, model), capsys, "refusing to resume", f"provenance.models.{model}:", error_last=True)


def test_a_folder_where_a_file_belongs(selected_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(selected_run, run)
    target = run / "select/selected.jsonl"
    target.unlink()
    target.mkdir()
    (target / "x").write_text("")
    err = fails(["select", "--run-dir", str(run)], capsys, "Is a directory", str(target), error_last=True)
    assert len(err.strip().splitlines()) == 1
    assert not [p for p in (run / "select").iterdir() if p.name.endswith(".tmp")]
