"""OpenAI batch files: ``winnow batch-requests`` writes the requests of a generate stage,
``winnow import --openai-batch`` reads the answers back into that stage.

A batch API (OpenAI's and others', at about half the price, and ``vllm run-batch``) takes a
JSONL file of requests and returns a JSONL file of results, in any order. The input file
holds one line per (prompt, sample) for each model::

    {"custom_id": "p3#1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": ..., "messages": [...], "n": 1, "temperature": ..., "seed": ...}}

``custom_id`` is ``PROMPT_ID#SAMPLE_INDEX`` (split at the last ``#``, so any prompt id
works); the body is what the ``openai`` backend sends for that sample
(``OpenAIBackend.params``: same endpoint, sampling fields and ``extra_body`` fields), with
the seed it derives when it asks for samples one at a time: ``request_seed(shard seed,
place in shard, sample)``. So the stage that ``import --openai-batch`` writes is the one
``winnow generate --backend openai`` writes under the same config against a server that
takes single requests (always with ``--n 1``): same ``config.json``, same shard files, row
for row, each row's ``usage`` and log-probability columns (``--top-logprobs``) included;
score and select read it as any generate stage.

Each result line must name a ``custom_id`` of the batch, once, and answer 200 with a reply
that passes ``winnow.replies`` (one choice, with a token count). A line that does not (an
``error`` object, another status, an invalid body) and a custom_id with no line fail the
import with one line naming the file, line and field; under ``on_error: skip`` they are
recorded in ``generate/errors.jsonl`` instead, and the prompt is left without completions
from that model, as the ``openai`` backend leaves a prompt whose request failed. An unknown,
repeated or malformed custom_id, or a line that is not a JSON object, always fails: the file
is not the batch's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from winnow.confidence import row_columns
from winnow.config import GenerateConfig
from winnow.errors import WinnowError, where
from winnow.executors import ERROR, write_shard
from winnow.generate.contract import Sampling, sampling_of
from winnow.generate.openai_api import OpenAIBackend, endpoint_of, request_seed
from winnow.records import Completion, Prompt, atomic_write_jsonl, atomic_write_text, read_jsonl, sha256_file
from winnow.remote import InvalidReply, generate_client
from winnow.replies import Choice, parse_choices, usage_of
from winnow.rundir import Stage, refuse_errors
from winnow.stages.generate import accepted_errors, count_streamed, folder_config, shard_name, shard_seed

URLS = {True: "/v1/chat/completions", False: "/v1/completions"}
"""The batch line's ``url`` by whether the prompt goes to the chat endpoint."""


def custom_id(prompt_id: str, sample_index: int) -> str:
    """A request's id in the batch: prompt id and sample index.

    >>> custom_id("p3", 1), split_custom_id("a#b#12")
    ('p3#1', ('a#b', 12))
    """
    return f"{prompt_id}#{sample_index}"


def split_custom_id(text: object) -> tuple[str, int] | None:
    """(prompt id, sample index) of a ``custom_id``; None when it is not one."""
    if not isinstance(text, str) or "#" not in text:
        return None
    prompt_id, _, index = text.rpartition("#")
    return (prompt_id, int(index)) if index.isdigit() else None


@dataclass(frozen=True)
class Slot:
    """One request of the batch: the prompt, its model, its column and where it lies."""

    prompt: Prompt
    model_index: int
    sample_index: int
    """The column: model k's sample j is k * n + j."""
    shard: str
    seed: int


def slots(prompts: list[Prompt], config: GenerateConfig) -> Iterator[Slot]:
    """Every (prompt, sample) of each model in the stage's order: model, shard, prompt, sample."""
    size = config.shard_size
    for k in range(len(config.models)):
        for i, start in enumerate(range(0, len(prompts), size)):
            seed = shard_seed(config.seed, k, i)
            for place, prompt in enumerate(prompts[start : start + size]):
                for j in range(config.n):
                    yield Slot(prompt, k, k * config.n + j, shard_name(k, i), request_seed(seed, place, j))


def check_config(config: GenerateConfig) -> None:
    """The config checked as for ``winnow generate``; the batch is the openai backend's."""
    config.validate()
    if config.backend != "openai":
        raise WinnowError(
            "generate.backend: batch files hold the openai backend's requests; "
            "set backend openai and base_url (the API the batch goes to)"
        )


def batch_requests(prompts: list[Prompt], config: GenerateConfig, out: str | Path) -> int:
    """Write the batch input file ``out`` (JSONL, written whole then renamed); returns its lines."""
    check_config(config)
    sampling = sampling_of(config)
    backends = [OpenAIBackend(m, client=_client(config), endpoint=config.endpoint) for m in config.models]
    lines = [_line(backends[s.model_index], s, sampling) for s in slots(prompts, config)]
    atomic_write_jsonl(Path(out), lines)
    return len(lines)


def config_beside(out: str | Path) -> Path:
    """Where ``batch-requests`` keeps the config of the batch at ``out``: ``batch.jsonl`` ->
    ``batch.config.yaml``."""
    return Path(out).with_suffix(".config.yaml")


def write_config(out: str | Path, config: GenerateConfig, prompts: dict) -> Path:
    """The YAML file ``import --openai-batch --config`` reads back: the prompts (``prompts``:
    ``path``, ``prompt_column``, ``id_column`` and the image options as ``load_prompts`` takes
    them; the path made absolute), the ``images`` section they were read under (so the import
    reads the same images) and the generate section the requests were made with, every field.
    Returns its path."""
    import yaml

    path = config_beside(out)
    data = {
        "prompts": str(Path(prompts["path"]).resolve()),
        "prompt_column": prompts["prompt_column"],
        "id_column": prompts["id_column"],
        "images": {"paths_outside": prompts["image_paths_outside"], "max_bytes": prompts["max_image_bytes"]},
        "generate": asdict(config),
    }
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def _line(backend: OpenAIBackend, slot: Slot, sampling: Sampling) -> dict:
    chat, params = backend.params(slot.prompt, sampling, 1, slot.seed)
    extra = params.pop("extra_body") or {}  # the client merges these into the body; a batch line holds the body
    return {
        "custom_id": custom_id(slot.prompt.id, slot.sample_index),
        "method": "POST",
        "url": URLS[chat],
        "body": {**params, **extra},
    }


def _client(config: GenerateConfig):
    client = generate_client(config)
    assert client is not None  # check_config: backend openai with a base_url
    return client


@dataclass
class Result:
    """One custom_id's answer: its choice and usage, or why it failed (``where: why``)."""

    choice: Choice | None = None
    usage: dict | None = None
    failed: str | None = None


def import_openai_batch(run_dir: str | Path, output: str | Path, prompts: list[Prompt], config: GenerateConfig) -> dict:
    """Write ``run_dir/generate`` from a batch output file; returns the manifest. Rerunning
    on the same files does nothing."""
    check_config(config)
    source = Path(output)
    if not source.is_file():
        raise WinnowError(f"batch output file does not exist: {source}")
    expected = {custom_id(s.prompt.id, s.sample_index): s for s in slots(prompts, config)}
    results = read_results(source, expected, config)
    for cid, slot in expected.items():
        if cid not in results:
            why = f"{where(source, None, 'custom_id')}: no result for {cid!r} (prompt_id {slot.prompt.id!r})"
            results[cid] = Result(failed=why)
    if config.on_error != "skip":
        first = next((r.failed for r in results.values() if r.failed), None)
        if first is not None:
            raise WinnowError(f"{first}; --on-error skip records such prompts and goes on")
    stage = Stage(run_dir, "generate", folder_config(prompts, config))
    with stage:
        names = list(dict.fromkeys(s.shard for s in expected.values()))
        pending = set(stage.pending(names))
        if not pending and stage.stored_manifest() and stage.matches("prompts.jsonl"):
            return stage.manifest()
        stage.claim()
        for name, rows, keys in _shards(expected, results, config):
            if name in pending:  # a failed prompt has no rows: the keys it may hold, as the backend's
                write_shard(stage.dir, name, rows, config_hash=stage.hash)
                stage.record_shard(name, keys, exact=False)
        errors = stage.errors(names)
        refuse_errors(stage, errors, accepted=accepted_errors(config))
        num_completions, skipped, usage = count_streamed(stage, names, prompts, len(config.models))
        atomic_write_jsonl(stage.dir / "prompts.jsonl", [p.to_row() for p in prompts])
        return stage.finish(
            shards=names,
            outputs=["prompts.jsonl", *stage.write_errors(errors)],
            num_prompts=len(prompts),
            num_columns=config.n * len(config.models),
            num_completions=num_completions,
            skipped_prompts=skipped,
            errors=len(errors),
            usage=usage.record(config.price_per_mtok),
            source={"path": str(source), "sha256": sha256_file(source), "rows": len(results), "kind": "openai_batch"},
        )


def _shards(expected: dict[str, Slot], results: dict[str, Result], config: GenerateConfig):
    """(shard name, rows, the keys it may hold) in order, rows as the openai backend's worker
    makes them: the error row of each failed prompt first, then each kept prompt's
    completions by sample."""
    by_shard: dict[str, list[tuple[str, Slot]]] = {}
    for cid, slot in expected.items():
        by_shard.setdefault(slot.shard, []).append((cid, slot))
    for name, entries in by_shard.items():
        failed: dict[str, str] = {}
        for cid, slot in entries:
            why = results[cid].failed
            if why is not None:
                failed.setdefault(slot.prompt.id, why)
        model = config.models[entries[0][1].model_index]
        rows = [{"prompt_id": pid, "model": model, "kind": "request", ERROR: why} for pid, why in failed.items()]
        for cid, slot in entries:
            if slot.prompt.id in failed:
                continue
            got = results[cid]
            choice = got.choice
            assert choice is not None and choice.num_tokens is not None
            row = Completion(
                slot.prompt.id, slot.sample_index, model, choice.text, choice.num_tokens, choice.finish_reason
            ).to_row()
            row["usage"] = got.usage
            # the log-probabilities as the backend's worker keeps them (GenerateWorker._rows)
            row.update(row_columns(choice.logprobs, window=config.confidence_window, keep=config.keep_logprobs))
            rows.append(row)
        yield name, rows, {(slot.prompt.id, slot.sample_index) for _, slot in entries}


def read_results(source: Path, expected: dict[str, Slot], config: GenerateConfig) -> dict[str, Result]:
    """custom_id -> its Result, for every line of the output file, each checked as the
    openai backend checks a reply to the line's request (``config``: its endpoint, token
    limit and top log-probabilities)."""
    out: dict[str, Result] = {}
    lines: dict[str, int] = {}
    for line, row in read_jsonl(source):
        cid = row.get("custom_id")
        if split_custom_id(cid) is None or cid not in expected:
            shown = repr(cid)[:80]
            raise WinnowError(f"{where(source, line, 'custom_id')}: {shown} is not a request of this batch")
        assert isinstance(cid, str)
        if cid in out:
            raise WinnowError(f"{where(source, line, 'custom_id')}: {cid!r} repeats line {lines[cid]}")
        lines[cid] = line
        chat = endpoint_of(config.endpoint, expected[cid].prompt) == "chat"
        out[cid] = _result(row, source, line, chat=chat, max_tokens=config.max_new_tokens, top=config.top_logprobs)
    return out


def _result(row: dict, source: Path, line: int, *, chat: bool, max_tokens: int, top: int) -> Result:
    """One result line: its choice and usage, or why it failed."""
    if row.get("error") is not None:
        error = row["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        return Result(failed=f"{where(source, line, 'error')}: {' '.join(str(message).split())[:200]}")
    response = row.get("response")
    if not isinstance(response, dict):
        return Result(failed=f"{where(source, line, 'response')}: missing, or not an object")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        detail = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
        detail = detail if isinstance(detail, str) else ""
        return Result(failed=f"{where(source, line, 'response.status_code')}: {status!r} {detail}".rstrip())
    try:
        choices = parse_choices(body, chat=chat, max_tokens=max_tokens, top_logprobs=top)
        if len(choices) != 1 or choices[0].num_tokens is None:
            raise InvalidReply(f"{len(choices)} choices, token count {choices[0].num_tokens}; expected one, counted")
        usage = usage_of(body, choices)  # type: ignore[arg-type]  # parse_choices took it: an object
    except InvalidReply as e:
        return Result(failed=f"{where(source, line, 'response.body')}: {e}")
    return Result(choice=choices[0], usage=usage)
