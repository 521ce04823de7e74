"""The public API (``import winnow``) on tiny models: in memory and in a run dir."""

from __future__ import annotations

import json
import linecache
import subprocess
import sys

import numpy as np
import pytest
from serving import scripted_judge

import winnow
from winnow.provenance import callable_identity
from winnow.rewards.pick import shuffled

PROMPTS = ["write about a cat", [{"role": "user", "content": "write about a dog"}], "write about rain"]


def length(prompts, completions, **kw):
    return [float(len(c)) for c in completions]


def test_import_is_fast_and_loads_no_model_code():
    code = "import sys, winnow; print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert set(winnow.__all__) >= {"sample", "score", "best_of_n", "run", "generate_stage", "score_stage"}


def test_sample_is_what_the_generate_stage_writes(tmp_path, tiny_policy):
    texts = winnow.sample(PROMPTS, model=str(tiny_policy), n=3, seed=7, max_new_tokens=5, device="cpu")
    assert [len(row) for row in texts] == [3, 3, 3]
    winnow.generate_stage(tmp_path, PROMPTS, models=[str(tiny_policy)], n=3, seed=7, max_new_tokens=5, device="cpu")
    rows = [json.loads(line) for f in sorted((tmp_path / "generate").glob("shard-*.jsonl")) for line in f.open()]
    by_key = {(r["prompt_id"], r["sample_index"]): r["text"] for r in rows}
    assert texts == [[by_key[(str(i), j)] for j in range(3)] for i in range(3)]


def test_score_places_each_reward_and_nan_for_none_and_missing():
    def odd(prompts, completions, prompt_ids, sample_indices, **kw):
        pairs = zip(prompts, sample_indices, strict=True)
        return [None if j == 1 else float(len(p) if isinstance(p, str) else 0) for p, j in pairs]

    m = winnow.score(["ab", "abc"], [["x", "y"], ["z"]], reward=odd)
    assert m.shape == (2, 2)
    assert m[0, 0] == 2.0 and m[1, 0] == 3.0 and np.isnan(m[0, 1]) and np.isnan(m[1, 1])
    with pytest.raises(winnow.WinnowError, match="2 prompts but 1 rows"):
        winnow.score(["a", "b"], [["x"]], reward="length")
    with pytest.raises(winnow.WinnowError, match="unknown reward function 'nope'"):
        winnow.score(["a"], [["x"]], reward="nope")


@pytest.mark.parametrize(
    ("completions", "where"), [(["xy"], "completions[0]"), ([["a"], "xy"], "completions[1]"), ("xy", "completions")]
)
def test_score_refuses_a_string_where_a_list_of_completions_belongs(completions, where):
    prompts = ["a", "b"][: len(completions)] if not isinstance(completions, str) else ["a"]
    with pytest.raises(winnow.WinnowError) as e:
        winnow.score(prompts, completions, reward="length")
    assert str(e.value) == f"score: {where} is a string; give a list of completions per prompt, e.g. [['xy']]"


def test_score_with_a_reward_model(tiny_reward_model):
    m = winnow.score(["hi", "yo"], [["a b", "c"], ["d", "e f g"]], reward=None, reward_model=str(tiny_reward_model))
    assert m.shape == (2, 2) and np.isfinite(m).all()


def test_best_of_n_is_the_argmax_of_sample_and_score(tiny_policy):
    kw = dict(model=str(tiny_policy), n=4, seed=3, max_new_tokens=6, device="cpu")
    best = winnow.best_of_n(PROMPTS, reward=length, **kw)
    texts = winnow.sample(PROMPTS, **kw)
    assert best == [row[int(np.argmax([len(t) for t in row]))] for row in texts]


def test_best_of_n_select_by_judge_is_the_judges_pick(tiny_policy):
    kw = dict(model=str(tiny_policy), n=4, seed=3, max_new_tokens=6, device="cpu")
    texts = winnow.sample(PROMPTS, **kw)
    with scripted_judge(lambda content: "[[2]]") as server:
        pick = {"judge": server.url, "judge_model": "judge", "window": 2, "seed": 5}
        best = winnow.best_of_n(PROMPTS, reward=length, select_by="judge", pick=pick, **kw)
        assert len(server.requests) == 3 * len(PROMPTS)  # 4 candidates in windows of 2: 2 calls, then the final
        assert {r["model"] for r in server.requests} == {"judge"}
    # the second shown wins every window, so the last of each prompt's order (seed 5, its id) wins
    assert best == [texts[i][shuffled(4, 5, str(i))[3]] for i in range(len(PROMPTS))]


@pytest.mark.parametrize(
    ("select_by", "pick", "message"),
    [
        ("judge", {"judge_model": "j"}, "pick.judge: select_by judge needs it (--pick-judge)"),
        (None, {"window": 3}, "pick.window: applies to select_by judge only (--select-by judge)"),
        ("vote", {}, "pick.select_by: must be one of reward, judge, got 'vote'"),
    ],
)
def test_best_of_n_refuses_a_bad_judge_before_sampling(select_by, pick, message):
    with pytest.raises(winnow.WinnowError) as e:
        winnow.best_of_n(["a"], model="no/such/model", reward=length, select_by=select_by, pick=pick)
    assert str(e.value) == message


def test_bad_options_name_the_field(tiny_policy):
    with pytest.raises(winnow.WinnowError, match=r"generate\.top_p"):
        winnow.sample(["a"], model=str(tiny_policy), top_p=2.0)
    with pytest.raises(winnow.WinnowError, match="field 'nonsense'"):
        winnow.sample(["a"], model=str(tiny_policy), nonsense=1)
    with pytest.raises(winnow.WinnowError, match="one string"):
        winnow.sample("a", model=str(tiny_policy))


def test_run_and_each_stage_in_a_run_dir(tmp_path, tiny_policy):
    gen = dict(models=[str(tiny_policy)], n=3, max_new_tokens=5, device="cpu")
    summary = winnow.run(
        tmp_path / "run", PROMPTS, generate=gen, score={"reward_fn": "length"}, sft={"epochs": 1, "device": "cpu"}
    )
    assert set(summary) == {"generate", "score", "select", "sft"}
    assert (tmp_path / "run/sft/checkpoint/config.json").exists()
    by_rounds = winnow.run(tmp_path / "rounds", PROMPTS, generate=gen, score={"reward_fn": "length"}, rounds=1)
    assert set(by_rounds) == {"round-1"}

    d = tmp_path / "stages"
    winnow.generate_stage(d, PROMPTS, **gen)
    assert winnow.score_stage(d, reward=length)["config"]["score"]["reward_fn"].endswith("length")
    assert np.load(d / "score/rewards.npy").shape == (3, 3)
    winnow.select_stage(d, pairs="best-worst")
    assert winnow.sft_stage(d, model=str(tiny_policy), epochs=1, device="cpu")["checkpoint"] == str(
        d / "sft/checkpoint"
    )
    assert winnow.dpo_stage(d, model=str(tiny_policy), epochs=1, device="cpu")["checkpoint"] == str(
        d / "dpo/checkpoint"
    )


def test_an_adaptive_run_samples_in_steps_until_a_pass(tmp_path, tiny_policy):
    """``winnow.run(..., adaptive=...)``: a length reward with a pass threshold no sample
    reaches keeps every prompt open to MAX; one every sample reaches closes all after step 1."""
    gen = dict(models=[str(tiny_policy)], n=4, max_new_tokens=5, device="cpu")
    for threshold, columns in [(1e9, 4), (0.0, 2)]:
        run = tmp_path / f"t{columns}"
        summary = winnow.run(
            run,
            PROMPTS,
            generate=gen,
            score={"reward_fn": "length", "pass_threshold": threshold},
            select={"strategy": "top_per_prompt"},
            sft={"epochs": 1, "device": "cpu"},
            adaptive=winnow.AdaptiveConfig(step=2, stop_when="pass"),
        )
        assert summary["generate"]["adaptive"]["samples_per_prompt"] == [columns] * len(PROMPTS)
        matrix = np.load(run / "score/rewards.npy")
        assert matrix.shape == (len(PROMPTS), 4) and (~np.isnan(matrix)).sum(axis=1).tolist() == [columns] * 3


def notebook_function(source: str, name: str):
    """Define a function as a notebook cell does: its source only in linecache, no file."""
    filename = f"<cell-{abs(hash(source))}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def test_a_reward_from_a_notebook_or_repl_is_identified_by_its_code(tmp_path, tiny_policy):
    cell = "def reward(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n"
    a, same = notebook_function(cell, "reward"), notebook_function(cell, "reward")
    b = notebook_function(cell.replace("len(c))", "len(c)) * 2"), "reward")
    assert callable_identity(a) == callable_identity(same) != callable_identity(b) != "unknown"
    bare = {}  # no source anywhere (python -c, a REPL): the compiled code decides
    exec("def r(p, c, **kw):\n    return [1.0] * len(c)\n", bare)
    other = {}
    exec("def r(p, c, **kw):\n    return [2.0] * len(c)\n", other)
    assert "unknown" != callable_identity(bare["r"]) != callable_identity(other["r"])

    winnow.generate_stage(tmp_path, ["x", "y"], models=[str(tiny_policy)], n=2, max_new_tokens=3, device="cpu")
    winnow.score_stage(tmp_path, reward=a)
    winnow.score_stage(tmp_path, reward=same)  # unchanged: resumes (nothing to do)
    with pytest.raises(winnow.WinnowError, match="refusing to resume"):
        winnow.score_stage(tmp_path, reward=b)
