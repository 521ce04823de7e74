"""The transformers backend on vision-language models (``tiny_vlm``: Gemma 3, LLaVA, Idefics3):
greedy output equals ``model.generate()`` on the processor's inputs, prompt by prompt, and
sampling keeps the contract (the same seed gives the same rows; the image changes them)."""

from __future__ import annotations

import pytest
import torch
from tiny_vlm import VLM_ARCHS, build_vlm, tiny_image

from winnow import images
from winnow.generate.chat import vision_inputs
from winnow.generate.contract import Sampling
from winnow.generate.hf import HFBackend
from winnow.records import Prompt

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 6


def image(seed: int) -> images.Image:
    return images.decode(tiny_image(seed), name="test")


def vlm_prompts() -> list[Prompt]:
    """One image, two images around text, and a text-only chat: three lengths."""
    look = [{"type": "image"}, {"type": "text", "text": "describe this"}]
    two = [{"type": "text", "text": "compare"}, {"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]
    return [
        Prompt(id="one", messages=({"role": "user", "content": look},), images=(image(0),)),
        Prompt(id="two", messages=({"role": "user", "content": two},), images=(image(1), image(2))),
        Prompt(id="text", text="the quick brown fox"),
    ]


@pytest.fixture(scope="module", params=sorted(VLM_ARCHS))
def backend(request, tmp_path_factory) -> HFBackend:
    folder = build_vlm(tmp_path_factory.mktemp(request.param), request.param)
    return HFBackend(str(folder), device="cpu", batch_size=2)


def reference(backend: HFBackend, prompt: Prompt) -> list[int]:
    """Greedy tokens of ``model.generate()`` on the processor's batch of one, to the first EOS."""
    text = backend.processor.apply_chat_template(prompt.as_messages(), tokenize=False, add_generation_prompt=True)
    pil = [[i.pil() for i in prompt.images]] if prompt.images else None
    batch = backend.processor(text=[text], images=pil, add_special_tokens=False, return_tensors="pt")
    out = backend.lm.generate(**batch, max_new_tokens=STEPS, do_sample=False, eos_token_id=sorted(backend.eos_ids))
    row = out[0, batch["input_ids"].shape[1] :].tolist()
    return next((row[: k + 1] for k, t in enumerate(row) if t in backend.eos_ids), row)


def test_greedy_equals_generate(backend):
    prompts = vlm_prompts()
    greedy = Sampling(n=2, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=STEPS)
    rows = backend.generate(prompts, greedy, seed=0)
    assert [(c.prompt_id, c.sample_index) for c in rows] == [(p.id, j) for p in prompts for j in range(2)]
    for p in prompts:
        expected = backend.tokenizer.decode(reference(backend, p), skip_special_tokens=True)
        assert [c.text for c in rows if c.prompt_id == p.id] == [expected, expected]
    assert backend.fallback_reason == "a vision-language model's images reach it only through generate()"


def test_prompt_lengths_count_the_image_tokens(backend):
    one, _, text = vlm_prompts()
    bare = Prompt(id="bare", messages=({"role": "user", "content": [{"type": "text", "text": "describe this"}]},))
    extra = backend.prompt_lengths([one])[0] - backend.prompt_lengths([bare])[0]
    assert extra >= 4  # the marker grew into the image's tokens (4 or 16 by architecture)
    assert backend.context_length() == 512


def test_sampling_follows_the_seed_and_sees_the_image(backend):
    sampling = Sampling(n=3, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=STEPS)
    one = vlm_prompts()[0]
    first = backend.generate([one], sampling, seed=7)
    assert backend.generate([one], sampling, seed=7) == first
    other = Prompt(id="one", messages=one.messages, images=(image(5),))
    # the image reaches the logits (the sampled rows of so tiny a model may still agree)
    assert not torch.equal(last_logits(backend, one), last_logits(backend, other))


def last_logits(backend: HFBackend, prompt: Prompt) -> torch.Tensor:
    ids, more = vision_inputs(backend.processor, prompt)
    with torch.no_grad():
        return backend.lm(input_ids=torch.tensor([ids]), **more).logits[0, -1]


def test_text_spelling_the_image_token_is_refused_naming_the_prompt(tmp_path):
    from winnow.errors import WinnowError

    backend = HFBackend(str(build_vlm(tmp_path / "llava", "llava")), device="cpu")
    content = [{"type": "image"}, {"type": "text", "text": "is <image> a tag?"}]
    prompt = Prompt(id="tag", messages=({"role": "user", "content": content},), images=(image(0),))
    with pytest.raises(WinnowError) as e:
        backend.prompt_lengths([prompt])
    assert str(e.value).startswith("prompt 'tag': the model's processor refused it: The total number of <image> tokens")
