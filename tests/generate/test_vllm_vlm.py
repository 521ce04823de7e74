"""The vLLM backend on tiny vision-language models (Idefics3, LLaVA): greedy rows equal the
transformers backend's, images given to vLLM as ``multi_modal_data``.

Needs vLLM (``bash scripts/setup_vllm.sh``); run with
``.venv-vllm/bin/python -m pytest -m vllm tests/generate/test_vllm_vlm.py``.
"""

from __future__ import annotations

import importlib.util

import pytest
from tiny_vlm import build_vlm, tiny_image

from winnow import images
from winnow.generate import Sampling, make_backend
from winnow.records import Prompt

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed: bash scripts/setup_vllm.sh")

GREEDY = Sampling(n=2, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=8)

# vLLM's LLaVA module imports transformers' torchvision image processor of Pixtral when it
# loads (Gemma 3's module, Gemma 3's), and the CPU environment has no torchvision: PyPI's
# wheel is built for CUDA torch and fails against torch+cpu (`torchvision::nms does not
# exist`), so setup_vllm.sh removes it. Idefics3's module needs none. (With those imports
# stood in for by transformers' PIL image processors, the LLaVA case passes on the CPU build.)
NEEDS_TORCHVISION = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="vLLM's LLaVA module imports torchvision, which the vLLM CPU environment lacks",
)


@pytest.mark.parametrize("arch", ["idefics3", pytest.param("llava", marks=NEEDS_TORCHVISION)])
def test_greedy_rows_equal_the_transformers_backend(tmp_path, arch):
    # head size 64: what vLLM's CPU attention supports; the Hub's weight names: what vLLM loads
    folder = build_vlm(
        tmp_path / arch, arch, hub_names=True, hidden_size=128, intermediate_size=256, num_attention_heads=2
    )
    look = [{"type": "image"}, {"type": "text", "text": "describe this"}]
    prompts = [
        Prompt(
            id="img", messages=({"role": "user", "content": look},), images=(images.decode(tiny_image(0), name="t"),)
        ),
        Prompt(id="text", text="the quick brown fox"),
    ]
    hf = make_backend("hf", str(folder), device="cpu")
    vllm = make_backend(
        "vllm", str(folder), dtype="float32", engine={"gpu_memory_utilization": 0.1, "max_model_len": 256}
    )
    assert vllm.prompt_lengths(prompts) == hf.prompt_lengths(prompts)
    got, want = vllm.generate(prompts, GREEDY, seed=0), hf.generate(prompts, GREEDY, seed=0)
    assert [c.text.rstrip("\ufffd") for c in got] == [c.text.rstrip("\ufffd") for c in want]
