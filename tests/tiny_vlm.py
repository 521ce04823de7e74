"""Tiny random vision-language models of real architectures, built in-process (no hub, no weights).

Each builder saves an ordinary folder that ``AutoModelForImageTextToText.from_pretrained`` and
``AutoProcessor.from_pretrained`` load: a 2-layer text model, a 1-layer vision tower, a byte-level
BPE tokenizer (trained on ``tiny_models.CORPUS``) holding the architecture's image tokens, the
PIL image processor (no torchvision needed) at a small size, and a chat template that renders
``{"type": "image"}`` content parts as the architecture's image marker.

``VLM_ARCHS`` lists the architectures by ``model_type``; ``build_vlm(folder, arch)`` builds one.
``tiny_image(seed)`` draws a small PNG to prompt them with.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from tiny_models import CORPUS, SPECIALS, TINY

# Text part of every tiny VLM (a Llama- or Qwen2-shaped decoder): the tiny text models' size,
# with room for a prompt's image tokens.
TEXT = TINY | dict(max_position_embeddings=512)
# The side of the square the image processors resize every image to (pixels).
SIDE = 16
# Vision tower of every tiny VLM: 16x16 images of 4-pixel patches; a builder names only what it changes.
VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=SIDE,
    patch_size=4,
)


def _template(image_marker: str) -> str:
    """A ChatML template whose content may be a string or a list of ``text``/``image`` parts;
    an image part renders as ``image_marker``, which the processor expands to the image's tokens."""
    return (
        "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
        "{% if part['type'] == 'image' %}" + image_marker + "{% else %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _tokenizer(image_tokens: list[str], named: dict[str, str]):
    """A byte-level BPE trained on ``CORPUS`` whose special tokens include ``image_tokens``;
    ``named`` gives some of them a name (``tokenizer.boi_token``...), as a processor may expect."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS + image_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        extra_special_tokens=named,
    )


def _token_ids(tok) -> dict:
    return dict(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )


def _gemma3(tok, text: dict):
    """Gemma 3: a SigLIP tower on 16x16 images of 4-pixel patches, pooled 2x2 into 4 image tokens
    that the processor puts between ``<start_of_image>`` and ``<end_of_image>``."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    ids = _token_ids(tok)
    head = text["hidden_size"] // text["num_attention_heads"]
    config = Gemma3Config(
        text_config=text | ids | dict(head_dim=head, query_pre_attn_scalar=head, sliding_window=64),
        vision_config=VISION,
        mm_tokens_per_image=4,
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
        **ids,
    )
    images = Gemma3ImageProcessorPil(size={"height": SIDE, "width": SIDE})
    processor = Gemma3Processor(
        image_processor=images, tokenizer=tok, image_seq_length=4, chat_template=_template("<start_of_image>")
    )
    model = Gemma3ForConditionalGeneration(config)
    # Gemma 3 starts its image projection at zero, which would make every image look the same.
    model.model.multi_modal_projector.mm_input_projection_weight.data.normal_(0.0, 0.5)
    return model, processor


def _llava(tok, text: dict):
    """LLaVA: a CLIP vision tower on 16x16 images of 4-pixel patches (16 image tokens, CLS dropped)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    ids = _token_ids(tok)
    config = LlavaConfig(
        vision_config=VISION | dict(model_type="clip_vision_model", num_hidden_layers=2, projection_dim=16),
        text_config=text | ids | dict(model_type="llama"),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(SIDE // 4) ** 2,
        **ids,
    )
    images = CLIPImageProcessorPil(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE})
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=4,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_template("<image>"),
    )
    return LlavaForConditionalGeneration(config), processor


def _idefics3(tok, text: dict):
    """Idefics3 (SmolVLM): one global 16x16 image (no splitting), 4x4 patches, pixel-shuffled 2x2:
    4 image tokens between ``<fake_token_around_image><global-img>`` and ``<fake_token_around_image>``."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    ids = _token_ids(tok)
    config = Idefics3Config(
        vision_config=VISION,
        text_config=text | ids | dict(model_type="llama"),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        **ids,
    )
    images = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": SIDE}, max_image_size={"longest_edge": SIDE}
    )
    processor = Idefics3Processor(
        image_processor=images, tokenizer=tok, image_seq_len=(SIDE // 4) ** 2 // 4, chat_template=_template("<image>")
    )
    return Idefics3ForConditionalGeneration(config), processor


# model_type -> (the image tokens its tokenizer holds, the names its processor reads some of them
# by, the builder of (model, processor)). Qwen2-VL's processor needs a video processor, which
# needs torchvision: not in the test environment, so not built here.
VLM_ARCHS = {
    "gemma3": (
        ["<start_of_image>", "<image_soft_token>", "<end_of_image>"],
        {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"},
        _gemma3,
    ),
    "llava": (["<image>"], {}, _llava),
    "idefics3": (
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
        + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
        {},
        _idefics3,
    ),
}


# model_type -> (prefix transformers saves, prefix of the Hub's checkpoints): transformers 5
# saves a CLIP or SigLIP tower without its ``vision_model`` level and reads either name, while
# vLLM reads only the Hub's (llava-hf/*, google/gemma-3-*).
HUB_NAMES = {
    "llava": ("vision_tower.", "vision_tower.vision_model."),
    "gemma3": ("vision_tower.", "vision_tower.vision_model."),
}


def build_vlm(folder: Path, arch: str = "llava", seed: int = 0, hub_names: bool = False, **text) -> Path:
    """A random tiny vision-language model of ``arch`` (a ``VLM_ARCHS`` key) with its processor,
    saved to ``folder``; returns ``folder``. ``text`` changes fields of the text model's ``TEXT``
    (vLLM's CPU attention wants a head size of 64: ``hidden_size=128, num_attention_heads=2``).
    ``hub_names``: the weights under the names a Hub checkpoint gives them (``HUB_NAMES``)."""
    import torch

    image_tokens, named, builder = VLM_ARCHS[arch]
    tok = _tokenizer(image_tokens, named)
    torch.manual_seed(seed)
    model, processor = builder(tok, TEXT | text)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if hub_names and arch in HUB_NAMES:
        _rename_weights(Path(folder) / "model.safetensors", *HUB_NAMES[arch])
    return Path(folder)


def _rename_weights(path: Path, old: str, new: str) -> None:
    """Rewrite the safetensors file ``path`` with every weight name starting ``old`` starting ``new``."""
    from safetensors.torch import load_file, save_file

    weights = load_file(path)
    save_file(
        {new + k.removeprefix(old) if k.startswith(old) else k: v for k, v in weights.items()}, path, {"format": "pt"}
    )


def build_vision_rm(folder: Path, seed: int = 0) -> Path:
    """A random tiny reward model that reads images: Gemma 3's config and processor from
    ``_gemma3`` with a one-label head (``Gemma3ForSequenceClassification``), saved to ``folder``."""
    import torch
    from transformers import Gemma3ForSequenceClassification

    image_tokens, named, builder = VLM_ARCHS["gemma3"]
    torch.manual_seed(seed)
    lm, processor = builder(_tokenizer(image_tokens, named), TEXT)
    lm.config.num_labels = 1
    model = Gemma3ForSequenceClassification(lm.config)
    # as ``_gemma3`` does: a zero projection would make every image look the same
    model.model.multi_modal_projector.mm_input_projection_weight.data.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def tiny_image(seed: int = 0, size: tuple[int, int] = (24, 20), fmt: str = "PNG") -> bytes:
    """The bytes of a small image of random colored pixels (``size`` = (width, height))."""
    from PIL import Image

    rng = random.Random(seed)
    img = Image.new("RGB", size)
    img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(size[0] * size[1])])
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


if __name__ == "__main__":  # python tests/tiny_vlm.py FOLDER [ARCH]: a tiny VLM to try winnow on
    import sys

    print(build_vlm(Path(sys.argv[1]), *sys.argv[2:3]))
