"""Prompt token ids, rendered the same way for every backend that tokenizes locally.

The transformers and vLLM backends both call ``render``, so both see identical prompt token
ids for the same prompt and tokenizer (a test checks it against vLLM's own record). A
vision-language model's prompt goes through its processor instead (``vision_inputs``), which
writes each image's tokens where the chat template puts its marker.
"""

from __future__ import annotations

from winnow.errors import WinnowError
from winnow.records import Prompt


def render(tokenizer, prompt: Prompt, model: str) -> list[int]:
    """Prompt token ids: the chat template when the tokenizer has one, else the raw text.

    The template already writes any BOS it wants, so its output is tokenized without adding
    special tokens again (otherwise BOS would be doubled). ``model`` names the model in errors.
    """
    if prompt.images:
        raise WinnowError(
            f"prompt {prompt.id!r} has images, but model {model} is not a vision-language model "
            "(its config has no vision_config)"
        )
    if tokenizer.chat_template:
        messages = prompt.as_messages()
        if any(
            isinstance(m["content"], list) for m in messages
        ):  # text parts only: a text model's template takes strings
            messages = [{"role": m["role"], "content": t} for m, t in zip(messages, prompt.texts(), strict=True)]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if prompt.text is None:
        raise WinnowError(f"prompt {prompt.id!r} has chat messages, but model {model} has no chat template")
    return tokenizer(prompt.text, add_special_tokens=True)["input_ids"]


def vision_text(processor, prompt: Prompt) -> str:
    """The prompt as the processor's chat template writes it, with one image marker (not yet
    expanded to the image's tokens) per ``{"type": "image"}`` part."""
    return processor.apply_chat_template(prompt.as_messages(), tokenize=False, add_generation_prompt=True)


def vision_inputs(processor, prompt: Prompt) -> tuple[list[int], dict]:
    """(prompt token ids, the other model inputs) of one prompt for a vision-language model.

    The other inputs are the processor's tensors for a batch of one (``pixel_values`` of
    shape (1, ...) or (num_images, ...) by architecture, and whatever else its vision tower
    takes), without ``input_ids`` and ``attention_mask``. As in ``render``, the template
    writes any BOS, so no special tokens are added again.
    """
    images = [image.pil() for image in prompt.images]
    try:
        batch = processor(
            text=[vision_text(processor, prompt)],
            images=[images] if images else None,
            add_special_tokens=False,
            return_tensors="pt",
        )
    except ValueError as e:  # e.g. text that spells the model's image token: one image too many
        raise WinnowError(f"prompt {prompt.id!r}: the model's processor refused it: {str(e).splitlines()[0]}") from None
    ids = batch["input_ids"][0].tolist()
    return ids, {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
