"""The ``winnow`` command: generate | score | select | sft | dpo | run | bon | demo | report.

Options come from the dataclass defaults, then ``--config file.yaml``, then flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from winnow import summary
from winnow.config import (
    CHOICES,
    DEVICES,
    DTYPES,
    MAX_SEED,
    SECTIONS,
    build,
    field_docs,
    load_yaml,
)
from winnow.errors import WinnowError
from winnow.rewards import BUILTINS
from winnow.select import AGGREGATES
from winnow.serve.reward import REFUSED as SERVE_REFUSED


def float_list(text: str) -> list[float]:
    """``1.0,0.2`` -> [1.0, 0.2] (argparse reports a bad one as an invalid value)."""
    return [float(part) for part in text.split(",")]


# Each option is (flag, section, field): its type, metavar, choices, help and default come
# from that config field (annotation, ``config.CHOICES``, docstring, default), so one table
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
        Option("--tensor-parallel-size", "generate", "tensor_parallel_size"),
        Option("--gpu-memory-utilization", "generate", "gpu_memory_utilization"),
        Option("--max-model-len", "generate", "max_model_len"),
    ],
    "score": [
        Option("--reward-fn", "score", "reward_fn", metavar="SPEC"),
        Option("--reward-model", "score", "reward_model", metavar="PATH"),
        Option("--batch-tokens", "score", "batch_tokens"),
        Option("--max-batch-size", "score", "max_batch_size"),
        Option("--reward-prefix-sharing", "score", "reward_prefix_sharing"),
        Option("--reward-judge", "score", "reward_judge", metavar="URL"),
        Option("--judge-model", "score", "judge_model"),
        Option("--judge-rubric", "score", "judge_rubric", metavar="PATH"),
        Option("--judge-api-key-env", "score", "judge_api_key_env"),
        Option("--judge-concurrency", "score", "judge_concurrency"),
        Option("--judge-request-timeout", "score", "judge_request_timeout"),
        Option("--judge-max-retries", "score", "judge_max_retries"),
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
    "dpo": [
        Option("--dpo-model", "dpo", "model", metavar="PATH"),
        Option("--lora", "dpo", "lora"),
        Option("--dpo-beta", "dpo", "beta"),
        Option("--learning-rate", "dpo", "learning_rate"),
        Option("--epochs", "dpo", "epochs"),
        Option("--dpo-batch-size", "dpo", "batch_size"),
        Option("--max-length", "dpo", "max_length"),
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
    "import": [
        Option("--completion-id-column", "import", "id_column"),
        Option("--text-column", "import", "text_column"),
        Option("--model", "import", "model"),
        Option("--max-new-tokens", "import", "max_new_tokens"),
        Option("--shard-rows", "import", "shard_rows"),
    ],
}
STAGES_OF = {
    "generate": ["generate", "adaptive", "score", "executor"],
    "score": ["score", "executor"],
    "select": ["select"],
    "sft": ["sft"],
    "run": ["generate", "score", "select", "sft", "rounds", "adaptive", "executor"],
    "bon": ["generate", "score", "adaptive", "executor"],
    "dpo": ["dpo"],
    "serve": ["serve", "score"],
    "import": ["import"],
}
GROUP_NOTES = {
    ("generate", "adaptive"): "sample in steps until each prompt's rule is met (needs a reward: see score)",
    ("generate", "score"): "with --adaptive-step only: how the steps are scored; `winnow score` with the "
    "same options then puts RUN_DIR/score together from them",
}
"""A line under a command's option group, where the group means something else there."""
MAX_BOOTSTRAP_ITERS = 1_000_000
"""The bootstrap holds iters x prompts draws; beyond a million the band no longer moves."""
REWARD_FIELDS = ("reward_fn", "reward_model", "reward_judge")
"""Any of these turns ``winnow serve`` into a Best-of-N server."""
DEVICE_STAGES = ("generate", "score", "sft", "dpo")
NEEDS_PROMPTS = {"generate", "run", "bon", "import"}
DRY_RUN = ("generate", "score", "run", "bon")
"""Commands that take --dry-run: they sample or score, so their plan is worth a look first."""
ONLY = {"generate": ("generate",)}
"""Commands that hold a section's config without running its stage (generate's score
section scores the adaptive steps; RUN_DIR/score is `winnow score`'s)."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="winnow", description="Rejection sampling and Best-of-N for language models.")
    sub = top.add_subparsers(dest="command", required=True)
    helps = {
        "generate": "sample N completions per prompt",
        "score": "score completions into an M x N matrix",
        "select": "pick completions from the reward matrix",
        "sft": "fine-tune the starting checkpoint on them",
        "run": "generate, score, select and sft in one go",
        "bon": "Best-of-N: the best completion per prompt",
        "dpo": "DPO on the preference pairs of select --pairs",
        "serve": "OpenAI-compatible server over a backend; Best-of-N with a reward",
        "import": "write a generate stage from completions made elsewhere",
    }
    for name, stages in STAGES_OF.items():
        p = sub.add_parser(name, help=helps[name], description=helps[name])
        p.add_argument("--config", metavar="PATH", help="YAML file with any of the options below (flags win)")
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
        p.add_argument("--verbose", action="store_true", help="let libraries print their own progress and logs")
        if name != "serve":
            p.add_argument("--run-dir", metavar="PATH", help="run directory (reruns resume from it)")
        if name in DRY_RUN:
            p.add_argument(
                "--dry-run",
                action="store_true",
                help="check everything and print the plan (prompts, N, stages to run, resume or skip, outputs, "
                "tokens to sample at most), then exit without writing anything",
            )
        if name not in ("serve", "bon"):
            p.add_argument("--json", action="store_true", help="print the stages' manifests as JSON, not a summary")
        if name in NEEDS_PROMPTS:
            p.add_argument(
                "--prompts", metavar="PATH", help="prompts: .jsonl, .json, .parquet or a saved dataset folder"
            )
            p.add_argument("--prompt-column", metavar="NAME", help="column holding the prompt (default: prompt)")
            p.add_argument("--id-column", metavar="NAME", help="column holding the id (default: id)")
        if set(DEVICE_STAGES) & set(stages) and name != "serve":
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
        for stage in stages:
            group = p.add_argument_group(stage, GROUP_NOTES.get((name, stage)))
            for option in OPTIONS[stage]:
                add_option(group, option, refused=name == "serve" and stage == "score")
        if name == "import":
            p.add_argument(
                "--completions", metavar="PATH", help="completions: .jsonl, .parquet or a saved dataset folder"
            )
        if name == "bon":
            p.add_argument(
                "--out", metavar="PATH", help="where to write the best completions (default: RUN_DIR/best.jsonl)"
            )
            p.add_argument(
                "--aggregate",
                choices=AGGREGATES,
                default="best",
                help="best: highest reward; majority: vote over extracted answers; weighted: votes weighed by "
                "reward (default: best)",
            )
    verify = sub.add_parser("verify", help="check a run dir's files against its manifests")
    verify.add_argument("run_dir", metavar="RUN_DIR", help="the run directory to check")
    verify.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
    return top


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
    parts = [p.strip() for p in str(field_spec(section, field).type).split("|") if p.strip() != "None"]
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
    """A flag's help: its config field's docstring, the values it accepts (``config.CHOICES``)
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


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 bad input, a bad file in the run dir or an OS error (one line on
    stderr; ``--debug`` adds the traceback); 130 interrupted; 1 an internal bug (traceback)."""
    args = parse_args(numbers_as_values(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "verbose", False):
        quiet_libraries()
    try:
        run_command(args)
    except (WinnowError, OSError) as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"winnow: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("winnow: interrupted; finished shards are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """argparse, but an unknown option is reported by its command's parser (its usage, not
    the top-level one) with the closest option named: ``--temprature`` -> ``--temperature``
    (Python 3.14's ``suggest_on_error`` does this for choices only, and is not in 3.11)."""
    top = parser()
    args, unknown = top.parse_known_args(argv)
    if unknown:
        command = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        flags = [flag for action in command._actions for flag in action.option_strings]
        guesses = [difflib.get_close_matches(u.split("=", 1)[0], flags, n=1) for u in unknown if u.startswith("--")]
        hint = "".join(f" (did you mean {g[0]}?)" for g in guesses[:1] if g)
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def quiet_libraries() -> None:
    """Keep per-load progress bars and library warnings off the terminal: winnow's own
    progress (one bar per stage) is what users read. ``--verbose`` leaves them on."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|trl|peft|torch)\.")


def one_line(error: Exception) -> str:
    """An error as one line: an OS error names its file ('Permission denied: RUN/generate')."""
    if isinstance(error, OSError) and not isinstance(error, WinnowError):
        what = error.strerror or type(error).__name__
        files = [str(f) for f in (error.filename, error.filename2) if f is not None]
        text = f"{what}: {' -> '.join(files)}" if files else f"{what} ({error})"
    else:
        text = str(error)
    return " ".join(text.split())


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


def run_command(args: argparse.Namespace) -> None:
    """Run one subcommand: ``COMMANDS`` names the function of each."""
    COMMANDS[args.command](args)


def demo_command(args: argparse.Namespace) -> None:
    from winnow.demo import print_summary, run_demo

    if args.rounds < 1:
        raise WinnowError(f"--rounds must be >= 1, got {args.rounds}")
    if args.task == "constraints":
        from winnow.demo_constraints import run_constraints_demo

        if args.rounds != 1:
            raise WinnowError("--rounds: the constraints demo runs one round")
        run_constraints_demo(args.run_dir, quick=args.quick)
        return
    print_summary(run_demo(args.run_dir, quick=args.quick, rounds=args.rounds), Path(args.run_dir))


def verify_command(args: argparse.Namespace) -> None:
    from winnow.verify import verify_run

    lines, problems = verify_run(args.run_dir)
    print("\n".join(lines))
    if problems:
        raise WinnowError(f"{problems} problem(s) in {args.run_dir}")


def report_command(args: argparse.Namespace) -> None:
    from winnow.report import rounds_to_report, run_report

    if not 1 <= args.bootstrap_iters <= MAX_BOOTSTRAP_ITERS:
        raise WinnowError(f"--bootstrap-iters must be between 1 and {MAX_BOOTSTRAP_ITERS}, got {args.bootstrap_iters}")
    if not 0 <= args.seed <= MAX_SEED:
        raise WinnowError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")
    options = {"iters": args.bootstrap_iters, "seed": args.seed, "pass_threshold": args.pass_threshold}
    rounds = rounds_to_report(args.run_dir)
    for r in rounds:  # the folder of a --rounds run: each round's report, under its name
        out = f"{args.out}/round-{r}" if args.out else f"{args.run_dir}/round-{r}/report"
        print(f"round-{r}:")
        summary.print_report(run_report(f"{args.run_dir}/round-{r}", out_dir=out, **options), out)
    if not rounds:
        result = run_report(args.run_dir, out_dir=args.out, **options)
        summary.print_report(result, args.out or f"{args.run_dir}/report")


def stage_command(args: argparse.Namespace) -> None:
    """generate | score | select | sft | run | bon | dpo: configs from defaults, the YAML
    file and the flags, then the stages in order (``pipeline.run_stages``)."""
    from winnow import pipeline

    file_config = load_yaml(args.config) if args.config else {}
    if getattr(args, "out", None) and Path(args.out).is_dir():
        raise WinnowError(f"--out {args.out} is a folder; give a file path such as {Path(args.out) / 'best.jsonl'}")
    run_dir = args.run_dir or file_config.get("run_dir")
    if not run_dir:
        raise WinnowError("--run-dir is required (or run_dir in the config file)")
    if getattr(args, "out", None):
        refuse_run_dir_file(run_dir, args.out)
    configs = stage_configs(args, file_config, run_dir)
    prompts = None
    if args.command in NEEDS_PROMPTS:
        from winnow.prompts import load_prompts

        path = args.prompts or file_config.get("prompts")
        if not path:
            raise WinnowError("--prompts is required (or prompts in the config file)")
        prompts = load_prompts(
            path,
            prompt_column=args.prompt_column or file_config.get("prompt_column", "prompt"),
            id_column=args.id_column or file_config.get("id_column", "id"),
        )
    if args.command == "import":
        from winnow.importer import import_completions

        if not args.completions:
            raise WinnowError("--completions is required")
        assert prompts is not None
        manifest = import_completions(run_dir, args.completions, prompts, configs["import"])
        brief = {k: v for k, v in manifest.items() if k != "config"}  # as run_stages gives a stage's
        summary.print_stages({"import": brief}, run_dir, as_json=args.json)
        return
    if getattr(args, "dry_run", False):
        out = (Path(args.out) if args.out else Path(run_dir) / "best.jsonl") if args.command == "bon" else None
        print_plan(args.command, run_dir, prompts, configs, out)
        return
    manifests = pipeline.run_stages(run_dir, prompts, configs, only=ONLY.get(args.command))
    summary.warn_unscored_stages(manifests, run_dir)
    if args.command == "bon":
        out = Path(args.out) if args.out else Path(run_dir) / "best.jsonl"
        count, head = pipeline.best_of_n(run_dir, out=out, aggregate=args.aggregate, answer=configs["adaptive"].answer)
        n = configs["generate"].n * len(configs["generate"].models)
        print_best_of_n(head, count, out, n, args.aggregate)
    else:
        summary.print_stages(manifests, run_dir, as_json=args.json)


def print_plan(command: str, run_dir: str, prompts, configs: dict, out: Path | None) -> None:
    """``--dry-run``: the checked plan (``winnow.plan``); nothing is written."""
    from winnow.plan import check

    plan = check(run_dir, prompts, configs, only=ONLY.get(command))
    if out is not None:
        plan.outputs.append(out)
    print(f"winnow {command} --dry-run: the plan for {run_dir} (checked; nothing was written)")
    print("\n".join(plan.lines()))


def refuse_run_dir_file(run_dir: str, out: str) -> None:
    """``bon --out`` must not overwrite a file a stage made (its manifest would then be wrong)."""
    from winnow.verify import STAGES

    target = Path(out).resolve()
    for stage in (*STAGES, "report"):
        folder = (Path(run_dir) / stage).resolve()
        if target == folder or folder in target.parents:
            raise WinnowError(f"--out {out} is inside the run dir's stage folder {folder}; give a path outside it")


def stage_configs(args: argparse.Namespace, file_config: dict, run_dir: str) -> dict[str, Any]:
    """Each section the command runs: dataclass defaults, then the YAML file, then flags."""
    from winnow import pipeline

    configs: dict[str, Any] = {}
    for stage in STAGES_OF[args.command]:
        flags = _flags(args, stage)
        if args.command == "generate" and stage == "score" and configs["adaptive"].step is None:
            # a config file's score section is for `winnow score` (one file may serve every
            # stage); a reward flag given to generate itself would mean nothing, so say so
            if flags:
                name = sorted(flags)[0]
                raise WinnowError(f"score.{name}: winnow generate scores only with --adaptive-step (adaptive.step)")
            continue
        if getattr(args, "device", None) and stage in DEVICE_STAGES:
            flags["device"] = args.device
        if getattr(args, "dtype", None) and stage in DEVICE_STAGES:  # rounds, executor: no dtype
            flags["dtype"] = args.dtype
        if stage in ("sft", "dpo") and not flags.get("model") and not (file_config.get(stage) or {}).get("model"):
            flags["model"] = pipeline.default_sft_model(run_dir, configs.get("generate"), file_config)
        configs[stage] = build(SECTIONS[stage], file_config.get(stage) or {}, flags, source=args.config or "flags")
    if "rounds" in configs and configs["rounds"].count is None:
        _refuse_round_options_without_rounds(args, file_config)
    return configs


def print_best_of_n(head: list[dict], count: int, out: Path, n: int, aggregate: str = "best") -> None:
    """The first rows of Best-of-N (or majority / weighted vote) on the terminal; ``out``
    holds all ``count``."""
    from rich.console import Console
    from rich.table import Table

    title = "Best" if aggregate == "best" else aggregate.capitalize()
    table = Table(title=f"{title}-of-{n} ({out})")
    for col in ("prompt_id", "reward", "mean", "best completion"):
        table.add_column(col)
    for r in head:
        completion = str(r["completion"] or "(none)")[:100]
        table.add_row(str(r["prompt_id"]), _fmt(r["reward"]), _fmt(r["mean_reward"]), completion)
    console = Console()
    console.print(table)
    if count > len(head):
        console.print(f"... and {count - len(head):,} more prompts in {out}")


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _refuse_round_options_without_rounds(args: argparse.Namespace, file_config: dict) -> None:
    """--pool and --sft-from mean nothing in a single-round run: say so rather than ignore them."""
    given = {key.split("__", 1)[1] for key, value in vars(args).items() if key.startswith("rounds__") and value}
    given |= set(file_config.get("rounds") or {})
    if given - {"count"}:
        names = ", ".join(f"rounds.{name}" for name in sorted(given - {"count"}))
        raise WinnowError(f"{names}: only applies with --rounds (rounds.count)")


def serve_command(args: argparse.Namespace) -> None:
    """``winnow serve``: Best-of-N mode when any reward option is given."""
    from winnow.serve.main import serve

    file_config = load_yaml(args.config) if args.config else {}
    source = args.config or "flags"
    if "reward_timeout_s" in (file_config.get("serve") or {}):
        raise WinnowError(
            f"{source}: serve.reward_timeout_s: the reward time limit is score.reward_timeout "
            "(--reward-timeout); set it in the score section"
        )
    layers = {stage: _flags(args, stage) for stage in ("serve", "score")}
    config = build(SECTIONS["serve"], file_config.get("serve") or {}, layers["serve"], source=source)
    file_score = file_config.get("score") or {}
    rewarded = any(layers["score"].get(f) or file_score.get(f) for f in REWARD_FIELDS)
    score = build(SECTIONS["score"], file_score, layers["score"], source=source) if rewarded else None
    serve(config, score)


def _flags(args: argparse.Namespace, stage: str) -> dict:
    return {
        key.split("__", 1)[1]: value
        for key, value in vars(args).items()
        if key.startswith(f"{stage}__") and value is not None
    }


COMMANDS = {
    **dict.fromkeys(STAGES_OF, stage_command),
    "serve": serve_command,
    "demo": demo_command,
    "verify": verify_command,
    "report": report_command,
}
"""Subcommand -> the function that runs it (flat dispatch: one entry per command)."""


if __name__ == "__main__":
    sys.exit(main())
