"""The tiny vision-language models of ``tiny_vlm``: each folder loads through the Auto classes,
its chat template places the image, and the image changes what the model computes."""

from __future__ import annotations

import io

import pytest
import torch
from tiny_vlm import VLM_ARCHS, build_vlm, tiny_image

pytestmark = pytest.mark.usefixtures("one_thread")

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe this"}]}]


@pytest.mark.parametrize("arch", sorted(VLM_ARCHS))
def test_loads_and_generates(tmp_path, arch):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = build_vlm(tmp_path / arch, arch)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    assert model.config.model_type == arch
    text = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)

    def inputs(seed):
        return processor(text=[text], images=[[Image.open(io.BytesIO(tiny_image(seed)))]], return_tensors="pt")

    out = model.generate(**inputs(0), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs(0)["input_ids"].shape[1] + 4)
    with torch.no_grad():
        a, b = model(**inputs(0)).logits[0, -1], model(**inputs(1)).logits[0, -1]
    assert not torch.equal(a, b)  # the pixels reach the text model
