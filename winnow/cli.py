"""The ``winnow`` command: generate | score | select | sft | dpo | run | bon | eval | demo | report | export.

Options come from the dataclass defaults, then ``--config file.yaml``, then flags.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from winnow import summary
from winnow.cli_options import DEVICE_STAGES, NEEDS_PROMPTS, ON_ERROR_STAGES, STAGES_OF, numbers_as_values, parser
from winnow.config import SECTIONS, ImagesConfig, SelectConfig
from winnow.config.fields import problem_of
from winnow.errors import WinnowError
from winnow.quiet import quiet_process
from winnow.settings import build, load_yaml

MAX_BOOTSTRAP_ITERS = 1_000_000
"""The bootstrap holds iters x prompts draws; beyond a million the band no longer moves."""
REWARD_FIELDS = ("reward_fn", "reward_model", "prm_model", "reward_judge")
"""Any of these turns ``winnow serve`` into a Best-of-N server."""
ONLY = {"generate": ("generate",)}
"""Commands that hold a section's config without running its stage (generate's score
section scores the adaptive steps; RUN_DIR/score is `winnow score`'s)."""


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 bad input, a bad file in the run dir or an OS error (one line on
    stderr; ``--debug`` adds the traceback); 130 interrupted; 1 an internal bug (traceback)."""
    args = parse_args(numbers_as_values(sys.argv[1:] if argv is None else argv))
    quiet_process(verbose=getattr(args, "verbose", False))
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


def one_line(error: Exception) -> str:
    """An error as one line: an OS error names its file ('Permission denied: RUN/generate')."""
    if isinstance(error, OSError) and not isinstance(error, WinnowError):
        what = error.strerror or type(error).__name__
        files = [str(f) for f in (error.filename, error.filename2) if f is not None]
        text = f"{what}: {' -> '.join(files)}" if files else f"{what} ({error})"
    else:
        text = str(error)
    return " ".join(text.split())


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
    from winnow.report import evals, rounds_to_report, run_report
    from winnow.report.run import eval_report

    if not 1 <= args.bootstrap_iters <= MAX_BOOTSTRAP_ITERS:
        raise WinnowError(f"--bootstrap-iters must be between 1 and {MAX_BOOTSTRAP_ITERS}, got {args.bootstrap_iters}")
    if problem := problem_of(SelectConfig, "seed", args.seed):  # a seed's range, as every seed field's
        raise WinnowError(f"--seed {problem}")
    options = {"iters": args.bootstrap_iters, "seed": args.seed, "pass_threshold": args.pass_threshold}
    rounds = rounds_to_report(args.run_dir)
    if rounds and (evaluated := eval_report(args.run_dir, args.out)):  # first: the rounds' go inside its folder
        folder = Path(args.out or f"{args.run_dir}/report")
        print("\n".join(evals.lines(evaluated, *(folder / f for f in ("report.md", "report.json", evals.CURVE)))))
    for r in rounds:  # the folder of a --rounds run: each round's report, under its name
        out = f"{args.out}/round-{r}" if args.out else f"{args.run_dir}/round-{r}/report"
        print(f"round-{r}:")
        summary.print_report(run_report(f"{args.run_dir}/round-{r}", out_dir=out, **options), out)
    if not rounds:
        result = run_report(args.run_dir, out_dir=args.out, **options)
        summary.print_report(result, args.out or f"{args.run_dir}/report")


def export_command(args: argparse.Namespace) -> None:
    from winnow.export import export_run

    file_config = load_yaml(args.config) if args.config else {}
    config = build(
        SECTIONS["export"], file_config.get("export") or {}, _flags(args, "export"), source=args.config or "flags"
    )
    summary.print_export(export_run(args.run_dir, args.to, config))


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
    prompts = held_out = None
    if args.command in NEEDS_PROMPTS:
        from winnow.prompts import load_prompts

        source = prompts_source(args, file_config, configs["images"])
        prompts = load_prompts(**source)
        if args.command == "run" and configs["eval"].prompts:  # read as the prompts are: the same columns
            held_out = load_prompts(**{**source, "path": configs["eval"].prompts})
    if args.command == "eval":
        assert prompts is not None
        if args.dry_run:
            print_eval_plan(run_dir, prompts, source["path"], configs)
        else:
            evaluate_command(run_dir, prompts, configs, as_json=args.json)
        return
    if args.command == "import":
        assert prompts is not None
        manifest = import_command(args, file_config, run_dir, prompts, configs)
        brief = {k: v for k, v in manifest.items() if k != "config"}  # as run_stages gives a stage's
        summary.print_stages({"import": brief}, run_dir, as_json=args.json)
        return
    if getattr(args, "aggregate", None) == "prm-weighted" and not configs["score"].prm_model:
        raise WinnowError("--aggregate prm-weighted needs a process reward model (--prm-model)")
    if args.command == "bon":
        check_confident_choice(args.aggregate, args.keep_confident, configs["generate"])
    if getattr(args, "dry_run", False):
        out = (Path(args.out) if args.out else Path(run_dir) / "best.jsonl") if args.command == "bon" else None
        print_plan(args.command, run_dir, prompts, configs, out, held_out)
        return
    manifests = pipeline.run_stages(run_dir, prompts, configs, only=ONLY.get(args.command), held_out=held_out)
    summary.warn_unscored_stages(manifests, run_dir)
    if args.command == "bon":
        write_best_of_n(args, run_dir, configs)
    else:
        summary.print_stages(manifests, run_dir, as_json=args.json)
    if "eval" in configs and configs["eval"].prompts and not args.json:  # run --eval-prompts
        print_held_out(run_dir)


def write_best_of_n(args: argparse.Namespace, run_dir: str, configs: dict) -> None:
    """``bon``'s last step: the chosen completion per prompt to ``--out`` (default RUN/best.jsonl)."""
    from winnow import pipeline

    out = Path(args.out) if args.out else Path(run_dir) / "best.jsonl"
    count, head = pipeline.best_of_n(
        run_dir,
        out=out,
        aggregate=args.aggregate,
        answer=configs["adaptive"].answer,
        keep_confident=args.keep_confident,
        pick=configs["pick"],
    )
    n = configs["generate"].n * len(configs["generate"].models)
    print_best_of_n(head, count, out, n, args.aggregate)


def print_held_out(run_dir: str) -> None:
    """``run --eval-prompts``: the held-out table and where its files are."""
    from winnow.report import evals

    out = Path(run_dir) / evals.FOLDER
    if evaluated := evals.read(run_dir):
        print("\n".join(evals.lines(evaluated, *(out / name for name in evals.FILES))))


def evaluate_command(run_dir: str, prompts, configs: dict, *, as_json: bool) -> None:
    """``winnow eval``: the model (and --baseline) on the prompts, into RUN_DIR (``winnow.evaluation``);
    prints its lines, or with ``as_json`` eval.json's dict."""
    from winnow.evaluation import eval_models, evaluate
    from winnow.report import evals

    models = eval_models(configs["generate"], configs["eval"])
    result = evaluate(
        run_dir,
        prompts,
        models,
        configs["generate"],
        configs["score"],
        configs["eval"],
        executor=configs.get("executor"),
    )
    files = (Path(run_dir) / name for name in evals.FILES)
    print(json.dumps(result, indent=2) if as_json else "\n".join(evals.lines(result, *files)))


def import_command(args: argparse.Namespace, file_config: dict, run_dir: str, prompts: list, configs: dict) -> dict:
    """``import --completions`` (any completions file) or ``import --openai-batch`` (a batch's
    results, under the config's generate section); the stage's manifest."""
    if bool(args.completions) == bool(args.openai_batch):
        raise WinnowError("give one of --completions and --openai-batch")
    if args.completions:
        from winnow.importer import import_completions

        if args.on_error:
            raise WinnowError("--on-error: only with --openai-batch (every row of --completions is checked first)")
        return import_completions(run_dir, args.completions, prompts, configs["import"])
    from winnow.openai_batch import import_openai_batch

    flags = {"on_error": args.on_error} if args.on_error else {}
    source = args.config or "flags"
    generate = build(SECTIONS["generate"], file_config.get("generate") or {}, flags, source=source)
    return import_openai_batch(run_dir, args.openai_batch, prompts, generate)


def batch_requests_command(args: argparse.Namespace) -> None:
    """``winnow batch-requests``: the generate section's requests, one line per sample, to ``--out``."""
    from winnow.openai_batch import batch_requests, write_config
    from winnow.prompts import load_prompts

    file_config = load_yaml(args.config) if args.config else {}
    configs = stage_configs(args, file_config, run_dir="")
    config = configs["generate"]
    source = prompts_source(args, file_config, configs["images"])
    prompts = load_prompts(**source)
    count = batch_requests(prompts, config, args.out)
    beside = write_config(args.out, config, source)
    print(f"wrote {count} requests ({len(prompts)} prompts x {config.n} x {len(config.models)} models) to {args.out}")
    print(f"its config: {beside} (import the results with `winnow import --openai-batch FILE --config {beside}`)")


def prompts_source(args: argparse.Namespace, file_config: dict, images: ImagesConfig) -> dict:
    """Where the prompts are and which columns hold them (flags, then the config file), and
    how their images are read (the ``images`` section), as ``load_prompts`` takes them."""
    path = args.prompts or file_config.get("prompts")
    if not path:
        raise WinnowError("--prompts is required (or prompts in the config file)")
    return {
        "path": path,
        "prompt_column": args.prompt_column or file_config.get("prompt_column", "prompt"),
        "id_column": args.id_column or file_config.get("id_column", "id"),
        "image_paths_outside": images.paths_outside,
        "max_image_bytes": images.max_bytes,
    }


def check_confident_choice(aggregate: str, keep_confident: float | None, generate) -> None:
    """``bon --aggregate confidence`` and ``--keep-confident`` read each sample's confidence:
    refused before any sampling unless it is recorded, and a percentage outside (0, 100]."""
    if keep_confident is not None and not 0 < keep_confident <= 100:
        raise WinnowError(f"--keep-confident: must be a percentage in (0, 100], got {keep_confident:g}")
    if (aggregate == "confidence" or keep_confident is not None) and not generate.top_logprobs:
        flag = "--aggregate confidence" if aggregate == "confidence" else "--keep-confident"
        raise WinnowError(f"{flag}: needs each sample's confidence: sample with --top-logprobs K (e.g. 20)")


def print_plan(command: str, run_dir: str, prompts, configs: dict, out: Path | None, held_out=None) -> None:
    """``--dry-run``: the checked plan (``winnow.plan``), with ``held_out`` (run --eval-prompts)
    its evaluation's (``winnow.plan_eval``); nothing is written."""
    from winnow.plan import check

    plan = check(run_dir, prompts, configs, only=ONLY.get(command))
    if held_out is not None:
        from winnow.plan_eval import check_eval
        from winnow.report.evals import FOLDER

        plan.more = check_eval(run_dir, held_out, configs).lines()
        plan.outputs.append(Path(run_dir) / FOLDER)
    if out is not None:
        plan.outputs.append(out)
    print(f"winnow {command} --dry-run: the plan for {run_dir} (checked; nothing was written)")
    print("\n".join(plan.lines()))


def print_eval_plan(out: str, prompts, source, configs: dict) -> None:
    """``winnow eval --dry-run``: each model's folders checked against the configs they would be
    written under, and the tokens they can sample (``plan_eval.plan_models``); nothing is written."""
    from dataclasses import replace

    from winnow.evaluation import eval_models
    from winnow.plan import check_models
    from winnow.plan_eval import plan_models

    models = eval_models(configs["generate"], configs["eval"])
    for model in models.values():
        check_models(replace(configs["generate"], models=[model]))
    plan = plan_models(Path(out), prompts, str(source), models, configs)
    print(f"winnow eval --dry-run: the plan for {out} (checked; nothing was written)")
    print(
        "\n".join([*plan.lines(), f"outputs: {', '.join(str(Path(out) / name) for name in ('eval.json', 'eval.md'))}"])
    )


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
        if getattr(args, "on_error", None) and stage in ON_ERROR_STAGES:
            flags["on_error"] = args.on_error
        if getattr(args, "device", None) and stage in DEVICE_STAGES:
            flags["device"] = args.device
        if getattr(args, "dtype", None) and stage in DEVICE_STAGES:  # rounds, executor: no dtype
            flags["dtype"] = args.dtype
        if stage in ("sft", "dpo") and not flags.get("model") and not (file_config.get(stage) or {}).get("model"):
            flags["model"] = pipeline.default_sft_model(run_dir, configs.get("generate"), file_config)
        configs[stage] = build(SECTIONS[stage], file_config.get(stage) or {}, flags, source=args.config or "flags")
    if "rounds" in configs and configs["rounds"].count is None:
        _refuse_round_options_without_rounds(args, file_config)
    if "pick" in configs:  # bon: a judge beside a vote is refused before any sample, in a dry run too
        pipeline.check_pick(configs["pick"], args.aggregate, args.keep_confident)
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
    from winnow.report.judges import pick_agreement

    picked = pick_agreement(out)
    if picked is not None:  # one line, never folded
        print(summary.pick_line(picked))


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
    layers = {stage: _flags(args, stage) for stage in ("serve", "score", "pick")}
    config = build(SECTIONS["serve"], file_config.get("serve") or {}, layers["serve"], source=source)
    file_score = file_config.get("score") or {}
    rewarded = any(layers["score"].get(f) or file_score.get(f) for f in REWARD_FIELDS)
    score = build(SECTIONS["score"], file_score, layers["score"], source=source) if rewarded else None
    pick = build(SECTIONS["pick"], file_config.get("pick") or {}, layers["pick"], source=source)
    images = build(SECTIONS["images"], file_config.get("images") or {}, _flags(args, "images"), source=source)
    if images.paths_outside:  # YAML only: serve has no --image-paths-outside
        raise WinnowError(
            f"{source}: images.paths_outside: winnow serve reads no image paths (a request's are data: URLs)"
        )
    serve(config, score, pick, images)


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
    "export": export_command,
    "batch-requests": batch_requests_command,
}
"""Subcommand -> the function that runs it (flat dispatch: one entry per command)."""


if __name__ == "__main__":
    sys.exit(main())
