"""The command's flags: each option is a (flag, section, field) row, and everything else
about it (type, metavar, choices, help, default) comes from that config field; the parser
of every subcommand is built from these rows (``winnow.cli`` runs what it parses).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, NamedTuple

from winnow.config import DEVICES, SECTIONS
from winnow.config.fields import DTYPES, hints
from winnow.rewards import BUILTINS
from winnow.select import AGGREGATES
from winnow.serve.reward import REFUSED as SERVE_REFUSED
from winnow.settings import CHOICES, field_docs, type_name


def float_list(text: str) -> list[float]:
    """``1.0,0.2`` -> [1.0, 0.2] (argparse reports a bad one as an invalid value)."""
    return [float(part) for part in text.split(",")]


# Each option is (flag, section, field): its type, metavar, choices, help and default come
# from that config field (annotation, its ``Literal``, docstring, default), so one table
# spells options alike for every subcommand. A row names only what the field cannot say:
# a metavar other than the one its type and name give, or ``nargs``.
class Option(NamedTuple):
    flag: str
    section: str
    field: str
    metavar: str | None = None
    nargs: str | None = None


OPTIONS: dict[str, list[Option]] = {
    "generate": [
        Option("--model", "generate", "models", metavar="PATH"),
        Option("--backend", "generate", "backend"),
        Option("--n", "generate", "n"),
        Option("--temperature", "generate", "temperature"),
        Option("--top-p", "generate", "top_p"),
        Option("--top-k", "generate", "top_k"),
        Option("--min-p", "generate", "min_p"),
        Option("--repetition-penalty", "generate", "repetition_penalty"),
        Option("--stop", "generate", "stop", metavar="TEXT"),
        Option("--max-new-tokens", "generate", "max_new_tokens"),
        Option("--seed", "generate", "seed"),
        Option("--batch-size", "generate", "batch_size"),
        Option("--shard-size", "generate", "shard_size"),
        Option("--long-prompts", "generate", "long_prompts"),
        Option("--base-url", "generate", "base_url"),
        Option("--api-key-env", "generate", "api_key_env"),
        Option("--endpoint", "generate", "endpoint"),
        Option("--concurrency", "generate", "concurrency"),
        Option("--request-timeout", "generate", "request_timeout"),
        Option("--max-retries", "generate", "max_retries"),
        Option("--max-requests-per-minute", "generate", "max_requests_per_minute"),
        Option("--max-tokens-per-minute", "generate", "max_tokens_per_minute"),
        Option("--price-per-mtok", "generate", "price_per_mtok", metavar="IN,OUT"),
        Option("--tensor-parallel-size", "generate", "tensor_parallel_size"),
        Option("--gpu-memory-utilization", "generate", "gpu_memory_utilization"),
        Option("--max-model-len", "generate", "max_model_len"),
        Option("--top-logprobs", "generate", "top_logprobs", metavar="K"),
        Option("--confidence-window", "generate", "confidence_window", metavar="TOKENS"),
        Option("--keep-logprobs", "generate", "keep_logprobs"),
    ],
    "score": [
        Option("--reward-fn", "score", "reward_fn", metavar="SPEC"),
        Option("--reward-model", "score", "reward_model", metavar="PATH"),
        Option("--batch-tokens", "score", "batch_tokens"),
        Option("--max-batch-size", "score", "max_batch_size"),
        Option("--reward-prefix-sharing", "score", "reward_prefix_sharing"),
        Option("--prm-model", "score", "prm_model", metavar="PATH"),
        Option("--prm-shape", "score", "prm_shape"),
        Option("--prm-step-separator", "score", "prm_step_separator", metavar="TEXT"),
        Option("--prm-step-tag", "score", "prm_step_tag", metavar="TOKEN"),
        Option("--prm-labels", "score", "prm_labels", metavar="TOKEN", nargs="+"),
        Option("--prm-aggregate", "score", "prm_aggregate"),
        Option("--prm-system", "score", "prm_system", metavar="TEXT"),
        Option("--reward-judge", "score", "reward_judge", metavar="URL"),
        Option("--judge-model", "score", "judge_model"),
        Option("--judge-rubric", "score", "judge_rubric", metavar="PATH"),
        Option("--judge-api-key-env", "score", "judge_api_key_env"),
        Option("--judge-concurrency", "score", "judge_concurrency"),
        Option("--judge-request-timeout", "score", "judge_request_timeout"),
        Option("--judge-max-retries", "score", "judge_max_retries"),
        Option("--judge-max-requests-per-minute", "score", "judge_max_requests_per_minute"),
        Option("--judge-max-tokens-per-minute", "score", "judge_max_tokens_per_minute"),
        Option("--judge-price-per-mtok", "score", "judge_price_per_mtok", metavar="IN,OUT"),
        Option("--fallback-judge", "score", "fallback_judge", metavar="URL"),
        Option("--fallback-on", "score", "fallback_on"),
        Option("--fallback-prompt", "score", "fallback_prompt", metavar="PATH"),
        Option("--reward-weights", "score", "reward_weights", metavar="W1,W2"),
        Option("--reference-column", "score", "reference_column"),
        Option("--reasoning-tags", "score", "reasoning_tags", metavar="TAG", nargs="+"),
        Option("--ifeval-mode", "score", "ifeval_mode"),
        Option("--code-timeout", "score", "code_timeout_s"),
        Option("--code-memory-mb", "score", "code_memory_mb"),
        Option("--code-strict-results", "score", "code_strict_results"),
        Option("--score-processes", "score", "processes"),
        Option("--reward-timeout", "score", "reward_timeout"),
        Option("--pass-threshold", "score", "pass_threshold"),
    ],
    "select": [
        Option("--strategy", "select", "strategy"),
        Option("--k", "select", "k"),
        Option("--threshold", "select", "threshold"),
        Option("--beta", "select", "beta"),
        Option("--dedup", "select", "dedup"),
        Option("--drop-truncated", "select", "drop_truncated"),
        Option("--pairs", "select", "pairs"),
        Option("--pair-k", "select", "pair_k"),
        Option("--min-margin", "select", "min_margin"),
        Option("--select-seed", "select", "seed"),
        Option("--select-pass-threshold", "select", "pass_threshold"),
        Option("--min-pass-rate", "select", "min_pass_rate"),
        Option("--max-pass-rate", "select", "max_pass_rate"),
        Option("--decontaminate", "select", "decontaminate", metavar="FILE", nargs="+"),
        Option("--decontaminate-ngram", "select", "decontaminate_ngram"),
        Option("--near-dedup", "select", "near_dedup"),
        Option("--near-dedup-threshold", "select", "near_dedup_threshold"),
    ],
    "pick": [
        Option("--select-by", "pick", "select_by"),
        Option("--pick-judge", "pick", "judge", metavar="URL"),
        Option("--pick-model", "pick", "judge_model", metavar="NAME"),
        Option("--pick-window", "pick", "window"),
        Option("--pick-seed", "pick", "seed"),
        Option("--pick-prompt", "pick", "prompt", metavar="PATH"),
        Option("--pick-max-tokens", "pick", "max_tokens"),
        Option("--pick-api-key-env", "pick", "api_key_env"),
        Option("--pick-concurrency", "pick", "concurrency"),
        Option("--pick-price-per-mtok", "pick", "price_per_mtok", metavar="IN,OUT"),
    ],
    "adaptive": [
        Option("--adaptive-step", "adaptive", "step"),
        Option("--stop-when", "adaptive", "stop_when"),
        Option("--answer", "adaptive", "answer"),
    ],
    "sft": [
        Option("--sft-model", "sft", "model", metavar="PATH"),
        Option("--lora", "sft", "lora"),
        Option("--learning-rate", "sft", "learning_rate"),
        Option("--epochs", "sft", "epochs"),
        Option("--sft-batch-size", "sft", "batch_size"),
        Option("--max-length", "sft", "max_length"),
        Option("--sft-strip-reasoning", "sft", "strip_reasoning"),
        Option("--gradient-accumulation-steps", "sft", "gradient_accumulation_steps"),
        Option("--lr-scheduler-type", "sft", "lr_scheduler_type"),
        Option("--warmup-ratio", "sft", "warmup_ratio"),
        Option("--warmup-steps", "sft", "warmup_steps"),
        Option("--weight-decay", "sft", "weight_decay"),
        Option("--eval-split", "sft", "eval_split"),
        Option("--logging-steps", "sft", "logging_steps"),
        Option("--report-to", "sft", "report_to"),
        Option("--lora-r", "sft", "lora_r"),
        Option("--lora-alpha", "sft", "lora_alpha"),
        Option("--lora-target-modules", "sft", "lora_target_modules", metavar="NAME", nargs="+"),
    ],
    "rounds": [
        Option("--rounds", "rounds", "count"),
        Option("--pool", "rounds", "pool"),
        Option("--sft-from", "rounds", "sft_from"),
    ],
    # Where generate and score make their shards; never part of a stage's config.
    "executor": [
        Option("--executor", "executor", "name"),
        Option("--ray-address", "executor", "ray_address", metavar="ADDRESS"),
        Option("--workers", "executor", "workers"),
        Option("--cpus-per-worker", "executor", "cpus_per_worker"),
        Option("--gpus-per-worker", "executor", "gpus_per_worker"),
        Option("--shard-retries", "executor", "retries"),
    ],
    "eval": [
        Option("--eval-prompts", "eval", "prompts", metavar="PATH"),
        Option("--baseline", "eval", "baseline", metavar="PATH"),
        Option("--bootstrap-iters", "eval", "bootstrap_iters"),
        Option("--bootstrap-seed", "eval", "bootstrap_seed"),
    ],
    "dpo": [
        Option("--dpo-model", "dpo", "model", metavar="PATH"),
        Option("--lora", "dpo", "lora"),
        Option("--dpo-beta", "dpo", "beta"),
        Option("--learning-rate", "dpo", "learning_rate"),
        Option("--epochs", "dpo", "epochs"),
        Option("--dpo-batch-size", "dpo", "batch_size"),
        Option("--max-length", "dpo", "max_length"),
        Option("--gradient-accumulation-steps", "dpo", "gradient_accumulation_steps"),
        Option("--lr-scheduler-type", "dpo", "lr_scheduler_type"),
        Option("--warmup-ratio", "dpo", "warmup_ratio"),
        Option("--warmup-steps", "dpo", "warmup_steps"),
        Option("--weight-decay", "dpo", "weight_decay"),
        Option("--eval-split", "dpo", "eval_split"),
        Option("--logging-steps", "dpo", "logging_steps"),
        Option("--report-to", "dpo", "report_to"),
        Option("--lora-r", "dpo", "lora_r"),
        Option("--lora-alpha", "dpo", "lora_alpha"),
        Option("--lora-target-modules", "dpo", "lora_target_modules", metavar="NAME", nargs="+"),
    ],
    "serve": [
        Option("--model", "serve", "model", metavar="PATH"),
        Option("--backend", "serve", "backend"),
        Option("--served-model-name", "serve", "served_model_name"),
        Option("--host", "serve", "host"),
        Option("--port", "serve", "port"),
        Option("--api-key-env", "serve", "api_key_env"),
        Option("--device", "serve", "device"),
        Option("--batch-size", "serve", "batch_size"),
        Option("--base-url", "serve", "base_url"),
        Option("--upstream-api-key-env", "serve", "upstream_api_key_env"),
        Option("--best-of", "serve", "best_of"),
        Option("--max-best-of", "serve", "max_best_of"),
        Option("--max-n", "serve", "max_n"),
        Option("--default-max-tokens", "serve", "default_max_tokens"),
        Option("--max-tokens", "serve", "max_tokens"),
        Option("--max-prompt-tokens", "serve", "max_prompt_tokens"),
        Option("--max-body-bytes", "serve", "max_body_bytes"),
        Option("--batch-window-ms", "serve", "batch_window_ms"),
        Option("--max-batch-prompts", "serve", "max_batch_prompts"),
        Option("--max-queue", "serve", "max_queue"),
        Option("--log-prompts", "serve", "log_prompts"),
        Option("--shutdown-grace-s", "serve", "shutdown_grace_s"),
        Option("--keepalive-s", "serve", "keepalive_s"),
        Option("--metrics-public", "serve", "metrics_public"),
    ],
    # How a prompts file's images are read, by every command that reads prompts.
    "images": [
        Option("--image-paths-outside", "images", "paths_outside"),
        Option("--max-image-bytes", "images", "max_bytes", metavar="N"),
    ],
    "import": [
        Option("--completion-id-column", "import", "id_column"),
        Option("--text-column", "import", "text_column"),
        Option("--model", "import", "model"),
        Option("--max-new-tokens", "import", "max_new_tokens"),
        Option("--shard-rows", "import", "shard_rows"),
    ],
    "export": [
        Option("--all-scored", "export", "all_scored"),
        Option("--license", "export", "license", metavar="ID"),
        Option("--model-card", "export", "model_card"),
        Option("--stage", "export", "stage"),
        Option("--push-to-hub", "export", "push_to_hub", metavar="REPO"),
        Option("--private", "export", "private"),
    ],
}
STAGES_OF = {
    "generate": ["generate", "adaptive", "score", "executor", "images"],
    "score": ["score", "executor"],
    "select": ["select"],
    "sft": ["sft"],
    "run": ["generate", "score", "select", "sft", "rounds", "adaptive", "eval", "executor", "images"],
    "bon": ["generate", "score", "adaptive", "pick", "executor", "images"],
    "dpo": ["dpo"],
    "serve": ["serve", "score", "pick", "images"],
    "import": ["import", "images"],
    "eval": ["generate", "score", "eval", "executor", "images"],
    "batch-requests": ["generate", "images"],
}
GROUP_NOTES = {
    ("generate", "adaptive"): "sample in steps until each prompt's rule is met (needs a reward: see score)",
    ("generate", "score"): "with --adaptive-step only: how the steps are scored; `winnow score` with the "
    "same options then puts RUN_DIR/score together from them",
    ("eval", "generate"): "how each model samples the held-out prompts: --model is the model evaluated; "
    "--baseline samples with the same options and seed",
    ("run", "eval"): "after training, evaluate the starting model and each round's checkpoint on held-out "
    "prompts, sampled as the generate options say (RUN_DIR/eval)",
}
"""A line under a command's option group, where the group means something else there."""
ONLY_IN = {("eval", "prompts"): "run", ("eval", "baseline"): "eval"}
"""(section, field) -> the one command that takes its flag, where the section serves several."""
NOT_IN = {("images", "paths_outside"): ("serve",)}
"""(section, field) -> the commands that do not take its flag, where the section serves
several (a request's images are ``data:`` URLs: no path to allow)."""
DEVICE_STAGES = ("generate", "score", "sft", "dpo")
ON_ERROR_STAGES = ("generate", "score")
"""The sections one ``--on-error`` sets (each has an ``on_error`` field)."""
NEEDS_PROMPTS = {name for name, sections in STAGES_OF.items() if "images" in sections} - {"serve"}
"""The commands that read a prompts file (and so its images); ``serve`` reads a request's."""
NO_RUN_DIR = ("serve", "batch-requests")
"""Commands that write no run directory."""
DRY_RUN = ("generate", "score", "run", "bon", "eval")
"""Commands that take --dry-run: they sample or score, so their plan is worth a look first."""


COMMAND_HELP = {
    "generate": "sample N completions per prompt",
    "score": "score completions into an M x N matrix",
    "select": "pick completions from the reward matrix",
    "sft": "fine-tune the starting checkpoint on them",
    "run": "generate, score, select and sft in one go",
    "bon": "Best-of-N: the best completion per prompt",
    "dpo": "DPO on the preference pairs of select --pairs",
    "serve": "OpenAI-compatible server over a backend; Best-of-N with a reward",
    "import": "write a generate stage from completions made elsewhere",
    "eval": "evaluate a checkpoint on held-out prompts: mean reward, pass@k, the gain over --baseline",
    "batch-requests": "write a generate stage's requests as an OpenAI batch input file",
}
"""The one-line help of each stage command (``winnow --help`` and the command's own)."""


def parser() -> argparse.ArgumentParser:
    """The whole command: one subparser per stage command, then verify, demo and report."""
    top = argparse.ArgumentParser(prog="winnow", description="Rejection sampling and Best-of-N for language models.")
    sub = top.add_subparsers(dest="command", required=True)
    for name, stages in STAGES_OF.items():
        p = sub.add_parser(name, help=COMMAND_HELP[name], description=COMMAND_HELP[name])
        add_common(p, name, stages)
        for stage in stages:
            group = p.add_argument_group(stage, GROUP_NOTES.get((name, stage)))
            for option in OPTIONS[stage]:
                if ONLY_IN.get((stage, option.field), name) == name and name not in NOT_IN.get(
                    (stage, option.field), ()
                ):
                    add_option(group, option, refused=name == "serve" and stage == "score")
        add_outputs(p, name)
    add_verify(sub)
    add_demo(sub)
    add_report(sub)
    add_export(sub)
    return top


def add_common(p: argparse.ArgumentParser, name: str, stages: list[str]) -> None:
    """What a stage command takes besides its sections' options: config file, run dir,
    dry run, prompts, and the one --device / --dtype every stage with a model shares."""
    p.add_argument("--config", metavar="PATH", help="YAML file with any of the options below (flags win)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("--verbose", action="store_true", help="let libraries print their own progress and logs")
    if name not in NO_RUN_DIR:
        p.add_argument("--run-dir", metavar="PATH", help="run directory (reruns resume from it)")
    if name in DRY_RUN:
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="check everything and print the plan (prompts, N, stages to run, resume or skip, outputs, "
            "tokens to sample at most), then exit without writing anything",
        )
    if name not in ("serve", "bon", "batch-requests"):
        p.add_argument("--json", action="store_true", help="print the stages' manifests as JSON, not a summary")
    if name in NEEDS_PROMPTS:
        p.add_argument("--prompts", metavar="PATH", help="prompts: .jsonl, .json, .parquet or a saved dataset folder")
        p.add_argument("--prompt-column", metavar="NAME", help="column holding the prompt (default: prompt)")
        p.add_argument("--id-column", metavar="NAME", help="column holding the id (default: id)")
    if name in DRY_RUN:  # the commands that sample or score: a row may fail in either
        docs = " ".join(field_docs(SECTIONS[stage])["on_error"] for stage in ON_ERROR_STAGES)
        p.add_argument(
            "--on-error",
            choices=CHOICES[("generate", "on_error")],
            help=f"{docs} (default: fail; sets generate.on_error and score.on_error)".replace("%", "%%"),
        )
    if set(DEVICE_STAGES) & set(stages) and name not in NO_RUN_DIR:  # those run no model here
        p.add_argument(
            "--device",
            metavar="NAME",
            help=f"where models run: {' | '.join(DEVICES)} (default: auto: CUDA if present)",
        )
        p.add_argument(
            "--dtype",
            metavar="NAME",
            help=f"{' | '.join(DTYPES)} (default: auto: bfloat16 on CUDA, else float32)",
        )


def add_outputs(p: argparse.ArgumentParser, name: str) -> None:
    """import's completions file; bon's output file and aggregate; batch-requests' file."""
    if name == "import":
        p.add_argument("--completions", metavar="PATH", help="completions: .jsonl, .parquet or a saved dataset folder")
        p.add_argument(
            "--openai-batch",
            metavar="PATH",
            help="instead of --completions: the output file of an OpenAI batch (or vllm run-batch) made from "
            "`winnow batch-requests`; the generate section of --config must be the one the requests were made with",
        )
        p.add_argument(
            "--on-error",
            choices=CHOICES[("generate", "on_error")],
            help="with --openai-batch: a request that failed or has no result stops the import (fail, the default) "
            "or is recorded in generate/errors.jsonl and its prompt left without completions (skip)",
        )
    if name == "batch-requests":
        p.add_argument("--out", metavar="PATH", required=True, help="the batch input file to write (JSONL)")
    if name == "bon":
        p.add_argument(
            "--out", metavar="PATH", help="where to write the best completions (default: RUN_DIR/best.jsonl)"
        )
        p.add_argument(
            "--aggregate",
            choices=AGGREGATES,
            default="best",
            help="best: highest reward; majority: vote over extracted answers; weighted: votes weighed by "
            "reward; prm-weighted: votes weighed by the process reward model's scores; confidence: votes weighed "
            "by each sample's lowest group confidence (needs --top-logprobs) (default: best)",
        )
        p.add_argument(
            "--keep-confident",
            type=float,
            metavar="P",
            help="only each prompt's most confident P%% of samples (by lowest group confidence) take part in "
            "the choice, as in DeepConf (10 or 90); needs --top-logprobs (default: all)",
        )


def add_verify(sub: Any) -> None:
    verify = sub.add_parser("verify", help="check a run dir's files against its manifests")
    verify.add_argument("run_dir", metavar="RUN_DIR", help="the run directory to check")
    verify.add_argument("--debug", action="store_true", help="show the traceback of an error")


def add_demo(sub: Any) -> None:
    demo = sub.add_parser("demo", help="offline demo: SmolLM2 + VADER, reward before and after fine-tuning")
    demo.add_argument(
        "--run-dir", metavar="PATH", default="runs/demo", help="where the demo writes (default: runs/demo)"
    )
    demo.add_argument("--quick", action="store_true", help="a tiny smoke version (not the real measurement)")
    demo.add_argument("--debug", action="store_true", help="show the traceback of an error")
    demo.add_argument("--rounds", type=int, metavar="N", default=1, help="rounds of rejection sampling (default: 1)")
    demo.add_argument(
        "--task",
        choices=("sentiment", "constraints"),
        default="sentiment",
        help="sentiment: VADER reward (default); constraints: IFEval instructions checked by a verifier",
    )


def add_report(sub: Any) -> None:
    text = "best-of-n curve with its KL bound, and selected against all, for a scored run dir"
    rep = sub.add_parser("report", help=text, description=text)
    rep.add_argument(
        "run_dir", help="a run directory with finished generate and score stages (of a --rounds run: each round's)"
    )
    rep.add_argument("--out", help="folder for report.md, report.json and the plots (default: RUN_DIR/report)")
    rep.add_argument("--bootstrap-iters", type=int, default=2000, help="bootstrap resamples of the prompts")
    rep.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    rep.add_argument("--pass-threshold", type=float, help="pass at reward >= this (default: the score stage's)")
    rep.add_argument("--debug", action="store_true", help="show the traceback of an error")


def add_export(sub: Any) -> None:
    text = "a finished run as a dataset folder with its card (Parquet, for datasets and the Hub), or its checkpoint"
    exp = sub.add_parser("export", help=text, description=text)
    exp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with finished generate, score and select")
    exp.add_argument("--to", metavar="DIR", required=True, help="the folder to write: new, or empty")
    exp.add_argument("--config", metavar="PATH", help="YAML file whose export section holds any option below")
    exp.add_argument("--debug", action="store_true", help="show the traceback of an error")
    exp.add_argument("--verbose", action="store_true", help="let libraries print their own progress and logs")
    group = exp.add_argument_group("export")
    for option in OPTIONS["export"]:
        add_option(group, option)


def field_key(section: str, field: str) -> str:
    return f"{section}__{field}"


def add_option(group: argparse._ArgumentGroup, option: Option, refused: bool = False) -> None:
    """One flag, as its config field describes it; ``refused``: ``winnow serve``'s score
    options it takes only to refuse in one line (``serve.reward.REFUSED``), so unlisted."""
    flag, section, field = option.flag, option.section, option.field
    kind, dest = option.nargs or kind_of(section, field), field_key(section, field)  # nargs: one flag, several values
    shown = option_help(section, field, kind)
    if refused and field in SERVE_REFUSED:
        shown = argparse.SUPPRESS
    if kind == "flag":
        group.add_argument(flag, dest=dest, action="store_true", default=None, help=shown)
        return
    shape = {"action": "append"} if kind == "append" else {"type": kind}
    if option.nargs:
        shape = {"nargs": option.nargs}
    group.add_argument(flag, dest=dest, metavar=option.metavar or metavar(kind, field), help=shown, **shape)


def field_spec(section: str, field: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == field)


def kind_of(section: str, field: str) -> Any:
    """How a flag reads its value, from its field's annotation: ``bool`` a flag with no value,
    a list of strings a repeated flag, a list of numbers ``1.0,0.2``, else int | float | str.

    >>> kind_of("select", "dedup"), kind_of("generate", "stop"), kind_of("score", "reward_weights").__name__
    ('flag', 'append', 'float_list')
    >>> kind_of("generate", "n"), kind_of("score", "pass_threshold"), kind_of("score", "reward_model")
    (<class 'int'>, <class 'float'>, <class 'str'>)
    """
    parts = [p for p in type_name(hints(SECTIONS[section])[field]).split(" | ") if p != "None"]
    if "bool" in parts:
        return "flag"
    if "list[float]" in parts:
        return float_list
    if "list[str]" in parts:
        return "append"
    return {"int": int, "float": float, "str": str}[parts[0]]


def metavar(kind: Any, field: str) -> str:
    """A plain metavar, as in the tools users know: N, FLOAT, VAR, URL, else NAME (an
    ``Option`` row names any other: PATH, SPEC, TEXT...).

    >>> metavar(int, "n"), metavar(float, "beta"), metavar(str, "api_key_env"), metavar(str, "base_url")
    ('N', 'FLOAT', 'VAR', 'URL')
    """
    if kind is int:
        return "N"
    if kind is float:
        return "FLOAT"
    if field.endswith("_env"):
        return "VAR"
    if field.endswith("url"):
        return "URL"
    return "NAME"


def option_help(section: str, field: str, kind: Any) -> str:
    """A flag's help: its config field's docstring, the values it accepts (``settings.CHOICES``)
    and its default, all from the one place each is defined."""
    doc = field_docs(SECTIONS[section])[field]
    choices = CHOICES.get((section, field))
    if choices:
        doc += f" Choices: {' | '.join(choices)}."
    if (section, field) == ("score", "reward_fn"):  # open-ended (module:function), but the names come from the table
        doc += f" Shipped with winnow: {', '.join(BUILTINS)}."
    if kind == "append":
        doc += " Repeat the flag for several."
    doc = doc.replace("%", "%%")  # argparse formats help with %
    return doc if kind == "flag" else with_default(doc, section, field)


def with_default(text: str, section: str, field: str) -> str:
    """The help text with the option's default from its config dataclass (the one source)."""
    spec = field_spec(section, field)
    default = spec.default if spec.default is not dataclasses.MISSING else None
    if spec.default_factory is not dataclasses.MISSING:
        default = spec.default_factory()
    if default is None or default == [] or "default" in text:
        return text
    if isinstance(default, list):
        default = ", ".join(map(str, default))
    return f"{text} (default: {default})"


def numbers_as_values(argv: list[str]) -> list[str]:
    """Join a numeric option to a value that looks like a flag (``--threshold -inf``,
    ``--temperature -1e-5``, ``--reward-weights -1,-0.5``), which argparse would otherwise
    refuse as a missing value.

    >>> numbers_as_values(["--reward-weights", "-1,-0.5", "--k", "-2", "--debug"])
    ['--reward-weights=-1,-0.5', '--k=-2', '--debug']
    """
    kinds = (int, float, float_list)
    numeric = {o.flag for options in OPTIONS.values() for o in options if kind_of(o.section, o.field) in kinds}
    out: list[str] = []
    i = 0
    while i < len(argv):
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if argv[i] in numeric and value.startswith("-") and all(map(_is_number, value.split(","))):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
