"""The generate stage: N completions per prompt and model, one shard file per chunk of prompts."""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from winnow import images
from winnow.budget import LIMITS, Usage, per_worker
from winnow.confidence import row_columns
from winnow.config import ExecutorConfig, GenerateConfig
from winnow.errors import WinnowError
from winnow.executors import ERROR, Meter, ShardReport, ShardTask, run_shards
from winnow.generate import make_backend
from winnow.generate.contract import sampling_of
from winnow.provenance import model_identity
from winnow.records import Prompt, atomic_write_jsonl, config_hash
from winnow.remote import generate_client
from winnow.rundir import Stage, refuse_errors


def shard_seed(seed: int, model_index: int, shard_index: int) -> int:
    """A per-shard seed, so a resumed run samples exactly what an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, model_index, shard_index]).generate_state(1)[0])


def generate(
    run_dir: str | Path,
    prompts: list[Prompt],
    config: GenerateConfig,
    executor: ExecutorConfig | None = None,
    *,
    first_column: int = 0,
    image_store: str | Path | None = None,
) -> dict:
    """Sample ``config.n`` completions per prompt from each model; returns the manifest.

    ``executor`` says where the shards are made (default: this process); it never changes them.
    ``first_column``: sample index of the first completion (an adaptive run's later steps
    continue the columns of the earlier ones); the stage's matrix then has
    first_column + n x models columns, the first ones empty.
    ``image_store``: the run dir that keeps the one copy of the images (the run dir an adaptive
    step or a later round is nested in, or the first evaluated model's; ``images.store``'s
    ``shared``); it never changes what is sampled.
    """
    config.validate()
    executor = executor or ExecutorConfig()
    rows = [p.to_row() for p in prompts]
    stage = Stage(run_dir, "generate", folder_config(prompts, config, first_column))
    with stage:
        images.store(run_dir, prompts, shared=image_store)  # before sampling: a resumed run finds them all
        server = _describe_server(config)
        shard_names, made = [], 0
        report = ShardReport(executor=executor.name)  # all models' pools together
        for k in range(len(config.models)):
            done = sample_model(stage, prompts, config, executor, model_index=k, first_column=first_column)
            shard_names += done.names
            report = report.merge(done.report)
            made += done.made
        report.raise_failed("generate", made)
        errors = stage.errors(shard_names)
        refuse_errors(stage, errors, accepted=accepted_errors(config))
        if not made and stage.stored_manifest() and stage.matches("prompts.jsonl"):
            return stage.manifest()
        # one pass over the shards, one in memory at a time: only the counts are kept
        num_completions, skipped, usage = count_streamed(stage, shard_names, prompts, len(config.models))
        stage.claim()
        atomic_write_jsonl(stage.dir / "prompts.jsonl", rows)
        return stage.finish(
            shards=shard_names,
            outputs=["prompts.jsonl", *stage.write_errors(errors)],
            num_prompts=len(prompts),
            num_columns=first_column + config.n * len(config.models),
            num_completions=num_completions,
            skipped_prompts=skipped,
            errors=len(errors),
            **images.stored_summary(prompts),
            **({"server": server} if server else {}),
            **({"usage": usage.record(config.price_per_mtok)} if server else {}),
            executor=report.record(executor),
        )


@dataclass
class ModelShards:
    """One model's pass over the prompts: all its shard names, what its pool reported, and
    how many shards it made now (0 when a resumed run had them all)."""

    names: list[str]
    report: ShardReport
    made: int


def sample_model(
    stage: Stage,
    prompts: list[Prompt],
    config: GenerateConfig,
    executor: ExecutorConfig,
    *,
    model_index: int,
    first_column: int,
) -> ModelShards:
    """Make model ``model_index``'s pending shards, ``config.shard_size`` prompts each.

    Model k owns columns first_column + k*n .. first_column + k*n + n-1. A shard's failure
    is left in the report, to be named once every model has had its turn."""
    k, model = model_index, config.models[model_index]
    num_shards = math.ceil(len(prompts) / config.shard_size)
    names = [shard_name(k, i) for i in range(num_shards)]
    chunks = {name: prompts[i * config.shard_size : (i + 1) * config.shard_size] for i, name in enumerate(names)}
    pending = set(stage.pending(names))
    tasks = [
        ShardTask(name, (chunks[name], shard_seed(config.seed, k, i)))
        for i, name in enumerate(names)
        if name in pending
    ]
    # a prompt too long for the model has no rows at all
    columns = range(first_column + k * config.n, first_column + (k + 1) * config.n)
    keys = {name: {(p.id, j) for p in chunks[name] for j in columns} for name in pending}
    part = run_shards(
        tasks,
        # each worker paces its own requests: a share of the limits each
        GenerateWorkerFactory(
            per_worker(config, LIMITS["generate"], executor.share()),
            k,
            prompts,
            first_column,
            n_mode=probed_mode(stage, [name for name in names if name not in pending], config),
        ),
        stage.dir,
        claim=stage.claim,
        executor=executor,
        desc=f"generate {model}",
        on_written=stage.recorder(keys, exact=False),
        config_hash=stage.hash,
        # completions, not shards: a run of one shard would sit at 0/1 until its end
        meter=Meter("completion", {t.name: len(t.payload[0]) * config.n for t in tasks}),
    )
    if not part.failed:
        stage.check_made(tasks, part, keys, exact=False)
    return ModelShards(names, part, len(tasks))


def shard_name(model_index: int, shard_index: int) -> str:
    """Model k's shard i: ``m0-00003`` (its file: ``shard-m0-00003.jsonl``)."""
    return f"m{model_index}-{shard_index:05d}"


def folder_config(prompts: list[Prompt], config: GenerateConfig, first_column: int = 0) -> dict:
    """What the stage's outputs are made under (its ``config.json``): the options, the
    prompts' hash and each model's identity. ``winnow.plan`` compares it before sampling."""
    provenance = {"models": {spec: model_identity(spec) for spec in config.models}}
    return {
        "generate": config.stage_config(),
        "prompts_hash": config_hash([p.to_row() for p in prompts]),
        "provenance": provenance,
        **({"first_column": first_column} if first_column else {}),
    }


@dataclass(frozen=True)
class GenerateWorkerFactory:
    """Builds the worker of model ``model_index`` (picklable: executors ship it to workers)."""

    config: GenerateConfig
    model_index: int
    prompts: list[Prompt]
    """All prompts, so a too-long one is reported before the first shard is sampled."""
    first_column: int = 0
    """Sample index of this stage's first completion (see ``generate``)."""
    n_mode: str | None = None
    """How the openai backend asks for n samples, where a finished shard recorded it (``probed_mode``)."""

    def __call__(self) -> GenerateWorker:
        worker = GenerateWorker(self.config, self.model_index, self.prompts, self.first_column)
        if self.n_mode is not None and hasattr(worker.backend, "n_mode"):
            worker.backend.n_mode = self.n_mode  # learned by an earlier run: not paid for twice
        return worker


class GenerateWorker:
    """Loads one model once; turns (prompts, seed) into completion rows for its columns."""

    def __init__(self, config: GenerateConfig, model_index: int, prompts: list[Prompt], first_column: int = 0):
        self.config = config
        self.model_index = model_index
        self.first_column = first_column
        self.backend = make_backend(
            config.backend,
            config.models[model_index],
            device=config.device,
            batch_size=config.batch_size,
            client=generate_client(config),
            endpoint=config.endpoint,
            dtype=config.dtype,
            engine=config.engine(),
        )
        self.too_long = _too_long(self.backend, prompts, config)
        """Prompt id -> why it is skipped (too long for the context); the rest are sampled."""
        self.sampling = sampling_of(config)
        self.progress: Callable[[int], object] | None = None
        """Told the completions made as each batch of a shard finishes (the local executor's bar)."""

    @property
    def pipelined(self) -> bool:
        """Whether shards may overlap (``submit``): a server backend keeps its requests
        ``concurrency`` deep across shard boundaries."""
        return hasattr(self.backend, "submit")

    def depth(self) -> int:
        """Shards submitted and not yet written: four times what fills ``concurrency``, plus
        two, so requests stay queued at the server while the oldest shard waits on its
        slowest request (shards are written in order); memory is that many shards' rows."""
        client = generate_client(self.config)
        concurrency = client.concurrency if client is not None else 1
        return 4 * -(-concurrency // self.config.shard_size) + 2

    def submit(self, task: ShardTask) -> concurrent.futures.Future:
        """``run`` without waiting, for a backend with ``submit``: a future of the shard's rows."""
        chunk, seed = task.payload
        failed = self._skipped(chunk)
        chunk = [p for p in chunk if p.id not in self.too_long]
        out: concurrent.futures.Future = concurrent.futures.Future()
        if not chunk:
            out.set_result(failed)
            return out
        inner = self.backend.submit(chunk, self.sampling, seed=seed)  # type: ignore[attr-defined]

        def done(f: concurrent.futures.Future) -> None:
            if f.cancelled():
                out.cancel()
            elif f.exception() is not None:
                out.set_exception(f.exception())
            else:
                out.set_result(failed + self._rows(f.result()))

        inner.add_done_callback(done)
        out.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        return out

    def close(self) -> None:
        from winnow.generate import is_kept

        if hasattr(self.backend, "close") and not is_kept(self.backend):
            self.backend.close()

    def run(self, task: ShardTask) -> list[dict]:
        chunk, seed = task.payload
        failed = self._skipped(chunk)
        chunk = [p for p in chunk if p.id not in self.too_long]
        if hasattr(self.backend, "on_batch"):  # a backend that decodes a shard in batches says when each ends
            self.backend.on_batch = self.progress
        completions = self.backend.generate(chunk, self.sampling, seed=seed) if chunk else []
        return failed + self._rows(completions)

    def _skipped(self, chunk: list[Prompt]) -> list[dict]:
        """An error row (``ERROR``) for each prompt of ``chunk`` too long for the context."""
        model = self.config.models[self.model_index]
        return [
            {"prompt_id": p.id, "model": model, "kind": "long_prompt", ERROR: self.too_long[p.id]}
            for p in chunk
            if p.id in self.too_long
        ]

    def _rows(self, completions) -> list[dict]:
        shard: list[dict] = []
        for prompt_id, reason in getattr(completions, "failed", {}).items():  # refused after retries
            model = self.config.models[self.model_index]
            shard.append({"prompt_id": prompt_id, "model": model, "kind": "request", ERROR: reason})
        usage = getattr(completions, "usage", {})  # a server backend's: each request's, at its first row
        probe = getattr(completions, "probe", None)  # the tries its probe paid for and discarded
        for place, c in enumerate(completions):
            row = c.to_row()
            if (c.prompt_id, c.sample_index) in usage:
                row["usage"] = usage[(c.prompt_id, c.sample_index)]
            if probe is not None and place == 0:
                row[PROBE] = probe
            # the log-probabilities as the config keeps them: two numbers, or every token's too
            row.update(row_columns(c.logprobs, window=self.config.confidence_window, keep=self.config.keep_logprobs))
            # model k owns columns k*n .. k*n+n-1, after the first_column ones of earlier steps
            row["sample_index"] += self.first_column + self.model_index * self.config.n
            shard.append(row)
        return shard


PROBE = "probe"
"""The row key of what the openai backend's probe discarded (``openai_api.Completions.probe``)."""


def probed_mode(stage: Stage, finished: list[str], config: GenerateConfig) -> str | None:
    """The n mode a finished shard of these recorded, or None: then the backend probes (at
    no extra cost where the server honours n). The record is on the first row of the shard
    whose call probed (error rows go to its errors file), so one line a shard is read; only
    the openai backend asking for n > 1 probes, so for any other nothing is read."""
    import json

    from winnow.executors import shard_file

    if config.backend != "openai" or config.n <= 1:
        return None
    for name in finished:
        with shard_file(stage.dir, name).open("rb") as f:
            first = f.readline()
        row = json.loads(first) if first.strip() else {}
        if PROBE in row:
            return row[PROBE]["n_mode"]
    return None


def accepted_errors(config: GenerateConfig) -> tuple[str, ...]:
    """The kinds of error row a stage may finish with under ``config``: any under
    ``on_error: skip``; long prompts alone under ``long_prompts: skip``."""
    if config.on_error == "skip":
        return ("long_prompt", "request")
    return ("long_prompt",) if config.long_prompts == "skip" else ()


def _describe_server(config: GenerateConfig) -> dict | None:
    """For a server backend: its URL and served model names, recorded in the manifest."""
    client = generate_client(config)
    if client is None:
        return None
    from winnow.generate.openai_api import describe_server

    return describe_server(client, config.models)


def _too_long(backend, prompts: list[Prompt], config: GenerateConfig) -> dict[str, str]:
    """Prompt id -> why, for each prompt that leaves no room for max_new_tokens: an error
    naming the first, unless such prompts are skipped (``GenerateConfig.skips_long_prompts``)."""
    room = backend.context_length() - config.max_new_tokens
    out = {}
    for row, (prompt, length) in enumerate(zip(prompts, backend.prompt_lengths(prompts), strict=True), start=1):
        if length <= room:
            continue
        why = (
            f"prompt {prompt.id!r} (row {row}) has {length} tokens, more than the {room} that model "
            f"{backend.model} leaves for the prompt (context {backend.context_length()} minus "
            f"max_new_tokens {config.max_new_tokens})"
        )
        if not config.skips_long_prompts():
            raise WinnowError(f"{why}; pass --on-error skip (or --long-prompts skip) to skip such prompts")
        out[prompt.id] = why
    return out


def count_streamed(stage: Stage, names: list[str], prompts: list[Prompt], num_models: int) -> tuple[int, int, Usage]:
    """(completions, prompt-model pairs with none, the requests' usage) of the shards
    ``names``, read one at a time."""
    from winnow.stream import iter_shard_rows

    counted = _Counted(iter_shard_rows(stage.dir, names, stage.records(), stage="generate"))
    skipped = _count_skipped(prompts, counted, num_models)
    return counted.count, skipped, counted.usage


class _Counted:
    """An iterable that counts what passed through it, and sums the rows' ``usage`` (each
    request's) and ``probe`` (the openai backend's probe tries it did not keep)."""

    def __init__(self, rows):
        self.rows, self.count, self.usage = rows, 0, Usage()

    def __iter__(self):
        for row in self.rows:
            self.count += 1
            if "usage" in row:
                self.usage.add(row["usage"])
            for entry in row.get(PROBE, {}).get("usage", []):
                self.usage.add(entry)
            yield row


def _count_skipped(prompts: list[Prompt], completions, num_models: int) -> int:
    """Prompt-model pairs that got no completion (too long for that model's context)."""
    per_prompt: dict[str, set] = {}
    for c in completions:
        per_prompt.setdefault(c["prompt_id"], set()).add(c["model"])
    return sum(num_models - len(per_prompt.get(p.id, ())) for p in prompts)
