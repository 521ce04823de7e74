"""Prompt token ids, rendered the same way for every backend that tokenizes locally.

The transformers and vLLM backends both call ``render``, so both see identical prompt token
ids for the same prompt and tokenizer (a test checks it against vLLM's own record).
"""

from __future__ import annotations

from winnow.errors import WinnowError
from winnow.records import Prompt


def render(tokenizer, prompt: Prompt, model: str) -> list[int]:
    """Prompt token ids: the chat template when the tokenizer has one, else the raw text.

    The template already writes any BOS it wants, so its output is tokenized without adding
    special tokens again (otherwise BOS would be doubled). ``model`` names the model in errors.
    """
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(prompt.as_messages(), tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if prompt.text is None:
        raise WinnowError(f"prompt {prompt.id!r} has chat messages, but model {model} has no chat template")
    return tokenizer(prompt.text, add_special_tokens=True)["input_ids"]
