"""Nothing silently wrong: lineage checked by readers, time-limited rewards, no tracebacks.

Each test is an adversarial probe with tiny models: wrong data refused, a clear one-line
error (exit 2) instead of a traceback, or a run dir left consistent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest
from helpers import write_jsonl

from winnow.cli import main

NUM_PROMPTS = 4


def gen_args(run: Path, prompts: Path, model: Path, *extra) -> list[str]:
    """``winnow generate`` of ``prompts`` into ``run``: 6 new tokens, one prompt a shard."""
    return helpers.gen_args(run.parent, model, *extra, run=run, prompts=prompts, max_new_tokens=6, shard_size=1)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_policy) -> tuple[Path, Path]:
    """A generated and scored (length) run dir, copied by each test that changes it."""
    root = tmp_path_factory.mktemp("reliability")
    prompts = write_jsonl(
        root / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"write about item {i}"} for i in range(NUM_PROMPTS)]
    )
    run = root / "run"
    assert main(gen_args(run, prompts, tiny_policy)) == 0
    assert main(["score", "--run-dir", str(run), "--reward-fn", "length"]) == 0
    return run, prompts


@pytest.fixture()
def run_copy(base_run, tmp_path) -> tuple[Path, Path]:
    run, prompts = base_run
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", prompts


# ---- case 12: numbers out of range -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repetition-penalty", "inf"], "generate.repetition_penalty"),
        (["--repetition-penalty", "1e-300"], "generate.repetition_penalty"),
    ],
)
def test_generate_numbers_out_of_range_are_refused(tmp_path, argv, message, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    assert main(gen_args(tmp_path / "run", prompts, tmp_path / "none", *argv)) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "run" / "generate" / "config.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategy", "rso", "--beta", "inf", "--k", "2"], "select.beta"),
        (["--strategy", "rso", "--beta", "1", "--k", "99999999999"], None),
        (["--strategy", "top_k_per_prompt", "--k", "99999999999"], None),
        (["--pairs", "rso", "--beta", "1", "--pair-k", "99999999999"], None),
    ],
)
def test_select_numbers_out_of_range(run_copy, argv, message, capsys):
    run, _ = run_copy
    code = main(["select", "--run-dir", str(run), *argv])
    err = error_line(capsys)
    if message is None:  # a k beyond the columns takes every column, as a smaller one would
        assert code == 0, err
    else:
        assert code == 2 and message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sft", "--sft-batch-size", "99999999999999999999"], "sft.batch_size"),
        (["dpo", "--epochs", "inf"], "dpo.epochs"),
        (["dpo", "--dpo-beta", "inf"], "dpo.beta"),
        (["dpo", "--learning-rate", "inf"], "dpo.learning_rate"),
    ],
)
def test_training_numbers_out_of_range(tmp_path, argv, message, capsys):
    assert (
        main([*argv, "--run-dir", str(tmp_path / "run"), "--sft-model" if argv[0] == "sft" else "--dpo-model", "x"])
        == 2
    )
    assert message in error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--seed", "-1"], "--seed"), (["--bootstrap-iters", "99999999999999"], "--bootstrap-iters")],
)
def test_report_numbers_out_of_range(run_copy, argv, message, capsys):
    run, _ = run_copy
    assert main(["report", str(run), *argv]) == 2
    assert message in error_line(capsys)
    assert not (run / "report").exists()


def test_pair_k_not_an_integer_is_a_usage_error(run_copy, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["select", "--run-dir", str(run_copy[0]), "--pairs", "rso", "--beta", "1", "--pair-k", "1e13"])
    assert exit_info.value.code == 2
    assert "argument --pair-k: invalid int value: '1e13'" in error_line(capsys)


# ---- case 11: prompt files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a\\ud800", "prompt": "hi"}', ":1: field 'id': lone surrogate"),
        ('{"prompt": "hi \\udfff there"}', ":1: field 'prompt': lone surrogate"),
        ('{"messages": [{"role": "user", "content": "\\ud800"}]}', ":1: field 'messages[0].content'"),
        ('{"id": ' + "7" * 5000 + ', "prompt": "hi"}', ":1: number too long"),
        ("[" * 100_000 + "]" * 100_000, ":1: nested too deeply"),
    ],
)
def test_bad_prompt_rows_are_one_line_and_claim_nothing(tmp_path, tiny_policy, line, message, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(line + "\n")
    run = tmp_path / "run"
    assert main(gen_args(run, prompts, tiny_policy)) == 2
    assert message in error_line(capsys)
    assert not (run / "generate" / "config.json").exists()
    # the corrected file then runs: nothing was claimed under the bad one
    write_jsonl(prompts, [{"id": "a", "prompt": "hi"}])
    assert main(gen_args(run, prompts, tiny_policy, "--n", "1")) == 0


def test_prompts_naming_a_fifo_is_refused(tmp_path, capsys):
    fifo = tmp_path / "p.jsonl"
    os.mkfifo(fifo)
    assert main(gen_args(tmp_path / "run", fifo, tmp_path / "m")) == 2
    assert "not a regular file" in error_line(capsys)


def test_id_column_that_no_row_has_is_refused(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"key": "a", "prompt": "hi"}, {"key": "b", "prompt": "ho"}])
    assert main([*gen_args(tmp_path / "run", prompts, tmp_path / "m"), "--id-column", "uid"]) == 2
    assert "--id-column 'uid': no row has this column" in error_line(capsys)


# ---- case 1: shards reused only under the config they were made with ----------------------


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.jsonl"))}


def test_generate_without_config_json_remakes_shards_of_another_config(run_copy, tiny_policy, tmp_path):
    run, prompts = run_copy
    (run / "generate" / "config.json").unlink()
    changed = ("--seed", "123", "--temperature", "0.5")
    assert main(gen_args(run, prompts, tiny_policy, *changed)) == 0
    fresh = tmp_path / "fresh"
    assert main(gen_args(fresh, prompts, tiny_policy, *changed)) == 0
    assert shard_bytes(run / "generate") == shard_bytes(fresh / "generate")
    ledger = (run / "generate" / "verified.jsonl").read_text()
    assert ledger == (fresh / "generate" / "verified.jsonl").read_text()


def test_score_without_config_json_rescores_every_shard(run_copy, tmp_path):
    run, _ = run_copy
    (run / "score" / "config.json").unlink()
    config = tmp_path / "score.yaml"
    config.write_text("score:\n  shard_size: 3\n")
    assert main(["score", "--run-dir", str(run), "--reward-fn", "vader", "--config", str(config)]) == 0
    manifest = json.loads((run / "score" / "manifest.json").read_text())
    assert manifest["scored"] == 16 and manifest["unscored"] == 0
    rows = [json.loads(line) for p in sorted((run / "score").glob("shard-*.jsonl")) for line in p.open()]
    texts = {(r["prompt_id"], r["sample_index"]): r for r in rows}
    assert len(texts) == 16
    from winnow.rewards.builtins import vader

    gen = [json.loads(line) for p in sorted((run / "generate").glob("shard-*.jsonl")) for line in p.open()]
    expected = dict(
        zip([(c["prompt_id"], c["sample_index"]) for c in gen], vader([], [c["text"] for c in gen]), strict=True)
    )
    assert {k: r["reward"] for k, r in texts.items()} == pytest.approx(expected)


# ---- case 2: every reader checks the upstream chain ----------------------------------------


def test_readers_refuse_a_stage_made_from_a_replaced_upstream(run_copy, tiny_policy, capsys):
    run, prompts = run_copy
    assert main(["select", "--run-dir", str(run)]) == 0
    shutil.rmtree(run / "generate")
    assert main(gen_args(run, prompts, tiny_policy, "--seed", "5")) == 0
    capsys.readouterr()
    for argv in (["select", "--run-dir", str(run)], ["report", str(run)], ["sft", "--run-dir", str(run)]):
        assert main(argv) == 2, argv
        err = error_line(capsys)
        assert f"{run / 'score'} was made from another generate stage" in err, err
        assert f"delete {run / 'score'} and rerun `winnow score`" in err
    assert not (run / "report").exists()


# ---- case 16: a lock removed under a running writer ------------------------------------------


def test_score_stops_when_its_lock_file_is_removed(run_copy, tmp_path, capsys):
    run, _ = run_copy
    shutil.rmtree(run / "score")
    reward = tmp_path / "rm_lock.py"
    reward.write_text(
        "from pathlib import Path\n"
        f"LOCK = Path({str(run / 'score' / 'lock')!r})\n"
        "def reward(prompts, completions, **kw):\n"
        "    LOCK.unlink(missing_ok=True)\n"
        "    return [1.0] * len(completions)\n"
    )
    assert main(["score", "--run-dir", str(run), "--reward-fn", f"{reward}:reward"]) == 2
    assert "was removed or replaced while this process held it" in error_line(capsys)
    assert not (run / "score" / "verified.jsonl").exists()
    assert not (run / "score" / "manifest.json").exists()


def test_sft_refuses_a_sequence_classifier(run_copy, tiny_reward_model, capsys):
    run, _ = run_copy
    assert main(["select", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["sft", "--run-dir", str(run), "--sft-model", str(tiny_reward_model), "--device", "cpu"]) == 2
    assert "not a causal language model" in error_line(capsys)


# ---- case 13: files -----------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "{", "[]", '{"format": 3, "config": 3}'])
def test_sft_default_model_from_a_damaged_generate_manifest(run_copy, content, capsys):
    run, _ = run_copy
    (run / "generate" / "manifest.json").write_text(content)
    assert main(["sft", "--run-dir", str(run)]) == 2
    assert f"{run / 'generate' / 'manifest.json'}" in error_line(capsys)


def test_bon_out_may_not_name_a_file_of_the_run_dir(run_copy, tiny_policy, capsys):
    run, prompts = run_copy
    target = run / "generate" / "prompts.jsonl"
    before = target.read_bytes()
    argv = gen_args(run, prompts, tiny_policy, "--reward-fn", "length", "--out", str(target))
    assert main(["bon", *argv[1:]]) == 2
    assert "inside the run dir's stage folder" in error_line(capsys)
    assert target.read_bytes() == before


KILLED_REPORT = """
import os, sys, time
from pathlib import Path
from winnow.report import plots
real = plots.plot_selected_vs_all
def held(path, *a, **k):
    real(path, *a, **k)
    Path(sys.argv[2]).write_text("x")
    time.sleep(600)
plots.plot_selected_vs_all = held
from winnow.cli import main
sys.exit(main(["report", sys.argv[1]]))
"""


def test_report_killed_midway_leaves_no_partial_folder(run_copy, tmp_path):
    run, _ = run_copy
    marker = tmp_path / "held"
    script = tmp_path / "killed_report.py"
    script.write_text(KILLED_REPORT)
    proc = subprocess.Popen([sys.executable, str(script), str(run), str(marker)])
    helpers.wait_for(marker.exists, 120, "the report to be held", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "report").exists()
    assert main(["report", str(run)]) == 0
    assert {p.name for p in (run / "report").iterdir()} == {
        "report.json",
        "report.md",
        "best_of_n.png",
        "selected_vs_all.png",
    }
    assert main(["verify", str(run)]) == 0


# ---- case 10 and 15: rewards at the edges ----------------------------------------------------


def write_reward(tmp_path: Path, body: str) -> str:
    path = tmp_path / "reward_under_test.py"
    path.write_text("import os, sys\n\ndef reward(prompts, completions, **kw):\n" + body)
    return f"{path}:reward"


def test_rewards_beyond_1e100_are_refused(run_copy, tmp_path, capsys):
    run, _ = run_copy
    shutil.rmtree(run / "score")
    spec = write_reward(tmp_path, "    return [1e308 if s % 2 else -1e308 for s in kw['sample_indices']]\n")
    assert main(["score", "--run-dir", str(run), "--reward-fn", spec]) == 2
    assert "returned -1e+308 at position 0" in error_line(capsys)


def test_report_when_no_prompt_is_fully_scored(run_copy, tmp_path, capsys):
    run, _ = run_copy
    shutil.rmtree(run / "score")
    spec = write_reward(tmp_path, "    return [None if s == 0 else float(s) for s in kw['sample_indices']]\n")
    assert main(["score", "--run-dir", str(run), "--reward-fn", spec]) == 0
    assert main(["report", str(run)]) == 0
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["best_of_n"]["rows"] == 0 and report["unscored"] == NUM_PROMPTS
    assert "No prompt has all 4 samples scored" in (run / "report" / "report.md").read_text()
    assert "No prompt has all 4 samples scored" in capsys.readouterr().out


# ---- cases 8 and 9: rewards that hang, exit, move the working folder or mutate arguments ----


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    sys.exit(0)\n", "called sys.exit(0)"),
        ("    os._exit(0)\n", "called os._exit(0)"),
        ("    completions.append('x')\n    return [1.0] * (len(completions) - 1)\n", None),
    ],
)
def test_rewards_that_exit_or_mutate(run_copy, tmp_path, body, message, capsys):
    run, _ = run_copy
    shutil.rmtree(run / "score")
    spec = write_reward(tmp_path, body)
    code = main(["score", "--run-dir", str(run), "--reward-fn", spec])
    err = error_line(capsys)
    if message is None:  # the reward got copies: its change is its own
        assert code == 0, err
        assert json.loads((run / "score" / "manifest.json").read_text())["scored"] == 16
    else:
        assert code == 2 and message in err, err
        assert not (run / "score" / "manifest.json").exists()


def test_reward_module_exiting_at_import(run_copy, tmp_path, capsys):
    run, _ = run_copy
    shutil.rmtree(run / "score")
    path = tmp_path / "exits.py"
    path.write_text("import sys\nsys.exit(3)\n")
    assert main(["score", "--run-dir", str(run), "--reward-fn", f"{path}:reward"]) == 2
    assert "importing the reward module failed: it called sys.exit(3)" in error_line(capsys)


def test_reward_that_changes_folder_does_not_move_outputs(run_copy, tmp_path, monkeypatch):
    run, _ = run_copy
    shutil.rmtree(run / "score")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(run.parent)
    spec = write_reward(tmp_path, f"    os.chdir({str(elsewhere)!r})\n    return [1.0] * len(completions)\n")
    assert main(["score", "--run-dir", "run", "--reward-fn", spec]) == 0
    assert (run / "score" / "manifest.json").exists()
    assert list(elsewhere.iterdir()) == []
    assert Path.cwd() == run.parent


def test_a_reward_given_up_on_does_not_move_the_folder_when_it_ends(tmp_path, monkeypatch):
    """A reward cut by --reward-timeout runs on in its thread; when it ends, later, it must not
    restore the working folder it started in: the process has moved on (a library caller, a
    server, the next test) and relative paths would land elsewhere."""
    import threading

    from winnow.errors import WinnowError
    from winnow.rewards import call_reward

    first, then = tmp_path / "first", tmp_path / "then"
    first.mkdir()
    then.mkdir()
    monkeypatch.chdir(first)
    release = threading.Event()

    def slow(prompts, completions, **kw):
        release.wait(10)
        return [1.0] * len(completions)

    before = set(threading.enumerate())  # rewards abandoned by other tests may still be running
    with pytest.raises(WinnowError, match=r"took longer than --reward-timeout 0\.2 s"):
        call_reward(slow, "slow", ["p"], ["c"], timeout=0.2)
    (ours,) = [t for t in threading.enumerate() if t not in before and t.name == "winnow-reward"]
    os.chdir(then)
    release.set()
    ours.join(10)
    assert not ours.is_alive() and Path.cwd() == then


def test_reward_timeout_names_the_batch(run_copy, tmp_path, capsys):
    run, _ = run_copy
    shutil.rmtree(run / "score")
    spec = write_reward(tmp_path, "    import time\n    time.sleep(3600)\n")
    start = time.monotonic()
    assert main(["score", "--run-dir", str(run), "--reward-fn", spec, "--reward-timeout", "0.5"]) == 2
    assert time.monotonic() - start < 30
    err = error_line(capsys)
    assert "took longer than --reward-timeout 0.5 s" in err
    assert "batch of 16 rows starting at prompt_id 'q0' sample_index 0" in err


def test_reward_timeout_applies_to_judges(run_copy, tmp_path, capsys):
    """A judge server that never answers is cut by the same per-batch limit."""
    import socket

    run, _ = run_copy
    shutil.rmtree(run / "score")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    try:
        argv = ["score", "--run-dir", str(run), "--reward-judge", url, "--judge-model", "j", "--reward-timeout", "1"]
        assert main(argv) == 2
    finally:
        silent.close()
    assert "took longer than --reward-timeout 1 s" in error_line(capsys)


# ---- case 3: verify's gaps ----------------------------------------------------------------------


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def verify_output(run: Path, capsys) -> tuple[int, str]:
    code = main(["verify", str(run)])
    return code, capsys.readouterr().out


def test_verify_finds_an_emptied_file_map(run_copy, capsys):
    run, _ = run_copy
    edit_json(run / "score" / "manifest.json", lambda m: m.update(files={}))
    code, out = verify_output(run, capsys)
    assert code == 2
    assert f"{run / 'score' / 'manifest.json'}: records no rewards.npy" in out


def test_verify_checks_the_ledger(run_copy, capsys):
    run, _ = run_copy
    ledger = run / "generate" / "verified.jsonl"
    ledger.write_text(ledger.read_text().replace('"rows": 4', '"rows": 5', 1))
    code, out = verify_output(run, capsys)
    assert code == 2 and f"{ledger}: does not match the shard records in manifest.json" in out


def test_verify_checks_the_report_folder(run_copy, capsys):
    run, _ = run_copy
    assert main(["report", str(run)]) == 0
    assert verify_output(run, capsys)[0] == 0
    (run / "report" / "report.md").unlink()
    code, out = verify_output(run, capsys)
    assert code == 2 and f"{run / 'report' / 'report.md'}: missing; rerun `winnow report`" in out
    (run / "report" / "report.md").write_text("restored\n")
    shutil.rmtree(run / "score")
    assert main(["score", "--run-dir", str(run), "--reward-fn", "vader"]) == 0
    code, out = verify_output(run, capsys)
    assert code == 2 and f"{run / 'report'}: made from another score stage than the one now in the run dir" in out


# ---- case 14: an OpenAI-compatible server that answers 200 with nonsense ---------------------


class BadServer:
    """Answers /models and /completions per ``mode``; counts the completion requests."""

    def __init__(self, mode: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mode, self.requests = mode, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: bytes, kind: str = "application/json", drip: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(len(body)) if drip else [None]:
                        self.wfile.write(body[i : i + 1] if drip else body)
                        self.wfile.flush()
                        if drip:
                            time.sleep(0.5)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if server.mode == "html_models":
                    self._send(b"<html>welcome</html>", "text/html")
                else:
                    self._send(json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode())

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                server.requests += 1
                choice: dict = {"index": 0, "finish_reason": "stop", "text": "fine"}
                reply: dict = {"id": "x", "object": "text_completion", "created": 0, "model": "m"}
                reply["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                if server.mode == "invalid_json":
                    return self._send(b"{not json")
                if server.mode != "no_choices":
                    reply["choices"] = [choice]
                if server.mode == "num_tokens_str":
                    choice["num_tokens"] = "three"
                if server.mode == "num_tokens_negative":
                    choice["num_tokens"] = -7
                if server.mode == "text_not_a_string":
                    choice["text"] = 5
                self._send(json.dumps(reply).encode(), drip=server.mode == "drip")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> BadServer:
        import threading

        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("mode", "message", "tries"),
    [
        ("invalid_json", "invalid reply", 2),
        ("no_choices", "invalid reply", 2),
        ("num_tokens_str", 'num_tokens "three"', 2),
        ("num_tokens_negative", "num_tokens -7", 2),
        ("text_not_a_string", "text 5", 2),
        ("html_models", "listing the models", 0),
        ("drip", "2 s", 2),
    ],
)
def test_openai_backend_refuses_invalid_replies(tmp_path, mode, message, tries, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "hi"}])
    (tmp_path / "fast.yaml").write_text("generate: {retry_backoff: 0.01}\n")
    run = tmp_path / "run"
    argv = ["generate", "--prompts", str(prompts), "--run-dir", str(run), "--backend", "openai", "--model", "m"]
    argv += ["--n", "1", "--max-new-tokens", "4", "--max-retries", "1", "--request-timeout", "2"]
    start = time.monotonic()
    with BadServer(mode) as server:
        assert main([*argv, "--base-url", server.url, "--config", str(tmp_path / "fast.yaml")]) == 2
    assert time.monotonic() - start < 20  # the drip-fed body (10 s a try) is cut at 2 s
    err = error_line(capsys)
    assert message in err, err
    assert server.requests == tries
    assert not list((run / "generate").glob("shard-*")) if (run / "generate").exists() else True
