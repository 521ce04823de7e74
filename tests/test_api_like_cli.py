"""The Python API behaves as the CLI does: a Python reward in ``winnow.run``, the SFT start
defaulting to the generate model, prompts as file rows (ids and reference columns), errors
named after the function called, a loaded model kept across calls, and library noise kept
quiet unless ``verbose=True``. Tiny models, real stages."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import winnow
import winnow.generate

PROMPTS = ["write about a cat", "write about rain"]


def polite(prompts, completions, **kw):
    return [float(c.count("e")) for c in completions]


def rude(prompts, completions, **kw):
    return [-float(c.count("e")) for c in completions]


def by_index(prompts, completions, sample_indices, **kw):
    return [float(j) for j in sample_indices]


def test_run_takes_a_python_reward_named_by_module_and_qualname(tmp_path, tiny_policy):
    gen = dict(models=[str(tiny_policy)], n=2, max_new_tokens=4, device="cpu")
    run = tmp_path / "run"
    kw = dict(generate=gen, select={"strategy": "top_per_prompt"}, sft={"epochs": 1, "device": "cpu"})
    summary = winnow.run(run, PROMPTS, score={"reward_fn": polite}, **kw)
    assert set(summary) == {"generate", "score", "select", "sft"}
    manifest = json.loads((run / "score/manifest.json").read_text())
    assert manifest["config"]["score"]["reward_fn"] == f"{__name__}:polite"
    texts = [json.loads(line) for f in sorted((run / "generate").glob("shard-*.jsonl")) for line in f.open()]
    expected = np.zeros((2, 2))
    for row in texts:
        expected[int(row["prompt_id"]), row["sample_index"]] = row["text"].count("e")
    assert np.load(run / "score/rewards.npy").tolist() == expected.tolist()
    winnow.run(run, PROMPTS, score={"reward_fn": polite}, **kw)  # unchanged: resumes
    with pytest.raises(winnow.WinnowError, match="refusing to resume"):
        winnow.run(run, PROMPTS, score={"reward_fn": rude}, **kw)
    with pytest.raises(winnow.WinnowError, match="a Python function must be the only reward"):
        winnow.run(tmp_path / "two", PROMPTS, score={"reward_fn": [polite, "length"]}, **kw)


def test_a_python_reward_reaches_rounds_and_adaptive_steps(tmp_path, tiny_policy):
    gen = dict(models=[str(tiny_policy)], n=4, max_new_tokens=3, device="cpu")
    kw = dict(generate=gen, select={"strategy": "top_per_prompt"}, sft={"epochs": 1, "device": "cpu"})
    winnow.run(tmp_path / "rounds", PROMPTS, score={"reward_fn": by_index}, rounds=1, **kw)
    assert np.load(tmp_path / "rounds/round-1/score/rewards.npy").tolist() == [[0.0, 1.0, 2.0, 3.0]] * 2
    # every sample passes at threshold 0: each prompt closes after its first step of 2
    adaptive = {"step": 2, "stop_when": "pass"}
    score = {"reward_fn": by_index, "pass_threshold": 0.0}
    summary = winnow.run(tmp_path / "adaptive", PROMPTS, score=score, adaptive=adaptive, **kw)
    assert summary["generate"]["adaptive"]["samples_per_prompt"] == [2, 2]


def test_score_stage_takes_reward_fn_as_a_callable_too(tmp_path, tiny_policy):
    winnow.generate_stage(tmp_path, PROMPTS, models=[str(tiny_policy)], n=2, max_new_tokens=3, device="cpu")
    manifest = winnow.score_stage(tmp_path, reward_fn=polite)
    assert manifest["config"]["score"]["reward_fn"] == f"{__name__}:polite"


def test_sft_and_dpo_start_from_the_generate_model_as_the_cli_does(tmp_path, tiny_policy, capfd):
    winnow.generate_stage(tmp_path, PROMPTS, models=[str(tiny_policy)], n=2, max_new_tokens=4, device="cpu")
    winnow.score_stage(tmp_path, reward=by_index)
    winnow.select_stage(tmp_path, pairs="best-worst")
    capfd.readouterr()
    sft = winnow.sft_stage(tmp_path, epochs=1, device="cpu")
    assert sft["config"]["sft"]["model"] == str(tiny_policy)
    err = capfd.readouterr().err  # winnow's own training bar, and no library's bars or warnings
    assert "Tokenizing train dataset" not in err and "Loading weights" not in err and "Warning" not in err
    dpo = winnow.dpo_stage(tmp_path, epochs=1, device="cpu")
    assert dpo["config"]["dpo"]["model"] == str(tiny_policy)


def test_prompts_as_file_rows_keep_their_ids_and_reference_columns(tmp_path, tiny_policy):
    rows = [{"id": "x1", "prompt": "what is 70+2?", "answer": "72"}, {"prompt": "and 2+2?", "answer": "4"}]

    def exact(prompts, completions, answer, prompt_ids, **kw):
        return [float(c == a) for c, a in zip(completions, answer, strict=True)]

    assert winnow.score(rows, [["72", "71"], ["5", "4"]], reward=exact).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    winnow.generate_stage(tmp_path, rows, models=[str(tiny_policy)], n=1, max_new_tokens=2, device="cpu")
    written = [json.loads(line) for line in (tmp_path / "generate/prompts.jsonl").open()]
    assert [(r["id"], r["columns"]) for r in written] == [("x1", {"answer": "72"}), ("row-1", {"answer": "4"})]
    with pytest.raises(winnow.WinnowError) as e:
        winnow.score([{"id": "x1", "question": "?"}], [["a"]], reward="length")
    assert str(e.value) == "prompts[0]: field 'prompt': missing prompt (need 'prompt' or 'messages')"
    with pytest.raises(winnow.WinnowError, match=r"prompts\[0\]: field 'prompts': column name is reserved"):
        winnow.score([{"prompt": "x", "prompts": 1}], [["a"]], reward="length")


def test_best_of_n_names_itself_in_its_errors(tiny_policy):
    with pytest.raises(winnow.WinnowError) as e:
        winnow.best_of_n(["a"], model=str(tiny_policy), reward="length", n=2, bogus=1)
    assert str(e.value).startswith("winnow.best_of_n: field 'bogus'")


@pytest.fixture
def loads(monkeypatch):
    """How many times a backend (a model's weights) was built."""
    count = [0]
    real = winnow.generate.make_backend

    def counted(*args, **kw):
        count[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(winnow.generate, "make_backend", counted)
    return count


def test_a_loaded_model_is_kept_across_calls(tiny_policy, loads):
    kw = dict(n=3, seed=5, max_new_tokens=4)
    plain = [winnow.sample(PROMPTS, model=str(tiny_policy), device="cpu", **kw) for _ in range(2)]
    assert loads[0] == 2  # a name is loaded by every call

    llm = winnow.load_model(str(tiny_policy), device="cpu")
    assert isinstance(llm, winnow.Model) and loads[0] == 3
    kept = [winnow.sample(PROMPTS, model=llm, **kw) for _ in range(2)]
    best = winnow.best_of_n(PROMPTS, model=llm, reward=polite, **kw)
    assert loads[0] == 3  # the handle's weights serve every later call
    assert kept == plain  # and sample what a name samples
    assert best == [row[int(np.argmax([t.count("e") for t in row]))] for row in plain[0]]
    with pytest.raises(winnow.WinnowError) as e:
        winnow.sample(PROMPTS, model=llm, device="cuda")
    assert str(e.value) == (
        "winnow.sample: field 'device': the model was loaded with device='cpu'; "
        "load another (winnow.load_model(..., device=...)) to change it"
    )
    winnow.sample(PROMPTS, model=llm, device="cpu", batch_size=16, **kw)  # the values it was loaded with


def test_library_noise_is_quiet_unless_verbose(tiny_policy, capfd):
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    winnow.sample(["hi"], model=str(tiny_policy), n=1, max_new_tokens=2, device="cpu")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert hf_logging.is_progress_bar_enabled() == bars  # put back after the call
    winnow.sample(["hi"], model=str(tiny_policy), n=1, max_new_tokens=2, device="cpu", verbose=True)
    assert "Loading weights" in capfd.readouterr().err

    def noisy(prompts, completions, **kw):
        warnings.warn("a library's deprecation", FutureWarning, stacklevel=1)
        return [1.0] * len(completions)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        winnow.score(["a"], [["b"]], reward=noisy)
        assert caught == []
        winnow.score(["a"], [["b"]], reward=noisy, verbose=True)
        assert [w.category for w in caught] == [FutureWarning]
