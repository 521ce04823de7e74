"""Training as TRL users set it: each option reaches TRL's (or peft's) config, other TRL fields
pass through ``trl:``, a misspelt one is refused in one line, and TensorBoard gets the losses."""

from __future__ import annotations

import json
import typing

import pytest
from helpers import write_jsonl
from tiny_models import SFT_ROWS

from winnow.cli import main
from winnow.config import DpoConfig, TrainConfig
from winnow.config.fields import Scheduler
from winnow.dpo import make_trainer as dpo_trainer
from winnow.errors import WinnowError
from winnow.sft import make_trainer as sft_trainer

# Eight distinct rows: an eval split's sizes are then exact, not rounded to a duplicate.
ROWS = [
    {"prompt": r["prompt"], "completion": [{"role": "assistant", "content": f"{r['completion'][0]['content']} {i}"}]}
    for i in range(4)
    for r in SFT_ROWS
]
PAIRS = [
    {"prompt": r["prompt"], "chosen": r["completion"], "rejected": ROWS[(i + 1) % 8]["completion"]}
    for i, r in enumerate(ROWS)
]
OPTIONS = dict(
    gradient_accumulation_steps=2,
    lr_scheduler_type="cosine",
    warmup_ratio=0.25,
    weight_decay=0.01,
    eval_split=0.25,
    logging_steps=3,
    trl={"max_grad_norm": 0.5, "adam_beta2": 0.99},
)


def test_sft_options_reach_trls_config(tmp_path, tiny_policy):
    trainer, _ = sft_trainer(ROWS, TrainConfig(model=str(tiny_policy), device="cpu", **OPTIONS), tmp_path)
    args = trainer.args
    assert args.gradient_accumulation_steps == 2
    assert args.lr_scheduler_type == "cosine"
    assert args.get_warmup_steps(100) == 25  # transformers reads warmup_steps 0.25 as a share
    assert args.weight_decay == 0.01
    assert (args.logging_steps, args.eval_strategy, args.eval_steps) == (3, "steps", 3)
    assert (args.max_grad_norm, args.adam_beta2) == (0.5, 0.99)  # through trl:
    assert args.report_to == []
    # ceil(0.25 x 8) = 2 rows held out, 6 trained on, the same ones for the same seed
    assert (len(trainer.train_dataset), len(trainer.eval_dataset)) == (6, 2)
    again, _ = sft_trainer(ROWS, TrainConfig(model=str(tiny_policy), device="cpu", **OPTIONS), tmp_path)
    assert again.eval_dataset["input_ids"] == trainer.eval_dataset["input_ids"]


def test_warmup_steps_and_no_eval_split(tmp_path, tiny_policy):
    config = TrainConfig(model=str(tiny_policy), device="cpu", warmup_steps=3)
    trainer, _ = sft_trainer(ROWS, config, tmp_path)
    assert trainer.args.get_warmup_steps(100) == 3
    assert trainer.args.eval_strategy == "no" and trainer.eval_dataset is None
    assert len(trainer.train_dataset) == 8


def test_dpo_options_reach_trls_config(tmp_path, tiny_policy):
    options = {**OPTIONS, "eval_split": 0.5, "trl": {"loss_type": ["ipo"]}}
    config = DpoConfig(model=str(tiny_policy), device="cpu", beta=0.2, **options)
    trainer, _ = dpo_trainer(PAIRS, config, tmp_path)
    args = trainer.args
    assert (args.beta, args.gradient_accumulation_steps, args.weight_decay) == (0.2, 2, 0.01)
    assert (args.lr_scheduler_type, args.get_warmup_steps(8)) == ("cosine", 2)
    assert args.loss_type == ["ipo"]
    assert (len(trainer.train_dataset), len(trainer.eval_dataset)) == (4, 4)


def test_lora_flags_reach_peft(tmp_path, tiny_policy):
    config = TrainConfig(
        model=str(tiny_policy),
        device="cpu",
        lora=True,
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
    )
    trainer, _ = sft_trainer(ROWS, config, tmp_path)
    peft = trainer.model.peft_config["default"]
    assert (peft.r, peft.lora_alpha, peft.target_modules) == (4, 8, {"q_proj", "v_proj"})
    adapted = {name.split(".")[-1] for name, _ in trainer.model.named_modules() if hasattr(_, "lora_A")}
    assert adapted == {"q_proj", "v_proj"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TrainConfig(lora_r=4), "sft.lora_r: applies to LoRA training only; add lora (--lora)"),
        (
            DpoConfig(lora_target_modules=["q_proj"]),
            "dpo.lora_target_modules: applies to LoRA training only; add lora (--lora)",
        ),
        (
            TrainConfig(warmup_ratio=0.1, warmup_steps=2),
            "sft.warmup_ratio: give warmup_ratio or warmup_steps, not both",
        ),
        (TrainConfig(eval_split=1.0), "sft.eval_split: must be in [0, 1), got 1.0"),
        (TrainConfig(lr_scheduler_type="cosin"), "sft.lr_scheduler_type: "),
    ],
)
def test_refused_combinations(config, message):
    with pytest.raises(WinnowError) as e:
        config.validate()
    assert str(e.value).startswith(message)


def test_scheduler_choices_are_transformers():
    from transformers import SchedulerType

    assert set(typing.get_args(Scheduler)) == {s.value for s in SchedulerType}


def test_eval_split_too_large_for_the_rows(tmp_path, tiny_policy):
    config = TrainConfig(model=str(tiny_policy), device="cpu", eval_split=0.9)
    with pytest.raises(WinnowError, match=r"^sft.eval_split: 0.9 of 2 rows holds out 2, leaving none to train on$"):
        sft_trainer(SFT_ROWS, config, tmp_path)


def test_logging_options_stay_out_of_the_config_hash():
    base = TrainConfig().stage_config()
    assert TrainConfig(report_to="tensorboard", logging_steps=10).stage_config() == base
    assert TrainConfig(weight_decay=0.1).stage_config() != base
    assert TrainConfig(trl={"max_grad_norm": 0.5}).stage_config() != base
    assert "report_to" not in DpoConfig().stage_config()


@pytest.mark.parametrize(
    ("section", "key", "line"),
    [
        (
            "sft",
            "max_grad_nrom",
            "sft.trl.max_grad_nrom: not a field of TRL's SFTConfig (did you mean 'max_grad_norm'?)",
        ),
        ("dpo", "loss_typ", "dpo.trl.loss_typ: not a field of TRL's DPOConfig (did you mean 'loss_type'?)"),
        ("sft", "num_train_epochs", "sft.trl.num_train_epochs: set by sft.epochs; give that instead"),
    ],
)
def test_a_misspelt_trl_field_is_one_line(tmp_path, tiny_policy, capsys, section, key, line):
    (tmp_path / "c.yaml").write_text(f"{section}:\n  trl:\n    {key}: 0.5\n")
    code = main(
        [
            section,
            "--config",
            str(tmp_path / "c.yaml"),
            "--run-dir",
            str(tmp_path / "run"),
            f"--{section}-model",
            str(tiny_policy),
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"winnow: error: {line}"]


def test_run_refuses_a_misspelt_trl_field_before_sampling(tmp_path, tiny_policy, capsys):
    write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "hi"}])
    (tmp_path / "c.yaml").write_text("sft:\n  trl:\n    max_grad_nrom: 0.5\n")
    argv = ["run", "--config", str(tmp_path / "c.yaml"), "--prompts", str(tmp_path / "p.jsonl")]
    code = main([*argv, "--run-dir", str(tmp_path / "run"), "--model", str(tiny_policy), "--reward-fn", "length"])
    assert code == 2
    assert "sft.trl.max_grad_nrom" in capsys.readouterr().err
    assert not (tmp_path / "run" / "generate").exists()


def test_report_to_wandb_needs_wandb(tmp_path, tiny_policy, capsys):
    # wandb is not installed in the test environment: the refusal is what runs here
    try:
        import wandb  # noqa: F401
    except ImportError:
        code = main(
            ["sft", "--run-dir", str(tmp_path / "run"), "--sft-model", str(tiny_policy), "--report-to", "wandb"]
        )
        assert code == 2
        assert (
            capsys.readouterr().err.strip()
            == "winnow: error: sft.report_to: wandb is not installed (pip install wandb)"
        )
    else:
        pytest.skip("wandb is installed: the offline run is not tested here")


def test_run_with_eval_split_writes_tensorboard_events(tmp_path, tiny_policy, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_jsonl(tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": f"say something about {i}"} for i in range(4)])
    run = tmp_path / "run"
    argv = ["run", "--prompts", str(tmp_path / "p.jsonl"), "--run-dir", str(run), "--model", str(tiny_policy)]
    argv += ["--n", "2", "--max-new-tokens", "4", "--reward-fn", "length", "--device", "cpu", "--sft-batch-size", "1"]
    train = ["--epochs", "2", "--gradient-accumulation-steps", "2", "--eval-split", "0.5", "--warmup-steps", "1"]
    assert main([*argv, *train, "--report-to", "tensorboard", "--lr-scheduler-type", "constant_with_warmup"]) == 0
    manifest = json.loads((run / "sft" / "manifest.json").read_text())
    # 4 rows: 2 held out, 2 trained on in batches of 1 summed in pairs: 1 step an epoch
    assert (manifest["rows_trained"], manifest["eval_rows"]) == (2, 2)
    assert [step for step, _ in manifest["loss_curve"]] == [1, 2]
    assert [step for step, _ in manifest["eval_curve"]] == [1, 2]
    assert manifest["eval_curve"][-1][1] == pytest.approx(manifest["eval_loss"])
    # training's events file, and the final evaluation's (transformers closes the first as training ends)
    events = sorted((run / "sft" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    train_events = EventAccumulator(str(events[0])).Reload()
    assert [e.step for e in train_events.Scalars("train/loss")] == [1, 2]
    scalars = EventAccumulator(str(run / "sft" / "tensorboard")).Reload().Tags()["scalars"]
    assert {"train/loss", "train/grad_norm", "eval/loss", "train/learning_rate"} <= set(scalars)
    # the logging options may change on a rerun; what is trained may not
    capsys.readouterr()
    assert (
        main(
            [
                *argv,
                *train,
                "--report-to",
                "none",
                "--logging-steps",
                "5",
                "--lr-scheduler-type",
                "constant_with_warmup",
            ]
        )
        == 0
    )
    assert main([*argv, *train, "--weight-decay", "0.1", "--lr-scheduler-type", "constant_with_warmup"]) == 2
    assert "sft" in capsys.readouterr().err
