"""``winnow batch-requests`` and ``winnow import --openai-batch`` over a real local server:
the batch file holds the openai backend's requests (its seeds), the results read back make the
stage the openai backend makes, row for row; a bad results file is one line naming the file,
line and field (exit 2), or, under ``--on-error skip``, rows in ``generate/errors.jsonl``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import write_jsonl
from serving import FakeServer, serve_process, wait_healthy

from winnow.cli import main
from winnow.generate.openai_api import request_seed
from winnow.openai_batch import split_custom_id
from winnow.stages import shard_seed

PROMPTS = [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(4)] + [
    {"id": "chat#1", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]}
]
IDS = [p["id"] for p in PROMPTS]


def write_config(folder: Path, url: str, n: int = 3, **more) -> Path:
    generate = {"backend": "openai", "base_url": url, "models": ["fake-model"], "n": n, "max_new_tokens": 4}
    generate |= {"shard_size": 2, "seed": 7, "top_k": 5, "retry_backoff": 0.01, **more}
    path = folder / "gen.yaml"
    path.write_text(json.dumps({"prompts": str(folder / "prompts.jsonl"), "generate": generate}))  # JSON is YAML
    return path


@pytest.fixture()
def folder(tmp_path):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    return tmp_path


def answer_all(requests: Path, url: str, out: Path, *, shuffle: int | None = None) -> list[dict]:
    """Post every line of a batch input file to the server at ``url`` (its API root) and write
    what it answered as a batch output file (in another order when ``shuffle`` is a seed)."""
    root = url.removesuffix("/v1")
    results = []
    for line in requests.read_text().splitlines():
        request = json.loads(line)
        reply = httpx.post(root + request["url"], json=request["body"], timeout=60)
        body = reply.json()
        results.append(
            {
                "id": f"batch_req_{len(results)}",
                "custom_id": request["custom_id"],
                "response": {"status_code": reply.status_code, "request_id": "r", "body": body},
                "error": None,
            }
        )
    if shuffle is not None:
        random.Random(shuffle).shuffle(results)  # a batch API returns results in any order
    write_jsonl(out, results)
    return results


def stage_files(run: Path) -> dict[str, bytes]:
    names = ["config.json", "prompts.jsonl", *(p.name for p in (run / "generate").glob("shard-*.jsonl"))]
    return {name: (run / "generate" / name).read_bytes() for name in sorted(names)}


def test_the_batch_file_holds_the_openai_backends_requests(folder):
    config = write_config(folder, "http://127.0.0.1:9/v1", top_p=0.9, stop=["\n"])
    assert main(["batch-requests", "--config", str(config), "--out", str(folder / "batch.jsonl")]) == 0
    lines = [json.loads(line) for line in (folder / "batch.jsonl").read_text().splitlines()]
    assert [split_custom_id(line["custom_id"]) for line in lines] == [(pid, j) for pid in IDS for j in range(3)]
    assert {line["method"] for line in lines} == {"POST"}
    assert [line["url"] for line in lines] == ["/v1/completions"] * 12 + ["/v1/chat/completions"] * 3
    for k, line in enumerate(lines):
        i, j = divmod(k, 3)
        body = line["body"]
        assert body["seed"] == request_seed(shard_seed(7, 0, i // 2), i % 2, j)  # shard i // 2, place i % 2
        assert {key: body[key] for key in ("model", "n", "temperature", "top_p", "max_tokens", "stop", "top_k")} == {
            "model": "fake-model", "n": 1, "temperature": 1.0, "top_p": 0.9, "max_tokens": 4, "stop": ["\n"], "top_k": 5
        }  # fmt: skip
        assert body.get("prompt") == PROMPTS[i].get("prompt") and body.get("messages") == PROMPTS[i].get("messages")


def test_the_config_beside_keeps_the_image_options(folder):
    """``import --openai-batch --config`` reads the prompts' images as batch-requests did."""
    config = write_config(folder, "http://127.0.0.1:9/v1")
    argv = ["batch-requests", "--config", str(config), "--out", str(folder / "batch.jsonl")]
    assert main([*argv, "--max-image-bytes", "5000", "--image-paths-outside"]) == 0
    beside = yaml.safe_load((folder / "batch.config.yaml").read_text())
    assert beside["images"] == {"paths_outside": True, "max_bytes": 5000}


def test_round_trip_makes_the_stage_the_openai_backend_makes(folder, capsys):
    """Against a server that takes single requests the backend asks for each sample alone,
    with the seeds the batch file holds: the imported stage is the same, file for file."""
    with FakeServer(refuse_n=True) as fake:
        config = write_config(folder, fake.url)
        assert main(["batch-requests", "--config", str(config), "--out", str(folder / "batch.jsonl")]) == 0
        answer_all(folder / "batch.jsonl", fake.url, folder / "results.jsonl", shuffle=3)
        assert main(["generate", "--config", str(config), "--run-dir", str(folder / "backend")]) == 0
    # the config batch-requests keeps beside the batch: the same generate section, every field
    beside = folder / "batch.config.yaml"
    assert yaml.safe_load(beside.read_text())["generate"]["seed"] == 7
    argv = ["import", "--openai-batch", str(folder / "results.jsonl"), "--config", str(beside)]
    assert main([*argv, "--run-dir", str(folder / "batch")]) == 0
    assert stage_files(folder / "batch") == stage_files(folder / "backend")
    manifest = json.loads((folder / "batch" / "generate" / "manifest.json").read_text())
    backend = json.loads((folder / "backend" / "generate" / "manifest.json").read_text())
    rows = [json.loads(line) for p in sorted((folder / "batch" / "generate").glob("shard-*")) for line in p.open()]
    tokens = sum(r["num_tokens"] for r in rows)  # one request a row: the fake counts 3 prompt tokens each
    assert manifest["usage"] == backend["usage"] == {"requests": 15, "prompt_tokens": 45, "completion_tokens": tokens}
    assert manifest["source"]["rows"] == 15 and manifest["errors"] == 0
    assert main(["verify", str(folder / "batch")]) == 0
    for command in (["score", "--reward-fn", "length"], ["select", "--strategy", "top_per_prompt"]):
        assert main([*command, "--run-dir", str(folder / "batch")]) == 0
        assert main([*command, "--run-dir", str(folder / "backend")]) == 0
    assert (folder / "batch" / "select" / "selected.jsonl").read_bytes() == (
        folder / "backend" / "select" / "selected.jsonl"
    ).read_bytes()
    capsys.readouterr()
    assert main([*argv, "--run-dir", str(folder / "batch")]) == 0  # again: nothing to do, the same stage
    assert stage_files(folder / "batch") == stage_files(folder / "backend")


def _results(folder: Path, edit) -> Path:
    """The results file of a healthy server, with ``edit(results)`` applied."""
    with FakeServer() as fake:
        config = write_config(folder, fake.url, n=1)
        assert main(["batch-requests", "--config", str(config), "--out", str(folder / "batch.jsonl")]) == 0
        results = answer_all(folder / "batch.jsonl", fake.url, folder / "results.jsonl")
    edit(results)
    write_jsonl(folder / "results.jsonl", results)
    return config


def run_import(folder: Path, config: Path, *extra: str) -> int:
    argv = ["import", "--openai-batch", str(folder / "results.jsonl"), "--config", str(config)]
    return main([*argv, "--run-dir", str(folder / "run"), *extra])


def refused(folder: Path, config: Path, capsys) -> str:
    assert run_import(folder, config) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (folder / "run" / "generate" / "manifest.json").exists()
    return err.strip()


def test_an_error_line_names_its_file_line_and_field(folder, capsys):
    def edit(results):
        results[2]["error"] = {"code": "server_error", "message": "the batch ran out of time"}
        results[2]["response"] = None

    config = _results(folder, edit)
    out = folder / "results.jsonl"
    assert refused(folder, config, capsys) == (
        f"winnow: error: {out}:3: field 'error': the batch ran out of time; "
        "--on-error skip records such prompts and goes on"
    )


def test_a_missing_result_and_a_refused_request_are_named(folder, capsys):
    config = _results(folder, lambda results: results.pop(1))
    assert refused(folder, config, capsys) == (
        f"winnow: error: {folder / 'results.jsonl'}: field 'custom_id': no result for 'p1#0' (prompt_id 'p1'); "
        "--on-error skip records such prompts and goes on"
    )

    def refuse(results):
        results[0]["response"] = {"status_code": 400, "body": {"error": {"message": "max_tokens is too large"}}}

    config = _results(folder, refuse)
    assert refused(folder, config, capsys).startswith(
        f"winnow: error: {folder / 'results.jsonl'}:1: field 'response.status_code': 400 max_tokens is too large;"
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.__setitem__(0, "{not json"), ":1: malformed JSON"),
        (
            lambda r: r[1].__setitem__("custom_id", "p9#0"),
            ":2: field 'custom_id': 'p9#0' is not a request of this batch",
        ),
        (lambda r: r[1].__setitem__("custom_id", "p0#0"), ":2: field 'custom_id': 'p0#0' repeats line 1"),
        (lambda r: r[3]["response"]["body"].pop("choices"), ":4: field 'response.body': no list of choices in dict"),
    ],
)
def test_a_malformed_results_file_is_one_line(folder, capsys, edit, message):
    err = refused(folder, _results(folder, edit), capsys)
    assert err.startswith(f"winnow: error: {folder / 'results.jsonl'}{message}")


def test_skip_records_failed_and_missing_requests_and_keeps_the_rest(folder, capsys):
    def edit(results):
        results[0]["error"] = {"message": "refused"}
        results.pop(3)

    config = _results(folder, edit)
    assert run_import(folder, config, "--on-error", "skip") == 0
    generate = folder / "run" / "generate"
    errors = [json.loads(line) for line in (generate / "errors.jsonl").read_text().splitlines()]
    assert [(e["prompt_id"], e["kind"]) for e in errors] == [("p0", "request"), ("p3", "request")]
    assert errors[0]["error"] == f"{folder / 'results.jsonl'}:1: field 'error': refused"
    assert errors[1]["error"] == f"{folder / 'results.jsonl'}: field 'custom_id': no result for 'p3#0' (prompt_id 'p3')"
    manifest = json.loads((generate / "manifest.json").read_text())
    assert (manifest["errors"], manifest["num_completions"], manifest["usage"]["requests"]) == (2, 3, 3)
    assert main(["verify", str(folder / "run")]) == 0
    capsys.readouterr()


def test_round_trip_through_winnow_serve_then_score_and_select(tmp_path, tiny_policy):
    """A real model behind ``winnow serve`` answers the batch's lines one by one; with n = 1
    the openai backend asks for the same samples with the same seeds, so the two stages, the
    scores and the selection are the same."""
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"tell me about {i}"} for i in range(4)])
    model = str(tiny_policy)
    with serve_process(["--model", model, "--device", "cpu", "--max-tokens", "64"]) as (url, proc):
        wait_healthy(url, proc)
        flags = ["--prompts", str(tmp_path / "prompts.jsonl"), "--backend", "openai", "--base-url", f"{url}/v1"]
        flags += ["--model", model, "--n", "1", "--max-new-tokens", "5", "--shard-size", "3", "--seed", "11"]
        flags += ["--top-logprobs", "2"]  # the rows keep confidence columns: the import must make them alike
        assert main(["batch-requests", *flags, "--out", str(tmp_path / "batch.jsonl")]) == 0
        answer_all(tmp_path / "batch.jsonl", f"{url}/v1", tmp_path / "results.jsonl", shuffle=1)
        # one request at a time, as the lines were answered: winnow serve samples a batch of
        # concurrent requests with the first one's seed
        assert main(["generate", *flags, "--concurrency", "1", "--run-dir", str(tmp_path / "backend")]) == 0
    config = str(tmp_path / "batch.config.yaml")
    argv = ["import", "--openai-batch", str(tmp_path / "results.jsonl"), "--config", config]
    assert main([*argv, "--run-dir", str(tmp_path / "batch")]) == 0
    assert stage_files(tmp_path / "batch") == stage_files(tmp_path / "backend")
    for run in ("batch", "backend"):
        assert main(["score", "--run-dir", str(tmp_path / run), "--reward-fn", "length"]) == 0
        assert main(["select", "--run-dir", str(tmp_path / run), "--strategy", "top_k_overall", "--k", "2"]) == 0
    for name in ("score/rewards.npy", "select/selected.jsonl"):
        assert (tmp_path / "batch" / name).read_bytes() == (tmp_path / "backend" / name).read_bytes()
    manifest = json.loads((tmp_path / "batch" / "generate" / "manifest.json").read_text())
    assert manifest["usage"]["requests"] == 4 and manifest["usage"]["prompt_tokens"] > 0
    rows = [json.loads(line) for p in sorted((tmp_path / "batch" / "generate").glob("shard-*")) for line in p.open()]
    assert all("usage" in r and len(r) > 7 for r in rows)  # usage, and the confidence summaries
