"""``winnow export``: the folder ``datasets.load_dataset`` reads (exact rows, configs, splits),
its card as ``huggingface_hub`` loads it (metadata, commands, config hashes), the model card
of a fine-tuned checkpoint, and the refusals (exit 2, one line, nothing written).

Most tests export the hand-made run of ``helpers.make_run`` after a real select stage (fast,
rewards known by hand); the card's commands and the model card need a real run (tiny models).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import fails, make_run, write_jsonl

from winnow.cli import main
from winnow.config import SECTIONS
from winnow.export.tables import FILE_ROWS
from winnow.settings import build

datasets = pytest.importorskip("datasets")
hub = pytest.importorskip("huggingface_hub")

# What select picks from helpers.HAND_RUN, by hand: top_per_prompt takes each prompt's highest
# reward, the earliest sample on a tie (p0: 0.5, 0.5, -0.5); p2's unscored sample 2 is no candidate.
SELECTED = [("p0", 0, "good day", 0.5), ("p1", 0, "the sun", 1.0), ("p2", 1, "ok then", 0.3)]
# best-worst pairs: (prompt, chosen index, rejected index, margin)
PAIRS = [("p0", 0, 2, 1.0), ("p1", 0, 1, 1.0), ("p2", 1, 0, 0.3 - 0.1)]


@pytest.fixture()
def hand_run(tmp_path) -> Path:
    """helpers.HAND_RUN (generate, score) and a real select stage with best-worst pairs."""
    run = make_run(tmp_path / "run")
    assert main(["select", "--run-dir", str(run), "--pairs", "best-worst"]) == 0
    return run


def load(folder: Path, tmp_path: Path, name: str | None = None):
    """One config's train split, read by ``datasets`` as a user would (a cache of the test's own)."""
    return datasets.load_dataset(str(folder), name, cache_dir=str(tmp_path / "cache"))


def test_the_folder_loads_with_datasets_with_the_exact_rows(hand_run, tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(hand_run), "--to", str(out), "--all-scored"]) == 0
    selected = load(out, tmp_path)
    assert list(selected) == ["train"]  # the default config, one split
    rows = selected["train"].to_list()
    assert [(r["prompt_id"], r["sample_index"], r["completion"][0]["content"], r["reward"]) for r in rows] == SELECTED
    assert rows[0]["prompt"] == [{"role": "user", "content": "say something about p0"}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": "good day"}]
    assert selected["train"].column_names == ["prompt", "completion", "prompt_id", "sample_index", "model", "reward"]

    pairs = load(out, tmp_path, "pairs")["train"].to_list()
    got = [(p["prompt_id"], p["chosen_index"], p["rejected_index"], p["margin"]) for p in pairs]
    assert got == PAIRS  # the margins as select computes them, in float64
    assert pairs[0]["chosen"][0]["content"] == "good day" and pairs[0]["rejected"][0]["content"] == "a bad bad day"

    every = load(out, tmp_path, "all")["train"].to_list()
    assert len(every) == 9
    assert [(r["prompt_id"], r["sample_index"]) for r in every] == [
        (p, j) for p in ("p0", "p1", "p2") for j in range(3)
    ]
    assert [r["reward"] for r in every] == [0.5, 0.5, -0.5, 1.0, 0.0, 0.2, 0.1, 0.3, None]  # None: unscored
    assert every[2] | {"prompt": None, "completion": None} == {
        "prompt": None,
        "completion": None,
        "prompt_id": "p0",
        "sample_index": 2,
        "model": "m",
        "reward": -0.5,
        "num_tokens": 5,
        "finish_reason": "length",
    }


def test_without_all_scored_or_pairs_only_the_selected_config_is_written(tmp_path):
    run = make_run(tmp_path / "run")
    assert main(["select", "--run-dir", str(run)]) == 0
    assert main(["export", str(run), "--to", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "selected"]
    card = hub.DatasetCard.load(tmp_path / "out" / "README.md")
    assert [c["config_name"] for c in card.data.configs] == ["selected"]


def test_rows_are_written_in_batches_and_files_in_order(hand_run, tmp_path):
    """Row groups of 2 rows, files of 2 rows: 9 completions are 5 files, read back in order."""
    from winnow.export import write_dataset

    out = tmp_path / "out"
    out.mkdir()
    result = write_dataset(hand_run, out, all_scored=True, license=None, batch_rows=2, file_rows=2)
    assert result["configs"] == {"selected": 3, "pairs": 3, "all": 9}
    assert sorted(p.name for p in (out / "all").iterdir()) == [f"train-0000{i}-of-00005.parquet" for i in range(5)]
    every = load(out, tmp_path, "all")["train"]
    assert [(r["prompt_id"], r["sample_index"]) for r in every] == [
        (p, j) for p in ("p0", "p1", "p2") for j in range(3)
    ]
    assert FILE_ROWS >= 100_000  # the default keeps a run's files few


def test_the_card_holds_its_metadata_commands_and_config_hashes(hand_run, tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(hand_run), "--to", str(out), "--license", "cc-by-4.0"]) == 0
    card = hub.DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0"
    assert data["task_categories"] == ["text-generation"] and data["size_categories"] == ["n<1K"]
    assert data["configs"] == [
        {
            "config_name": "selected",
            "default": True,
            "data_files": [{"split": "train", "path": "selected/train-*.parquet"}],
        },
        {"config_name": "pairs", "data_files": [{"split": "train", "path": "pairs/train-*.parquet"}]},
    ]
    assert "dpo" in data["tags"]
    for stage in ("generate", "score", "select"):
        manifest = json.loads((hand_run / stage / "manifest.json").read_text())
        assert f"| {stage} | `{manifest['config_hash']}` |" in card.text
    assert f"winnow select --config winnow.yaml --run-dir {hand_run}\n" in card.text
    assert "strategy `top_per_prompt` selected 3 (mean reward 0.600)" in card.text
    assert "`cc-by-4.0`, as the exporter stated it." in card.text


def test_without_a_license_the_metadata_leaves_it_out_and_the_card_says_so(hand_run, tmp_path):
    assert main(["export", str(hand_run), "--to", str(tmp_path / "out")]) == 0
    card = hub.DatasetCard.load(tmp_path / "out" / "README.md")
    assert "license" not in card.data.to_dict()
    assert "No license was given at export" in card.text


def test_a_config_files_export_section_is_read_and_flags_win(hand_run, tmp_path):
    (tmp_path / "winnow.yaml").write_text("export:\n  license: mit\n  all_scored: true\n")
    argv = ["export", str(hand_run), "--config", str(tmp_path / "winnow.yaml"), "--license", "cc0-1.0"]
    assert main([*argv, "--to", str(tmp_path / "out")]) == 0
    assert hub.DatasetCard.load(tmp_path / "out" / "README.md").data.license == "cc0-1.0"
    assert (tmp_path / "out" / "all").is_dir()


def test_a_current_report_is_in_the_card_with_its_plots_and_a_stale_one_is_not(hand_run, tmp_path):
    assert main(["report", str(hand_run), "--bootstrap-iters", "10"]) == 0
    out = tmp_path / "out"
    assert main(["export", str(hand_run), "--to", str(out)]) == 0
    card = hub.DatasetCard.load(out / "README.md")
    assert "## Report\n" in card.text and "### Best-of-n" in card.text
    assert "![best-of-n](report/best_of_n.png)" in card.text
    assert (out / "report" / "best_of_n.png").read_bytes() == (hand_run / "report" / "best_of_n.png").read_bytes()

    report = json.loads((hand_run / "report" / "report.json").read_text())
    report["made_from"]["score"] = "0" * 16  # a report of an earlier score stage
    (hand_run / "report" / "report.json").write_text(json.dumps(report))
    assert main(["export", str(hand_run), "--to", str(tmp_path / "out2")]) == 0
    text = hub.DatasetCard.load(tmp_path / "out2" / "README.md").text
    assert "## Report" not in text and "was made from other stages than these" in text
    assert not (tmp_path / "out2" / "report").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not a run dir", "{run}: not a run dir (no generate stage folder)"),
        ("unfinished select", "{run}/select: the select stage is not finished (no manifest.json)"),
        ("no select", "{run}/select/manifest.json not found: run `winnow select` on this run dir first"),
        ("non-empty --to", "--to {out}: exists and is not an empty folder; give a new folder (nothing was written)"),
        ("damaged shard", "{run}/generate/shard-m0-00000.jsonl: content differs from the manifest (sha256)"),
        ("rounds folder", "{run}: a --rounds run; export one round's folder, such as {run}/round-1"),
        ("--to in a stage", "--to {out}: inside the run's stage folder {run}/select; give a folder outside it"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing_written(case, message, hand_run, tmp_path, capsys):
    run, out = hand_run, tmp_path / "out"
    if case == "not a run dir":
        run = tmp_path / "elsewhere"
        run.mkdir()
    elif case == "unfinished select":
        (run / "select" / "manifest.json").unlink()
    elif case == "no select":
        shutil.rmtree(run / "select")
    elif case == "non-empty --to":
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    elif case == "damaged shard":  # found while the Parquet files are being written: none may remain
        shard = run / "generate" / "shard-m0-00000.jsonl"
        shard.write_text(shard.read_text().replace("good day", "GOOD DAY"))
    elif case == "--to in a stage":
        out = run / "select" / "published"
    elif case == "rounds folder":
        run = tmp_path / "rounds"
        shutil.copytree(hand_run, run / "round-1")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    argv = ["export", str(run), "--to", str(out)] + (["--all-scored"] if case == "damaged shard" else [])
    err = fails(argv, capsys, message.format(run=run, out=out), one_error=True)
    assert len(err.strip().splitlines()) == 1
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # no DIR, no temp folder
    if case == "non-empty --to":
        assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_an_empty_to_folder_is_filled(hand_run, tmp_path):
    (tmp_path / "out").mkdir()
    assert main(["export", str(hand_run), "--to", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "selected").is_dir()


def test_a_failed_upload_is_one_line_and_the_folder_stays(hand_run, tmp_path, capsys, monkeypatch):
    """No network in tests (HF_HUB_OFFLINE, conftest): the Hub client refuses, as it would
    without a token or a connection. The upload itself is documented (docs/howto/export.md)."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    out = tmp_path / "out"
    err = fails(["export", str(hand_run), "--to", str(out), "--push-to-hub", "me/data"], capsys, one_error=True)
    assert err.startswith("winnow: error: --push-to-hub me/data: OfflineModeIsEnabled: ")
    assert err.rstrip().endswith(
        f"{out} is written: upload it later with `hf upload me/data {out} --repo-type dataset`"
    )
    assert (out / "README.md").is_file() and (out / "selected").is_dir()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--license", "Apache 2"], "export.license: expected a license id such as apache-2.0, got 'Apache 2'"),
        (["--push-to-hub", "nameonly"], "export.push_to_hub: expected a repository id owner/name, got 'nameonly'"),
        (["--stage", "sft"], "export.stage: names the checkpoint to export; it applies with model_card only"),
        (["--stage", "ppo", "--model-card"], "export.stage: unknown trained stage 'ppo' (choose from sft, dpo)"),
        (["--private"], "export.private: applies with push_to_hub only"),
    ],
)
def test_bad_options_are_refused_before_anything_is_read(flags, message, tmp_path, capsys):
    fails(["export", str(tmp_path / "nowhere"), "--to", str(tmp_path / "out"), *flags], capsys, message, one_error=True)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- a real run (tiny models)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_policy, one_thread) -> Path:
    """generate, score (length), select with pairs and sft, on prompts with a reference column."""
    d = tmp_path_factory.mktemp("real")
    write_jsonl(d / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"say {i}", "answer": str(i)} for i in range(3)])
    argv = ["run", "--prompts", str(d / "prompts.jsonl"), "--run-dir", str(d / "run"), "--model", str(tiny_policy)]
    argv += ["--n", "2", "--max-new-tokens", "4", "--device", "cpu", "--reward-fn", "length", "--pairs", "best-worst"]
    assert main([*argv, "--epochs", "1", "--batch-size", "2"]) == 0
    return d / "run"


def test_the_cards_config_file_rebuilds_every_stages_config(real_run, tmp_path, one_thread):
    """The card's winnow.yaml, read as ``--config`` reads it, gives each stage the config it
    stored (so the commands beside it remake the same stages, hash for hash)."""
    out = tmp_path / "out"
    assert main(["export", str(real_run), "--to", str(out)]) == 0
    text = hub.DatasetCard.load(out / "README.md").text
    config = yaml.safe_load(re.search(r"```yaml\n# winnow.yaml\n(.*?)```", text, re.S).group(1))
    assert list(config) == ["generate", "score", "select", "sft"]
    for stage in config:
        stored = json.loads((real_run / stage / "config.json").read_text())[stage]
        assert build(SECTIONS[stage], config[stage]).stage_config() == stored, stage
    for stage in ("score", "select", "sft"):
        assert f"winnow {stage} --config winnow.yaml --run-dir {real_run}\n" in text
    prompts_hash = json.loads((real_run / "generate" / "config.json").read_text())["prompts_hash"]
    assert f"rows hash to `{prompts_hash}`" in text
    rows = load(out, tmp_path)["train"].to_list()
    assert [json.loads(r["columns"]) for r in rows] == [{"answer": r["prompt_id"][1:]} for r in rows]


def test_the_checkpoint_is_exported_with_its_model_card(real_run, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", str(real_run), "--model-card", "--to", str(out), "--license", "apache-2.0"]) == 0
    assert capsys.readouterr().out == f"export: the sft checkpoint (6 files) with its model card -> {out}\n"
    checkpoint = real_run / "sft" / "checkpoint"
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", *(p.name for p in checkpoint.iterdir())])
    for path in checkpoint.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes()
    card = hub.ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and "base_model" not in data  # a local folder is no Hub id
    assert data["library_name"] == "transformers" and "sft" in data["tags"]
    sft = json.loads((real_run / "sft" / "manifest.json").read_text())
    assert f"| sft | `{sft['config_hash']}` |" in card.text
    assert f"winnow sft --config winnow.yaml --run-dir {real_run}\n" in card.text
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0


def test_a_model_card_needs_a_finished_trained_stage(hand_run, tmp_path, capsys):
    message = f"{hand_run}: no finished sft or dpo stage to export; run `winnow sft` (or dpo) first"
    fails(["export", str(hand_run), "--model-card", "--to", str(tmp_path / "m")], capsys, message, one_error=True)
    assert not (tmp_path / "m").exists()
