"""Process reward models (``winnow.rewards.prm``): step scores against a pass per prefix, one
batch against one row at a time, the aggregates, the score and bon commands, and the refusals."""

from __future__ import annotations

import json
import random
import shutil
import typing

import numpy as np
import pytest
import torch
from helpers import fails, fake_generate, read_rows
from tiny_models import PRM_SHAPES, WORDS, build_prm

from winnow.cli import main
from winnow.config.fields import PrmAggregate, PrmShape
from winnow.records import Prompt
from winnow.rewards import prm

PROMPTS = ["say a thing", "the quick brown fox jumps over the lazy dog"]
COMPLETIONS = ["the quick brown\n\nfox jumps\n\n", "a day\n\n\n\nwith friends\n\nand food"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    return {shape: build_prm(tmp_path_factory.mktemp(shape), shape) for shape in PRM_SHAPES}


def load(folder, **kw) -> prm.ProcessReward:
    return prm.ProcessReward(str(folder), device="cpu", **kw)


def test_tables_hold_the_config_choices():
    assert set(prm.SHAPES) == set(typing.get_args(PrmShape)) - {"auto"}
    assert set(prm.AGGREGATES) == set(typing.get_args(PrmAggregate))


def test_rows_render_as_each_shape_reads_them(models):
    """The step tags follow each step where the shape puts them, inside the assistant turn."""
    turn = "<s><|im_start|>user\nsay a thing<|im_end|>\n<|im_start|>assistant\n{}<|im_end|>\n"
    shepherd = load(models["math-shepherd"])
    (ids, tags), _ = shepherd.tokenize(PROMPTS, COMPLETIONS)
    assert shepherd.tokenizer.decode(ids) == turn.format("the quick brown ки\n\nfox jumps ки")
    assert [ids[t] for t in tags] == [shepherd.tokenizer.convert_tokens_to_ids("ки")] * 2
    qwen = load(models["qwen-prm"])
    (ids, tags), _ = qwen.tokenize(PROMPTS, COMPLETIONS)
    assert qwen.tokenizer.decode(ids) == turn.format("the quick brown<extra_0>fox jumps<extra_0>")
    assert qwen.reading.shape == "token-class"


@torch.inference_mode()
def prefix_pass(rm: prm.ProcessReward, ids: list[int], tags: list[int]) -> list[float]:
    """Step scores by hand: the whole model run on the row cut just after each tag, read at
    its last token (a causal model's scores there cannot depend on what follows)."""
    out = []
    for t in tags:
        logits = rm.model(input_ids=torch.tensor([ids[: t + 1]])).logits[0, -1].float()
        if rm.reading.labels is None:
            out.append(float(logits.softmax(-1)[1]))
        else:
            good, bad = rm.reading.labels
            out.append(float(logits[[good, bad]].softmax(-1)[0]))
    return out


@pytest.mark.parametrize("shape", PRM_SHAPES)
def test_step_scores_equal_a_pass_per_prefix(models, shape, one_thread):
    rm = load(models[shape])
    got = rm.step_rewards(PROMPTS, COMPLETIONS)
    assert [len(s) for s in got] == [2, 3]
    for (ids, tags), scores in zip(rm.tokenize(PROMPTS, COMPLETIONS), got, strict=True):
        np.testing.assert_allclose(scores, prefix_pass(rm, ids, tags), rtol=0, atol=1e-6)
    assert len({round(s, 6) for s in got[1]}) == 3  # the steps differ: a tag is read at its own position


def workload(seed: int = 0, rows: int = 24) -> tuple[list[str], list[str]]:
    """Prompts and completions of 0-5 steps of 1-9 words, shuffled."""
    rng = random.Random(seed)
    prompts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(rows)]
    steps = [[" ".join(rng.choices(WORDS, k=rng.randint(1, 9))) for _ in range(rng.randint(0, 5))] for _ in range(rows)]
    return prompts, ["\n\n".join(s) for s in steps]


@pytest.mark.parametrize("shape", ["math-shepherd", "token-class"])
def test_one_batch_equals_rows_one_at_a_time(models, shape, one_thread):
    """Padding and the length sort change nothing: a batch of mixed lengths, shuffled, gives
    each row the scores it gets alone."""
    prompts, completions = workload()
    rm = load(models[shape], batch_tokens=4096)
    together = rm.step_rewards(prompts, completions)
    assert rm.stats["batches"] < len(prompts) / 2 and rm.stats["padded_tokens"] > 0
    alone = [rm.step_rewards([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]
    order = list(range(len(prompts)))
    random.Random(1).shuffle(order)
    shuffled = rm.step_rewards([prompts[i] for i in order], [completions[i] for i in order])
    for k, i in enumerate(order):
        if alone[i] is None:
            assert together[i] is None and shuffled[k] is None and not completions[i].strip()
            continue
        np.testing.assert_allclose(together[i], alone[i], rtol=0, atol=1e-6)
        np.testing.assert_allclose(shuffled[k], alone[i], rtol=0, atol=1e-6)


@pytest.mark.parametrize("how", typing.get_args(PrmAggregate))
def test_reward_is_the_aggregate_of_the_step_scores(models, how):
    rm = load(models["token-class"], aggregate=how)
    rewards = rm(PROMPTS, COMPLETIONS)
    by_hand = {
        "min": lambda s: min(s),
        "last": lambda s: s[-1],
        "prod": lambda s: s[0] * s[1] if len(s) == 2 else s[0] * s[1] * s[2],
        "mean": lambda s: sum(s) / len(s),
    }[how]
    expected = [by_hand(s) for s in rm.last_step_scores]
    np.testing.assert_allclose(rewards, expected, rtol=1e-15, atol=0)


def test_unscored_rows_are_none(models):
    """No step, or longer than the model's context (256 tokens): None, and the rest scored."""
    rm = load(models["math-shepherd"], aggregate="last")
    long = "\n\n".join(["the quick brown fox jumps over the lazy dog"] * 40)
    rewards = rm(["a", "b", "c"], ["  \n\n ", long, "good food"])
    assert rewards[:2] == [None, None] and rm.last_step_scores[:2] == [None, None]
    assert rewards[2] == rm.last_step_scores[2][0]  # type: ignore[index]


def test_separator_and_tag_are_options(models):
    """``\\n`` typed on a command line is a newline; a step's own copy of the tag is dropped."""
    rm = load(models["math-shepherd"], separator="\\n")
    assert rm.separator == "\n"
    got = rm.step_rewards(["q"], ["one ки\ntwo\n\nthree"])
    assert len(got[0]) == 3  # type: ignore[arg-type]


def test_refusals_name_the_model_and_the_token(models, tmp_path):
    untagged = build_prm(tmp_path / "untagged", "math-shepherd", tag="")
    with pytest.raises(prm.WinnowError, match=r"step tag 'ки' is not one token of its vocabulary"):
        prm.check_prm(str(untagged), shape="auto", tag=None, labels=None)
    with pytest.raises(prm.WinnowError, match=r"label 'good' is not one token"):
        prm.check_prm(str(models["math-shepherd"]), shape="auto", tag=None, labels=["good", "-"])
    assert prm.check_prm(str(models["qwen-prm"]), shape="auto", tag=None, labels=None) == "token-class"
    config = json.loads((untagged / "config.json").read_text())
    (untagged / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaModel"]}))
    with pytest.raises(prm.WinnowError, match=r"cannot tell its shape .*LlamaModel.*set --prm-shape"):
        prm.check_prm(str(untagged), shape="auto", tag=None, labels=None)


SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""Qwen2.5-Math-PRM's system message, as its model card gives it."""


def test_a_system_message_reaches_the_prm_in_place_of_the_prompts(models, one_thread):
    """``system``: put first in the chat template, a chat prompt's own system message dropped,
    and the step scores are those of that input (a pass per prefix over it)."""
    plain, told = load(models["qwen-prm"]), load(models["qwen-prm"], system=SYSTEM)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "say a thing"}]
    turn = "<|im_start|>user\nsay a thing<|im_end|>\n<|im_start|>assistant\nthe quick brown<extra_0>fox jumps<extra_0>"
    for prompt in ("say a thing", chat):
        [(ids, tags)] = told.tokenize([prompt], COMPLETIONS[:1])  # type: ignore[misc]
        assert told.tokenizer.decode(ids) == f"<s><|im_start|>system\n{SYSTEM}<|im_end|>\n{turn}<|im_end|>\n"
        [scores] = told.step_rewards([prompt], COMPLETIONS[:1])
        np.testing.assert_allclose(scores, prefix_pass(told, ids, tags), rtol=0, atol=1e-6)  # type: ignore[arg-type]
    [(ids, _)] = plain.tokenize([chat], COMPLETIONS[:1])  # type: ignore[misc]
    assert plain.tokenizer.decode(ids).startswith("<s><|im_start|>system\nBe brief.<|im_end|>")
    assert told.step_rewards(["say a thing"], COMPLETIONS[:1]) != plain.step_rewards(["say a thing"], COMPLETIONS[:1])


def test_a_system_message_is_refused_where_it_cannot_go(models, tmp_path):
    from winnow.config import ScoreConfig
    from winnow.errors import WinnowError

    with pytest.raises(WinnowError) as e:
        ScoreConfig(reward_fn="length", prm_system=SYSTEM).validate()
    assert str(e.value) == "score.prm_system: only a process reward model takes it (prm_model, --prm-model)"
    bare = tmp_path / "bare"
    shutil.copytree(models["qwen-prm"], bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    (bare / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "chat_template"}))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    assert prm.check_prm(str(bare), shape="auto", tag=None, labels=None) == "token-class"  # fine without one
    message = (
        f"process reward model {bare} has no chat template to hold a system message (score.prm_system, --prm-system)"
    )
    with pytest.raises(WinnowError) as e:
        prm.check_prm(str(bare), shape="auto", tag=None, labels=None, system=SYSTEM)
    assert str(e.value) == message


# ---------------------------------------------------------------- the commands

STEPS = {
    "p0": ["2 + 2 = 4\n\nThe answer is 4", "2 + 2 = 5\n\nThe answer is 5", "So 4\n\nThe answer is 4"],
    "p1": ["3 * 3 = 9\n\nThe answer is 9", "The answer is 6", "3 + 3 = 6\n\nThe answer is 6"],
}


@pytest.fixture()
def stepped_run(tmp_path):
    prompts = [Prompt(id="p0", text="What is 2 + 2?"), Prompt(id="p1", text="What is 3 * 3?")]
    fake_generate(tmp_path / "run", prompts, STEPS)
    return tmp_path / "run"


def test_score_keeps_step_scores_and_prm_weighted_votes_by_them(models, stepped_run, tmp_path):
    from winnow.pipeline import best_of_n

    run, folder = stepped_run, str(models["math-shepherd"])
    args = ["--run-dir", str(run), "--prm-model", folder, "--prm-aggregate", "min", "--device", "cpu"]
    assert main(["score", *args]) == 0
    rows = {(r["prompt_id"], r["sample_index"]): r for r in read_rows(run / "score" / "shard-00000.jsonl")}
    rm = load(folder)
    rewards = np.load(run / "score" / "rewards.npy")
    for i, p in enumerate(("p0", "p1")):
        expected = rm.step_rewards(["What is 2 + 2?", "What is 3 * 3?"][i : i + 1] * 3, STEPS[p])
        for j in range(3):
            np.testing.assert_allclose(rows[(p, j)]["step_scores"], expected[j], rtol=0, atol=1e-6)  # type: ignore[arg-type]
            assert rows[(p, j)]["reward"] == rewards[i, j] == min(rows[(p, j)]["step_scores"])
    manifest = json.loads((run / "score" / "manifest.json").read_text())
    assert manifest["config"]["score"]["prm_model"] == folder and manifest["scored"] == 6
    # prm-weighted: each answer weighs the sum of its completions' PRM scores
    out = tmp_path / "best.jsonl"
    assert best_of_n(run, out, aggregate="prm-weighted")[0] == 2
    best = {r["prompt_id"]: r for r in read_rows(out)}
    for i, p in enumerate(("p0", "p1")):
        weight: dict[str, float] = {}
        for j in range(3):
            answer = STEPS[p][j].rsplit(" ", 1)[-1]
            weight[answer] = weight.get(answer, 0.0) + rewards[i, j]
        assert best[p]["answer"] == max(weight, key=weight.__getitem__) and best[p]["aggregate"] == "prm-weighted"


def test_score_prm_system_is_scored_under_and_part_of_the_config(models, stepped_run, capsys):
    from winnow.config import ScoreConfig

    run, folder = stepped_run, str(models["qwen-prm"])
    args = ["score", "--run-dir", str(run), "--prm-model", folder, "--device", "cpu"]
    assert main([*args, "--prm-system", SYSTEM]) == 0
    rows = {(r["prompt_id"], r["sample_index"]): r for r in read_rows(run / "score" / "shard-00000.jsonl")}
    expected = load(folder, system=SYSTEM).step_rewards(["What is 2 + 2?"] * 3, STEPS["p0"])
    for j in range(3):
        np.testing.assert_allclose(rows[("p0", j)]["step_scores"], expected[j], rtol=0, atol=1e-6)  # type: ignore[arg-type]
    manifest = json.loads((run / "score" / "manifest.json").read_text())
    assert manifest["config"]["score"]["prm_system"] == SYSTEM
    # unset, the stage config is what it was before the field existed: old runs resume
    assert "prm_system" not in ScoreConfig(prm_model=folder).stage_config()
    fails([*args, "--prm-system", "Be brief."], capsys, "refusing to resume", "prm_system", error_last=True)


def test_bon_with_a_prm(models, tiny_policy, tmp_path):
    """``winnow bon`` samples, scores each step and votes by the PRM's scores."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} + {i}?"}) + "\n" for i in range(2)))
    run, out = tmp_path / "run", tmp_path / "best.jsonl"
    argv = ["bon", "--prompts", str(prompts), "--run-dir", str(run), "--model", str(tiny_policy), "--n", "3"]
    argv += ["--max-new-tokens", "6", "--device", "cpu", "--prm-model", str(models["token-class"])]
    assert main([*argv, "--prm-aggregate", "last", "--aggregate", "prm-weighted", "--out", str(out)]) == 0
    scored = read_rows(run / "score" / "shard-00000.jsonl")
    assert len(scored) == 6 and all(r["reward"] == r["step_scores"][-1] for r in scored if r["step_scores"])
    assert [r["aggregate"] for r in read_rows(out)] == ["prm-weighted"] * 2


def test_prm_weighted_reads_the_prm_apart_from_other_rewards(models, stepped_run):
    """With a second reward, votes weigh the PRM's own matrix (``rewards-1.npy``), not the sum."""
    from winnow.pipeline import best_of_n, prm_matrix
    from winnow.stream import load_scored_index

    folder = str(models["token-class"])
    extra = ["--reward-fn", "length", "--reward-weights", "0.001,1", "--device", "cpu"]
    assert main(["score", "--run-dir", str(stepped_run), "--prm-model", folder, *extra]) == 0
    index, rewards, manifest = load_scored_index(stepped_run)
    index.close()
    own = np.load(stepped_run / "score" / "rewards-1.npy")
    assert np.array_equal(prm_matrix(stepped_run, manifest, rewards), own)
    assert not np.array_equal(own, rewards)
    count, head = best_of_n(stepped_run, stepped_run.parent / "b.jsonl", aggregate="prm-weighted")
    assert count == 2 and {r["aggregate"] for r in head} == {"prm-weighted"}


def test_bad_prm_config_is_one_line_before_any_work(models, stepped_run, tmp_path, capsys):
    untagged = build_prm(tmp_path / "untagged", "math-shepherd", tag="")
    fails(
        ["score", "--run-dir", str(stepped_run), "--prm-model", str(untagged), "--device", "cpu"],
        capsys,
        f"winnow: error: process reward model {untagged}: step tag 'ки' is not one token of its vocabulary",
        one_error=True,
    )
    assert not (stepped_run / "score").exists()
    folder = str(models["math-shepherd"])
    fails(
        ["score", "--run-dir", str(stepped_run), "--prm-model", folder, "--prm-labels", "+"],
        capsys,
        "winnow: error: score.prm_labels: give two different labels, GOOD BAD, got ['+']",
        one_error=True,
    )
    fails(
        ["bon", "--prompts", str(stepped_run / "generate" / "prompts.jsonl"), "--run-dir", str(tmp_path / "r2")]
        + ["--model", "m", "--aggregate", "prm-weighted"],
        capsys,
        "winnow: error: --aggregate prm-weighted needs a process reward model (--prm-model)",
        one_error=True,
    )
    assert not (tmp_path / "r2").exists()


def test_the_server_scores_with_the_same_applier(models):
    """``winnow serve --prm-model``: the server's applier rewards each candidate by its steps
    and hands the step scores back with it; ``prm-weighted`` is refused by name (``bon``'s)."""
    from winnow.config import ScoreConfig
    from winnow.serve.answer import check_aggregate
    from winnow.serve.reward import server_applier
    from winnow.serve.work import ApiError

    folder = str(models["math-shepherd"])
    applier = server_applier(ScoreConfig(prm_model=folder, prm_aggregate="mean", device="cpu"))
    got = applier.apply(PROMPTS, COMPLETIONS, {"prompt_ids": ["a", "b"], "sample_indices": [0, 0]})
    steps = load(folder).step_rewards(PROMPTS, COMPLETIONS)
    for i in range(2):
        np.testing.assert_allclose(got.paths[i]["step_scores"], steps[i], rtol=0, atol=1e-6)  # type: ignore[arg-type]
        assert got.total[i] == pytest.approx(np.mean(got.paths[i]["step_scores"]), rel=1e-12)
    with pytest.raises(ApiError, match="aggregate 'prm-weighted' weighs votes by a process reward model's") as e:
        check_aggregate("prm-weighted", rewarded=True)
    assert e.value.param == "aggregate"
