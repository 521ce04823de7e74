"""Reference columns from the prompts file to the rewards and into selected.jsonl and
pairs.jsonl; verifiers, weighted rewards and reasoning tags through the score stage; one
verified run end to end through the command line."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import numpy as np
import pytest
from helpers import fake_generate, read_rows, write_jsonl

from winnow import stages
from winnow.cli import main
from winnow.config import ScoreConfig, SelectConfig, TrainConfig
from winnow.errors import WinnowError
from winnow.executors import ShardTask
from winnow.prompts import load_prompts
from winnow.records import Prompt, config_hash
from winnow.rewards.apply import _POOLS
from winnow.sft import sft, strip_reasoning
from winnow.stages.score import ScoreWorker

pytest.importorskip("math_verify")

ECHO = """
import json
from pathlib import Path

HERE = Path(__file__).parent


def echo(prompts, completions, prompt_ids, sample_indices, **columns):
    # what a reward function receives, one call per line
    with open(HERE / "calls.jsonl", "a") as f:
        f.write(json.dumps({"prompt_ids": prompt_ids, "completions": completions, **columns}) + "\\n")
    return [10.0 * float(a) + j for a, j in zip(columns["answer"], sample_indices, strict=True)]


def counted(prompts, completions, **kw):
    # a verifier that says how many had no answer, not which
    from winnow.verifiers import Scores

    return Scores([0.0] * len(completions), no_answer=len(completions) - 1)


def half(prompts, completions, **kw):
    return [None if c == "skip" else 0.5 for c in completions]
"""


# ---------------------------------------------------------------- reading the columns


def test_every_other_column_is_kept_in_file_order(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "answer": "72", "prompt": "q1", "meta": {"level": 2, "tags": ["x"]}},
            {"prompt": "q2", "answer": 3},
        ],
    )
    prompts = load_prompts(path)
    assert prompts == [
        Prompt(id="a", text="q1", columns={"answer": "72", "meta": {"level": 2, "tags": ["x"]}}),
        Prompt(id="row-1", text="q2", columns={"answer": 3}),
    ]
    assert prompts[0].to_row() == {
        "id": "a",
        "prompt": "q1",
        "columns": {"answer": "72", "meta": {"level": 2, "tags": ["x"]}},
    }


def test_a_file_of_ids_and_prompts_gives_the_same_rows_and_hash_as_before(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": "a", "prompt": "q1"}, {"id": "b", "messages": [{"role": "user", "content": "q2"}]}],
    )
    rows = [p.to_row() for p in load_prompts(path)]
    assert rows == [{"id": "a", "prompt": "q1"}, {"id": "b", "messages": [{"role": "user", "content": "q2"}]}]
    assert config_hash(rows) == config_hash(
        [{"id": "a", "prompt": "q1"}, {"id": "b", "messages": [{"role": "user", "content": "q2"}]}]
    )


@pytest.mark.parametrize("name", ["prompts", "completions", "prompt_ids", "sample_indices"])
def test_a_reserved_column_name_is_refused_by_name(tmp_path, name):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "answer": "1"}, {"prompt": "q2", name: "x"}])
    with pytest.raises(WinnowError) as e:
        load_prompts(path)
    assert str(e.value) == (
        f"{path}:2: field '{name}': column name is reserved (reward functions receive prompts, completions, "
        "prompt_ids, sample_indices as arguments); rename the column"
    )


def test_a_value_that_is_not_json_is_refused_by_name(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "q", "answer": NaN}\n')  # Python's json reads NaN; JSON has none
    with pytest.raises(WinnowError, match=f"^{path}:1: field 'answer': value is not JSON"):
        load_prompts(path)


def test_columns_of_a_parquet_file_and_non_json_bytes(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    path = tmp_path / "p.parquet"
    datasets.Dataset.from_dict({"question": ["a?", "b?"], "answer": ["1", "2"], "level": [1, 2]}).to_parquet(str(path))
    prompts = load_prompts(path, prompt_column="question")
    assert [p.columns for p in prompts] == [{"answer": "1", "level": 1}, {"answer": "2", "level": 2}]
    raw = tmp_path / "raw.parquet"
    datasets.Dataset.from_dict({"prompt": ["a?"], "blob": [b"\x00\x01"]}).to_parquet(str(raw))
    with pytest.raises(WinnowError, match=f"^{raw}:1: field 'blob': value is not JSON \\(bytes"):
        load_prompts(raw)


def test_a_reserved_column_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "completions": "x"}])
    argv = ["generate", "--prompts", str(tmp_path / "p.jsonl"), "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'completions': column name is reserved" in err


# ---------------------------------------------------------------- into the rewards and the selected rows


@pytest.fixture()
def scored_run(tmp_path):
    (tmp_path / "rewards.py").write_text(ECHO)
    prompts = [
        Prompt(id="a", text="one plus one?", columns={"answer": "2", "source": "s1"}),
        Prompt(id="b", text="three?", columns={"answer": "3"}),  # no 'source': None in its place
    ]
    fake_generate(tmp_path / "run", prompts, {"a": ["2", "two", "3"], "b": ["3", "x", "y"]})
    return tmp_path


def test_columns_reach_the_reward_aligned_with_completions(scored_run):
    run = scored_run / "run"
    stages.score(run, ScoreConfig(reward_fn=f"{scored_run}/rewards.py:echo", fn_batch_size=4))
    calls = read_rows(scored_run / "calls.jsonl")
    assert [c["prompt_ids"] for c in calls] == [["a", "a", "a", "b"], ["b", "b"]]
    assert [c["answer"] for c in calls] == [["2", "2", "2", "3"], ["3", "3"]]
    assert [c["source"] for c in calls] == [["s1", "s1", "s1", None], [None, None]]
    assert np.load(run / "score" / "rewards.npy").tolist() == [[20.0, 21.0, 22.0], [30.0, 31.0, 32.0]]


def test_columns_go_into_selected_and_pairs_rows(scored_run):
    run = scored_run / "run"
    stages.score(run, ScoreConfig(reward_fn=f"{scored_run}/rewards.py:echo"))
    stages.select(run, SelectConfig(strategy="top_per_prompt", pairs="best-worst"))
    selected = read_rows(run / "select" / "selected.jsonl")
    assert [(r["prompt_id"], r["sample_index"], r["columns"]) for r in selected] == [
        ("a", 2, {"answer": "2", "source": "s1"}),
        ("b", 2, {"answer": "3"}),
    ]
    pairs = read_rows(run / "select" / "pairs.jsonl")
    assert [(p["prompt_id"], p["columns"]) for p in pairs] == [
        ("a", {"answer": "2", "source": "s1"}),
        ("b", {"answer": "3"}),
    ]


def test_a_column_named_like_a_verifier_option_is_refused(tmp_path):
    prompts = [Prompt(id="a", text="q", columns={"answer": "1", "reference_column": "x"})]
    fake_generate(tmp_path / "run", prompts, {"a": ["1"]})
    with pytest.raises(
        WinnowError, match="prompts column 'reference_column' has the name of an option of reward 'math'"
    ):
        stages.score(tmp_path / "run", ScoreConfig(reward_fn="math"))


# ---------------------------------------------------------------- verifiers, weights and reasoning in the stage


GSM = [
    Prompt(
        id="g1",
        text="Natalia sold 48 clips in April and half as many in May. How many in all?",
        columns={"answer": "She sold 48/2 = 24 in May.\n#### 72"},
    ),
    Prompt(id="g2", text="What is 1/4 + 1/4?", columns={"answer": "\\frac{1}{2}"}),
]
GSM_TEXTS = {
    "g1": ["48 + 24 = 72", "She sold 24 in May.", "I cannot tell."],
    "g2": ["It is 0.5", "\\boxed{1/2}", "1/4"],
}


def test_math_through_the_stage_counts_no_answer(tmp_path):
    fake_generate(tmp_path / "run", GSM, GSM_TEXTS)
    manifest = stages.score(tmp_path / "run", ScoreConfig(reward_fn=["math"]))
    assert np.load(tmp_path / "run" / "score" / "rewards.npy").tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert manifest["no_answer"] == 1 and "unfinished_reasoning" not in manifest and "components" not in manifest
    rows = read_rows(tmp_path / "run" / "score" / "shard-00000.jsonl")
    assert [r.get("no_answer", False) for r in rows] == [False, False, True, False, False, False]
    assert manifest["config"]["score"]["reward_fn"] == "math"  # --reward-fn math and reward_fn: math are one config


def test_a_count_without_positions_is_kept_on_the_row_opening_the_call(scored_run):
    run = scored_run / "run"
    manifest = stages.score(run, ScoreConfig(reward_fn=f"{scored_run}/rewards.py:counted", fn_batch_size=4))
    rows = read_rows(run / "score" / "shard-00000.jsonl")
    assert [r.get("no_answer_in_call", 0) for r in rows] == [3, 0, 0, 0, 1, 0]
    assert not any("no_answer" in r for r in rows) and manifest["no_answer"] == 4


def test_parallel_processes_give_the_same_files(tmp_path):
    runs = []
    for processes in (1, 2):
        run = tmp_path / f"run{processes}"
        fake_generate(run, GSM, GSM_TEXTS)
        stages.score(run, ScoreConfig(reward_fn="math", fn_batch_size=2, processes=processes))
        runs.append(run / "score")
    for name in ("shard-00000.jsonl", "rewards.npy", "manifest.json", "config.json"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes()
    # and the second really went through the pool of processes
    worker = ScoreWorker(ScoreConfig(reward_fn="math", fn_batch_size=2, processes=2), columns=("answer",))
    payload = [(p.text, {"prompt_id": p.id, "sample_index": j, "model": "m", "text": t}, p.columns)
               for p in GSM for j, t in enumerate(GSM_TEXTS[p.id])]  # fmt: skip
    assert [r["reward"] for r in worker.run(ShardTask("x", payload))] == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert 2 in _POOLS


def test_weighted_rewards_each_kept_and_summed_by_hand(scored_run):
    run = scored_run / "run"
    (scored_run / "calls.jsonl").unlink(missing_ok=True)
    config = ScoreConfig(
        reward_fn=[f"{scored_run}/rewards.py:echo", f"{scored_run}/rewards.py:half"], reward_weights=[1.0, -2.0]
    )
    manifest = stages.score(run, config)
    score = run / "score"
    assert np.load(score / "rewards-0.npy").tolist() == [[20.0, 21.0, 22.0], [30.0, 31.0, 32.0]]
    assert np.load(score / "rewards-1.npy").tolist() == [[0.5] * 3, [0.5] * 3]
    assert np.load(score / "rewards.npy").tolist() == [[19.0, 20.0, 21.0], [29.0, 30.0, 31.0]]
    assert [(c["reward"].endswith(":echo"), c["weight"], c["file"]) for c in manifest["components"]] == [
        (True, 1.0, "rewards-0.npy"),
        (False, -2.0, "rewards-1.npy"),
    ]
    row = read_rows(score / "shard-00000.jsonl")[1]
    assert (row["reward"], row["rewards"]) == (20.0, [21.0, 0.5])


def test_an_unscored_component_leaves_the_sum_unscored(tmp_path):
    (tmp_path / "rewards.py").write_text(ECHO)
    prompts = [Prompt(id="a", text="q", columns={"answer": "1"})]
    fake_generate(tmp_path / "run", prompts, {"a": ["ok", "skip"]})
    fns = [f"{tmp_path}/rewards.py:echo", f"{tmp_path}/rewards.py:half"]
    manifest = stages.score(tmp_path / "run", ScoreConfig(reward_fn=fns, reward_weights=[1.0, 1.0]))
    total = np.load(tmp_path / "run" / "score" / "rewards.npy")
    assert total[0, 0] == 10.5 and math.isnan(total[0, 1])
    assert manifest["unscored"] == 1 and [c["scored"] for c in manifest["components"]] == [2, 1]


def test_weights_must_match_the_rewards():
    with pytest.raises(WinnowError, match=r"score.reward_weights: 1 weights for 2 rewards \(math, exact\)"):
        ScoreConfig(reward_fn=["math", "exact"], reward_weights=[1.0]).validate()
    with pytest.raises(WinnowError, match="reward functions with a reward model or judge need weights"):
        ScoreConfig(reward_fn=["math"], reward_model="rm").validate()
    # a single string keeps its old meaning: replaced by a reward model
    assert ScoreConfig(reward_fn="vader", reward_model="rm").rewards() == [("model", "rm")]
    assert ScoreConfig(reward_fn=["math"], reward_model="rm", reward_weights=[1, 0.5]).rewards() == [
        ("fn", "math"),
        ("model", "rm"),
    ]


def test_stage_config_holds_every_field_but_how_fast():
    """Every field that decides the rewards is stored, defaults included (the run-dir format
    says which fields a stored config holds); how fast and how hard to try is not. The PRM's
    system prompt is stored only when set, so runs scored before the field existed resume."""
    stored = set(ScoreConfig().stage_config())
    assert stored == {f.name for f in fields(ScoreConfig)} - set(ScoreConfig.OPERATIONAL) - {"prm_system"}
    assert ScoreConfig(prm_model="prm", prm_system="be exact").stage_config()["prm_system"] == "be exact"
    assert ScoreConfig(reward_fn=["vader"]).stage_config() == ScoreConfig().stage_config()
    assert "processes" not in ScoreConfig(processes=3).stage_config()
    assert TrainConfig().stage_config()["strip_reasoning"] is False


REASONING_TEXTS = {
    "a": ["<think>2 + 2 = 5?</think> 2", "<think>hmm, 2", "</think>3"],
    "b": ["<think>x</think>3", "3", "t</think> 3"],
}


def test_reasoning_tags_rewards_see_the_answer_and_unfinished_score_zero(scored_run):
    fake_generate(
        scored_run / "run2",
        [Prompt(id="a", text="q", columns={"answer": "2"}), Prompt(id="b", text="r", columns={"answer": "3"})],
        REASONING_TEXTS,
    )
    config = ScoreConfig(
        reward_fn=["math", f"{scored_run}/rewards.py:echo"], reward_weights=[1.0, 0.0], reasoning_tags=["think"]
    )
    manifest = stages.score(scored_run / "run2", config)
    calls = read_rows(scored_run / "calls.jsonl")
    assert [c["completions"] for c in calls] == [[" 2", "3", "3", " 3"]]  # never the reasoning, never the unfinished
    assert np.load(scored_run / "run2" / "score" / "rewards-0.npy").tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]]
    assert manifest["unfinished_reasoning"] == 2 and manifest["no_answer"] == 0
    rows = read_rows(scored_run / "run2" / "score" / "shard-00000.jsonl")
    assert [r.get("unfinished_reasoning", False) for r in rows] == [False, True, False, False, True, False]
    # selection keeps the whole completion, reasoning included
    stages.select(scored_run / "run2", SelectConfig(strategy="top_per_prompt"))
    selected = read_rows(scored_run / "run2" / "select" / "selected.jsonl")
    assert [r["completion"][0]["content"] for r in selected] == ["<think>2 + 2 = 5?</think> 2", "<think>x</think>3"]


def test_strip_reasoning_keeps_the_answer_and_leaves_out_unfinished():
    rows = [
        {"prompt": [], "completion": [{"role": "assistant", "content": "<think>a</think>\n 42"}], "reward": 1.0},
        {"prompt": [], "completion": [{"role": "assistant", "content": "<think>never ends"}], "reward": 0.0},
    ]
    kept, left_out = strip_reasoning(rows, ("<think>", "</think>"))
    assert [r["completion"][0]["content"] for r in kept] == ["42"] and left_out == 1
    assert rows[0]["completion"][0]["content"] == "<think>a</think>\n 42"  # the input is not changed


def test_sft_strip_reasoning_needs_tags_and_trains_on_answers(tmp_path, tiny_policy):
    run = tmp_path / "run"
    prompts = [Prompt(id="a", text="q", columns={"answer": "2"}), Prompt(id="b", text="r", columns={"answer": "3"})]
    fake_generate(run, prompts, REASONING_TEXTS)
    stages.score(run, ScoreConfig(reward_fn="math"))
    stages.select(run, SelectConfig(strategy="top_per_prompt"))
    config = TrainConfig(model=str(tiny_policy), device="cpu", epochs=1, strip_reasoning=True)
    with pytest.raises(WinnowError, match=r"sft\.strip_reasoning: the score stage of this run has no reasoning_tags"):
        sft(run, config)
    run2 = tmp_path / "run2"
    fake_generate(run2, prompts, REASONING_TEXTS)
    stages.score(run2, ScoreConfig(reward_fn="math", reasoning_tags=["<think>", "</think>"]))
    stages.select(run2, SelectConfig(strategy="top_per_prompt"))
    manifest = sft(run2, config)
    assert manifest["num_rows"] == 2 and manifest["unfinished_reasoning_left_out"] == 0
    assert manifest["config"]["sft"]["strip_reasoning"] is True


# ---------------------------------------------------------------- end to end through the CLI


def test_verified_run_end_to_end(tmp_path, tiny_policy, capsys):
    write_jsonl(
        tmp_path / "gsm.jsonl",
        [{"id": f"q{i}", "prompt": f"what is {i} plus {i}?", "answer": f"#### {2 * i}"} for i in range(3)],
    )
    argv = [
        "run",
        "--prompts", str(tmp_path / "gsm.jsonl"),
        "--run-dir", str(tmp_path / "run"),
        "--model", str(tiny_policy),
        "--n", "2",
        "--max-new-tokens", "6",
        "--device", "cpu",
        "--reward-fn", "math",
        "--strategy", "top_per_prompt",
        "--epochs", "1",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    run = tmp_path / "run"
    assert read_rows(run / "generate" / "prompts.jsonl")[1] == {
        "id": "q1",
        "prompt": "what is 1 plus 1?",
        "columns": {"answer": "#### 2"},
    }
    score = json.loads((run / "score" / "manifest.json").read_text())
    assert score["config"]["score"]["reward_fn"] == "math" and isinstance(score["no_answer"], int)
    rewards = np.load(run / "score" / "rewards.npy")
    assert rewards.shape == (3, 2) and set(np.unique(rewards)) <= {0.0, 1.0}
    selected = read_rows(run / "select" / "selected.jsonl")
    assert [(r["prompt_id"], r["columns"]) for r in selected] == [
        (f"q{i}", {"answer": f"#### {2 * i}"}) for i in range(3)
    ]
    assert (run / "sft" / "checkpoint" / "config.json").exists()
    assert main(["verify", str(run)]) == 0


def test_score_options_from_yaml_and_flags(tmp_path):
    from winnow.cli_options import parser
    from winnow.settings import build, load_yaml

    path = tmp_path / "c.yaml"
    path.write_text(
        "score:\n  reward_fn: [math, exact]\n  reward_weights: [1, 0.2]\n  reasoning_tags: [think]\n"
        "  reference_column: gold\n"
    )
    config = build(ScoreConfig, load_yaml(path)["score"])
    assert (config.reward_fn, config.reward_weights, config.reasoning_tags) == (
        ["math", "exact"],
        [1.0, 0.2],
        ["think"],
    )
    assert config.reference_column == "gold"
    with pytest.raises(WinnowError, match=r"score\.reasoning_tags: give OPEN CLOSE"):
        build(ScoreConfig, {"reasoning_tags": ["<a>"]})
    with pytest.raises(WinnowError, match="field 'reasoning_tags': expected a list of strings"):
        build(ScoreConfig, {"reasoning_tags": "think"})
    args = parser().parse_args(
        ["score", "--run-dir", "r", "--reward-fn", "math", "--reward-fn", "x.py:f", "--reward-weights", "1,0.5",
         "--reasoning-tags", "<t>", "</t>", "--reference-column", "gold"]
    )  # fmt: skip
    flags = {k.split("__", 1)[1]: v for k, v in vars(args).items() if k.startswith("score__") and v is not None}
    assert flags == {
        "reward_fn": ["math", "x.py:f"],
        "reward_weights": [1.0, 0.5],
        "reasoning_tags": ["<t>", "</t>"],
        "reference_column": "gold",
    }


# ---------------------------------------------------------------- ifeval and code by name, options from the config


def test_ifeval_by_name_reads_its_columns_and_mode(tmp_path):
    prompts = [
        Prompt(
            id="i1",
            text="Answer without commas and mention the word rain.",
            columns={
                "instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
                "kwargs": [{}, {"keywords": ["rain"]}],
            },
        )
    ]
    # no comma with rain; no comma without rain; neither
    fake_generate(tmp_path / "run", prompts, {"i1": ["rain on the bus.", "a dry day.", "A dry, dry day."]})
    stages.score(tmp_path / "run", ScoreConfig(reward_fn="ifeval"))
    assert np.load(tmp_path / "run" / "score" / "rewards.npy").tolist() == [[1.0, 0.5, 0.0]]
    with pytest.raises(WinnowError, match=r"score\.ifeval_mode"):
        ScoreConfig(reward_fn="ifeval", ifeval_mode="lenient").validate()


def test_code_by_name_runs_the_rows_tests_in_the_sandbox(tmp_path):
    prompts = [
        Prompt(
            id="c1",
            text='def add(a, b):\n    """Return a + b."""\n',
            columns={"test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"},
        )
    ]
    texts = {"c1": ["    return a + b\n", "    return a - b\n", "    while True:\n        pass\n"]}
    fake_generate(tmp_path / "run", prompts, texts)
    manifest = stages.score(tmp_path / "run", ScoreConfig(reward_fn="code", code_timeout_s=2.0))
    assert np.load(tmp_path / "run" / "score" / "rewards.npy").tolist() == [[1.0, 0.0, 0.0]]
    assert manifest["config"]["score"]["code_timeout_s"] == 2.0  # a non-default option is part of the hash


def test_a_regenerated_run_dir_scores_its_new_prompts_in_the_same_process(tmp_path):
    # the score worker caches the prompts it reads per run dir: a generate stage made anew
    # with other prompt texts (same ids) must not be scored against the old ones
    run = tmp_path / "run"
    echo = tmp_path / "echo.py"
    echo.write_text("def prompt_length(prompts, completions, **kw):\n    return [float(len(p)) for p in prompts]\n")
    fake_generate(run, [Prompt(id="a", text="short")], {"a": ["x"]})
    stages.score(run, ScoreConfig(reward_fn=f"{echo}:prompt_length"))
    assert np.load(run / "score" / "rewards.npy").tolist() == [[5.0]]
    import shutil

    shutil.rmtree(run)
    fake_generate(run, [Prompt(id="a", text="a much longer prompt")], {"a": ["x"]})
    stages.score(run, ScoreConfig(reward_fn=f"{echo}:prompt_length"))
    assert np.load(run / "score" / "rewards.npy").tolist() == [[20.0]]
