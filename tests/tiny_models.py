"""Tiny models built in-process: a byte-level BPE tokenizer with a chat template, 2-layer
policies and reward models. No network, no downloaded weights.

Plain functions, imported as ``from tiny_models import ...``; the session fixtures that build
one of each for the whole suite (``tiny_policy``, ``tiny_reward_model``) are in ``conftest.py``.
"""

from __future__ import annotations

import random
from pathlib import Path

from winnow.records import Prompt

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "describe a rainy monday commute in two sentences",
    "a wonderful happy day with great friends and good food",
    "the printer is broken again and the meeting is late",
    "write two sentences about a kitchen table",
] * 20
WORDS = " ".join(CORPUS[:5]).split()
SPECIALS = ["<pad>", "<s>", "<|im_end|>", "<|im_start|>"]

# The size of every tiny model; a test names only the fields it changes.
TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

# Reward-model architectures: model_type -> (config class, sequence-classification class, extra
# config). The windowed ones get a window shorter than the longest rows, so both sides of it are
# exercised (rewards/test_prefix.py, rewards/test_packed.py).
REWARD_ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForSequenceClassification", {}),
    "mistral": ("MistralConfig", "MistralForSequenceClassification", {"sliding_window": 96}),
    "qwen2": ("Qwen2Config", "Qwen2ForSequenceClassification", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForSequenceClassification", {"head_dim": 8}),
    "gemma": ("GemmaConfig", "GemmaForSequenceClassification", {"head_dim": 8}),
    "gemma2": ("Gemma2Config", "Gemma2ForSequenceClassification", {"head_dim": 8, "sliding_window": 96}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3TextForSequenceClassification", {"head_dim": 8, "sliding_window": 96}),
    "phi3": ("Phi3Config", "Phi3ForSequenceClassification", {}),
    "olmo2": ("Olmo2Config", "Olmo2ForSequenceClassification", {}),
}


# Three prompts for the backends: two texts of different lengths and a chat with a system message.
PROMPTS = [
    Prompt(id="a", text="describe a rainy monday commute"),
    Prompt(id="b", text="the quick brown fox jumps over the lazy dog and the printer is broken"),
    Prompt(id="c", messages=({"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"})),
]
# Two chat rows to fine-tune on (prompt and completion as messages, as select writes them).
SFT_ROWS = [
    {
        "prompt": [{"role": "user", "content": "describe a rainy monday commute"}],
        "completion": [{"role": "assistant", "content": "a wonderful happy day"}],
    },
    {
        "prompt": [{"role": "user", "content": "write two sentences about a kitchen table"}],
        "completion": [{"role": "assistant", "content": "great friends and good food"}],
    },
]


def completion_logprob(folder, row) -> float:
    """log p(completion | prompt) under the model in ``folder``: the sum over the completion's
    tokens of an SFT-style chat ``row`` (``{"prompt": messages, "completion": messages}``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tok(full, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = model(ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0]
    return logp[len(p_ids) - 1 :].sum().item()


def make_tokenizer(chat: bool = True, *, extra_corpus: tuple[str, ...] = (), vocab_size: int = 300, regex: bool = True):
    """A byte-level BPE trained on ``CORPUS`` (plus ``extra_corpus``), with the chat template.

    ``regex=False`` pre-tokenizes without splitting on words, so merges may cross a space or a newline.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=regex)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS + list(extra_corpus), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(tokenizer, config_class: str = "LlamaConfig", **fields):
    """A transformers config of ``config_class``: ``TINY``, the tokenizer's vocabulary and special
    tokens, then ``fields`` over them."""
    import transformers

    tokens = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return getattr(transformers, config_class)(**(TINY | tokens | fields))


def build_policy(folder: Path, seed: int = 0, chat: bool = True) -> Path:
    """A random 2-layer Llama causal LM saved as an ordinary HF folder."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = make_tokenizer(chat=chat)
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_reward_model(folder: Path, arch: str = "llama", tokenizer=None, seed: int = 0, **overrides) -> Path:
    """A random 2-layer reward model of ``arch`` (``REWARD_ARCHITECTURES``) with a one-label head."""
    import torch
    import transformers

    config_name, model_name, extra = REWARD_ARCHITECTURES[arch]
    tok = tokenizer or make_tokenizer()
    config = tiny_config(tok, config_name, num_labels=1, **(extra | overrides))
    torch.manual_seed(seed)
    getattr(transformers, model_name)(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def workload(seed: int = 0, sizes=(1, 2, 3, 5, 8, 13, 16)) -> tuple[list[str], list[str]]:
    """Prompts of mixed lengths with N = sizes[i] completions each (0-24 words of ``WORDS``), shuffled.

    Returns (prompts, completions), parallel lists of sum(sizes) rows.
    """
    rng = random.Random(seed)
    rows = []
    for n in sizes:
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(1, 14)))
        rows += [(prompt, " ".join(rng.choices(WORDS, k=rng.randint(0, 24)))) for _ in range(n)]
    rng.shuffle(rows)
    return [p for p, _ in rows], [c for _, c in rows]


def reward_scores(folder, prompts, completions, **kw):
    """(scores as a float array of shape (len(prompts),), the ``ClassifierReward``) of ``folder`` on the CPU."""
    import numpy as np

    from winnow.rewards.classifier import ClassifierReward

    rm = ClassifierReward(str(folder), device="cpu", **kw)
    return np.array(rm(prompts, completions), dtype=float), rm


PRM_SHAPES = ("math-shepherd", "token-class", "qwen-prm")
"""Tiny process reward models (``build_prm``): a Llama LM with Math-Shepherd's tag, a Qwen2
token classifier with two labels, and Qwen2.5-Math-PRM's own layout (its Linear-ReLU-Linear
head, ``Qwen2ForProcessRewardModel`` in config.json)."""


def build_prm(folder: Path, shape: str = "math-shepherd", seed: int = 0, tag: str | None = None) -> Path:
    """A random 2-layer process reward model of ``shape`` (``PRM_SHAPES``) whose tokenizer knows
    its step tag (``ки`` or ``<extra_0>``, or ``tag``; ``tag=""`` adds none)."""
    import json

    import torch
    import transformers

    tok = make_tokenizer()
    tag = ("ки" if shape == "math-shepherd" else "<extra_0>") if tag is None else tag
    if tag:
        tok.add_special_tokens({"additional_special_tokens": [tag]})
    torch.manual_seed(seed)
    if shape == "math-shepherd":
        model = transformers.LlamaForCausalLM(tiny_config(tok))
    else:
        model = transformers.Qwen2ForTokenClassification(tiny_config(tok, "Qwen2Config", num_labels=2))
        if shape == "qwen-prm":
            h = model.config.hidden_size
            model.score = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if shape == "qwen-prm":  # as the real folder says it (its own code, which winnow does not run)
        from safetensors.torch import load_file, save_file

        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen2ForProcessRewardModel"]}))
        weights = load_file(folder / "model.safetensors")  # and the LM head a checkpoint may keep
        save_file({**weights, "lm_head.weight": torch.zeros(len(tok), h)}, folder / "model.safetensors")
    return folder
