"""The judge reward against ``winnow serve`` with tiny models over real HTTP: a model built to
answer "Score: 7" scores every row; a random model's answers hold no score, so every row is
left unscored and counted."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import write_jsonl
from serving import serve_in_thread
from tiny_models import make_tokenizer, tiny_config

from winnow.cli import main
from winnow.config import ServeConfig
from winnow.errors import WinnowError
from winnow.remote import ClientSettings
from winnow.rewards.judge import JudgeReward, parse_score
from winnow.serve.main import build_app


def build_scorer(folder, answer: str):
    """A Llama whose greedy continuation of any chat prompt is ``answer`` then EOS.

    One layer with its output projections zeroed passes the embedding straight through;
    embeddings are one-hot, so the logits are a lookup table: next token = table[last token].
    """
    from transformers import LlamaForCausalLM

    tok = make_tokenizer()
    vocab = len(tok)
    hidden = -(-vocab // 8) * 8  # 4 heads of an even head_dim
    config = tiny_config(
        tok,
        hidden_size=hidden,
        intermediate_size=8,
        num_hidden_layers=1,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    last = tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=True)
    last = last["input_ids"][-1] if isinstance(last, dict) or hasattr(last, "keys") else last[-1]
    chain = [last, *tok(answer, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert len(set(chain)) == len(chain), "the answer's tokens must be distinct for a lookup table"
    table = torch.zeros(vocab, hidden)
    table[:, tok.eos_token_id] = 1.0  # every other token leads to EOS
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden))
        for cur, nxt in itertools.pairwise(chain):
            table[:, cur] = 0.0
            table[nxt, cur] = 1.0
        model.lm_head.weight.copy_(table)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_policy):
    """A finished generate stage: 3 prompts x 2 completions from the tiny policy."""
    root = tmp_path_factory.mktemp("judge")
    write_jsonl(root / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(3)])
    argv = ["generate", "--prompts", str(root / "prompts.jsonl"), "--run-dir", str(root / "run")]
    assert main([*argv, "--model", str(tiny_policy), "--n", "2", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    return root / "run"


@pytest.fixture
def run_dir(generated, tmp_path):
    """A copy of the generated run per test: each test's judge listens on a port of its own,
    and the judge's URL is part of the score stage's config."""
    shutil.copytree(generated, tmp_path / "run")
    return tmp_path / "run"


def score(run, url: str, capsys) -> dict:
    argv = ["score", "--run-dir", str(run), "--reward-judge", f"{url}/v1", "--judge-model", "judge", "--json"]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)["score"]


def judge_replies(run) -> list:
    return [json.loads(line).get("judge_reply") for line in (run / "score" / "shard-00000.jsonl").open()]


def test_judge_scores_every_row_a_model_that_answers_with_a_score(tmp_path, run_dir, capsys):
    scorer = build_scorer(tmp_path / "scorer", "Score: 7")
    app = build_app(ServeConfig(model=str(scorer), served_model_name="judge", device="cpu"))
    with serve_in_thread(app) as url:
        judge = JudgeReward(ClientSettings(base_url=f"{url}/v1"), model="judge")
        assert judge(["say hi", [{"role": "user", "content": "{braces} ok"}]], ["hi", "ok"]) == [7.0, 7.0]
        summary = score(run_dir, url, capsys)
    assert (summary["scored"], summary["unscored"], summary["mean_reward"]) == (6, 0, 7.0)
    assert np.array_equal(np.load(run_dir / "score" / "rewards.npy"), np.full((3, 2), 7.0))
    assert judge_replies(run_dir) == ["Score: 7"] * 6  # each row keeps the reply it was scored from


def test_unparseable_answers_are_left_unscored_and_counted(run_dir, tiny_policy, capsys, tmp_path):
    app = build_app(ServeConfig(model=str(tiny_policy), served_model_name="judge", device="cpu"))
    with serve_in_thread(app) as url:
        judge = JudgeReward(ClientSettings(base_url=f"{url}/v1"), model="judge")
        assert judge(["a", "b", "c"], ["x", "y", "z"]) == [None, None, None]  # a random model's bytes
        assert judge.stats == {"asked": 3, "unparseable": 3}
        argv = ["score", "--run-dir", str(run_dir), "--reward-judge", f"{url}/v1", "--judge-model", "judge"]
        assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "score: 0 of 6 completions scored (6 unscored)" in out
    assert err.strip().splitlines()[-1] == (
        "winnow: warning: 6 of 6 completions (100%) are unscored: the reward returned None, "
        f"or a judge's reply held no score (each row of {run_dir}/score/shard-*.jsonl keeps it as judge_reply)"
    )
    assert np.isnan(np.load(run_dir / "score" / "rewards.npy")).all()
    replies = judge_replies(run_dir)  # the random model's text, kept to see why nothing was read
    assert len(replies) == 6 and all(isinstance(r, str) and parse_score(r) is None for r in replies)


def test_rubric_must_hold_both_slots(tmp_path):
    (tmp_path / "r.txt").write_text("Rate {completion}")
    with pytest.raises(WinnowError, match=r"has no \{prompt\}"):
        JudgeReward(ClientSettings(base_url="http://x/v1"), model="m", rubric=str(tmp_path / "r.txt"))


@pytest.mark.parametrize(
    ("answer", "value"),
    [("Score: 7", 7.0), ("score=3.5", 3.5), ("**Score:** 9", 9.0), ("10", 10.0), ("Score: 0", None), ("nice", None)],
)
def test_parse_score(answer, value):
    assert parse_score(answer) == value


def test_a_vision_language_judge_sees_the_prompt_image(tmp_path):
    """Rows whose prompt has an image: the judge's request carries it as an ``image_url`` part
    before the rubric, so a vision-language judge served by ``winnow serve`` answers what the
    model answers to that image and text (greedy, compared with the served backend itself)."""
    from tiny_vlm import build_vlm, tiny_image

    from winnow import images
    from winnow.generate.contract import Sampling
    from winnow.prompts import chat_with_images
    from winnow.rewards.judge import judge_content

    vlm = build_vlm(tmp_path / "vlm", "llava")
    app = build_app(ServeConfig(model=str(vlm), served_model_name="judge", device="cpu", max_body_bytes=100_000))
    image = images.decode(tiny_image(0), name="test")
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    with serve_in_thread(app) as url:
        judge = JudgeReward(ClientSettings(base_url=f"{url}/v1"), model="judge", max_tokens=5)
        assert judge([prompt], ["a dog"], images=images.decoded([(image,)])) == [None]  # a random model's bytes
    text = judge.render(prompt, "a dog")
    assert "user: [image]what is it?" in text
    asked = chat_with_images([{"role": "user", "content": judge_content(text, [image.pil()])}], id="asked")
    assert asked.images[0].pil().tobytes() == image.pil().tobytes()  # the same pixels went out, as PNG
    greedy = Sampling(n=1, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=5)
    assert judge.last_replies == [app.state.backend.generate([asked], greedy, seed=0)[0].text]
