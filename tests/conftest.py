"""Tiny models built in-process: a byte-level BPE tokenizer with a chat template, a
2-layer Llama policy and a 2-layer Llama reward model. No network, no downloaded weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


def make_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|im_end|>", "<|im_start|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def _llama_config(tokenizer, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kw,
    )


def build_policy(folder: Path, seed: int = 0, chat: bool = True) -> Path:
    """A random 2-layer Llama causal LM saved as an ordinary HF folder."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = make_tokenizer(chat=chat)
    model = LlamaForCausalLM(_llama_config(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_reward_model(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer Llama with a one-label score head."""
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    model = LlamaForSequenceClassification(_llama_config(tokenizer, num_labels=1))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    return build_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="session")
def tiny_policy_b(tmp_path_factory) -> Path:
    return build_policy(tmp_path_factory.mktemp("policy_b"), seed=1)


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("rm"))


def write_jsonl(path: Path, rows: list) -> Path:
    import json

    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# What a test module's `workdir` holds unless it says otherwise (WORKDIR_PROMPTS, WORKDIR_FILES).
DEFAULT_PROMPTS = [{"id": f"p{i}", "prompt": f"prompt number {i}"} for i in range(5)]


@pytest.fixture()
def workdir(tmp_path, request) -> Path:
    """``tmp_path`` holding ``prompts.jsonl`` and the test module's other input files.

    The module sets ``WORKDIR_PROMPTS`` (rows; default ``DEFAULT_PROMPTS``: ids p0..p4) and
    ``WORKDIR_FILES`` (file name -> text, written as given; default none).
    """
    write_jsonl(tmp_path / "prompts.jsonl", getattr(request.module, "WORKDIR_PROMPTS", DEFAULT_PROMPTS))
    for name, text in getattr(request.module, "WORKDIR_FILES", {}).items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: they gain nothing from a second one,
    and on a busy machine the idle thread spin-waits made each tiny op ~30x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """pytest-randomly shuffles the tests (when installed, as in the test extra): after a
    failure, say how to rerun in the same order, since `-q` hides the header that says it."""
    seed = getattr(config.option, "randomly_seed", None)
    if exitstatus != 0 and isinstance(seed, int) and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(
            f"tests ran in random order: rerun the same order with --randomly-seed={seed}, "
            "or in file order with -p no:randomly"
        )
