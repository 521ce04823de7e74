"""Process reward models: one score per step of a completion, in one forward pass.

A completion is cut into steps where ``score.prm_step_separator`` occurs (default a blank
line; blank steps are dropped) and a tag token is written after each step; the model reads
the whole row once, and step k's score is P(good) at the k-th tag, a float in [0, 1]. Two
shapes (``SHAPES``):

- ``math-shepherd`` (Wang et al., *Math-Shepherd*, 2024): a causal LM. The tag (``ки``)
  follows each step after a space, and the steps keep their separator between them; the
  score is the softmax over the logits of the two label tokens (``+``, ``-``) at the tag,
  the ``+`` share (the logits at the tag predict the label the tag stands for).
- ``token-class`` (Zhang et al., *The Lessons of Developing Process Reward Models*, 2025:
  Qwen2.5-Math-PRM): a two-class head on every token. The tag (``<extra_0>``) takes the
  separator's place and ends the last step; the score is softmax(logits)[1] at the tag. A
  ``*ForTokenClassification`` with two labels, or a ``Qwen2ForProcessRewardModel`` folder
  (Qwen2.5-Math-PRM's own: its head, Linear-ReLU-Linear, is built here, so no code from
  the model's folder runs).

The prompt and completion are rendered with the model's chat template when it has one (the
completion as the assistant turn), else as ``prompt + " " + steps`` (Math-Shepherd's
layout). A step's text loses any copy of the tag, and the completion comes last in the
row, so the last K tags of a row of K steps are its steps' tags.

A completion's reward is ``score.prm_aggregate`` of its step scores (``aggregate_steps``).
Batching is the reward model's full path (``winnow.rewards.classifier.plan_batches``): rows
tokenized once, sorted by length into batches under a token budget, right-padded with an
attention mask (a row's scores do not depend on its batch), order restored. A row longer
than the model's context, or with no step, is unscored (None).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from winnow.config.fields import PrmAggregate, PrmShape
from winnow.errors import WinnowError
from winnow.models import load_tokenizer, pick_device, resolve_dtype, resolve_model
from winnow.rewards.classifier import plan_batches
from winnow.rewards.prefix import right_pad


@dataclass(frozen=True)
class Shape:
    """How one kind of process reward model reads a completion's steps."""

    tag: str
    """The step tag written after each step (``score.prm_step_tag`` replaces it)."""
    before_tag: str
    """Text between a step and its tag."""
    keeps_separator: bool
    """Whether the steps keep their separator between them (else the tags alone divide them)."""


# How each shape of ``config.fields.PrmShape`` (but ``auto``) reads a row.
SHAPES: dict[str, Shape] = {
    "math-shepherd": Shape(tag="ки", before_tag=" ", keeps_separator=True),
    "token-class": Shape(tag="<extra_0>", before_tag="", keeps_separator=False),
}
LABELS = ("+", "-")
"""Math-Shepherd's good and bad label tokens (``score.prm_labels`` replaces them)."""

# A completion's reward from its step scores, keyed by the names of ``config.fields.PrmAggregate``.
AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "min": min,
    "last": lambda scores: scores[-1],
    "prod": math.prod,
    "mean": statistics.fmean,
}


def unescape(text: str) -> str:
    """A separator as typed on the command line: ``\\n`` and ``\\t`` are a newline and a tab,
    ``\\\\`` a backslash; every other character stays as it is.

    >>> unescape("\\\\n\\\\n"), unescape("Step"), unescape("a\\\\\\\\nb")
    ('\\n\\n', 'Step', 'a\\\\nb')
    """
    out, i = [], 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in ("\\n", "\\t", "\\\\"):
            out.append({"\\n": "\n", "\\t": "\t", "\\\\": "\\"}[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def split_steps(completion: str, separator: str) -> list[str]:
    """The steps of a completion: the text between separators, blank pieces dropped, each
    stripped of surrounding whitespace.

    >>> split_steps("Add 2 and 2.\\n\\nSo 4.\\n\\n\\n\\n", "\\n\\n")
    ['Add 2 and 2.', 'So 4.']
    >>> split_steps("  ", "\\n\\n")
    []
    """
    return [step.strip() for step in completion.split(separator) if step.strip()]


def render_steps(steps: list[str], *, shape: Shape, tag: str, separator: str) -> str:
    """The steps as the model reads them: each followed by its tag (a copy of the tag inside
    a step is removed first, so that the tags are exactly the steps').

    >>> render_steps(["a", "b ки"], shape=SHAPES["math-shepherd"], tag="ки", separator="\\n")
    'a ки\\nb ки'
    >>> render_steps(["a", "b"], shape=SHAPES["token-class"], tag="<extra_0>", separator="\\n\\n")
    'a<extra_0>b<extra_0>'
    """
    joiner = separator if shape.keeps_separator else ""
    return joiner.join(step.replace(tag, "").strip() + shape.before_tag + tag for step in steps)


def aggregate_steps(scores: list[float] | None, how: str) -> float | None:
    """A completion's reward from its step scores: ``min``, ``last``, ``prod`` or ``mean``
    (``AGGREGATES``); None (unscored) for a completion without steps or scores.

    >>> [aggregate_steps([0.9, 0.5, 0.8], how) for how in ("min", "last", "prod", "mean")]
    [0.5, 0.8, 0.36000000000000004, 0.7333333333333334]
    >>> aggregate_steps(None, "min"), aggregate_steps([], "min")
    (None, None)
    """
    if not scores:
        return None
    return float(AGGREGATES[how](scores))


def detect_shape(architectures: list[str], name: str) -> str:
    """The shape of a model from its config's ``architectures``.

    >>> detect_shape(["MistralForCausalLM"], "m"), detect_shape(["Qwen2ForProcessRewardModel"], "q")
    ('math-shepherd', 'token-class')
    """
    found = {
        "math-shepherd" if a.endswith("ForCausalLM") else "token-class"
        for a in architectures
        if a.endswith(("ForCausalLM", "ForTokenClassification", "ForProcessRewardModel"))
    }
    if len(found) != 1:
        raise WinnowError(
            f"process reward model {name}: cannot tell its shape from its architectures "
            f"({', '.join(architectures) or 'none'}); set --prm-shape ({', '.join(SHAPES)})"
        )
    return found.pop()


def one_token(tokenizer, text: str, *, after: str, what: str, name: str) -> int:
    """The id of ``text`` as the model sees it after ``after`` (a word, then a space for a
    Math-Shepherd tag); refused unless ``text`` is one token of the vocabulary there."""
    ids = tokenizer(f"x{after}{text}", add_special_tokens=False)["input_ids"]
    if not ids or tokenizer.decode(ids[-1:]).strip() != text.strip():
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
        raise WinnowError(
            f"process reward model {name}: {what} {text!r} is not one token of its vocabulary "
            f"(it tokenizes as {pieces})"
        )
    return int(ids[-1])


@dataclass(frozen=True)
class Reading:
    """What a process reward model reads at its tags: the shape, the tag's id and, for
    math-shepherd, the (good, bad) label ids."""

    shape: str
    tag: str
    tag_id: int
    labels: tuple[int, int] | None


def reading(folder: Path, tokenizer, *, shape: str, tag: str | None, labels, name: str) -> Reading:
    """The model's shape (``auto``: from its config) and the ids of its tag and labels;
    refuses a shape it cannot tell, a tag or label that is not one token, a head of the
    wrong size. Reads config.json and the tokenizer, never the weights."""
    config = json.loads((folder / "config.json").read_text())
    if shape == "auto":
        shape = detect_shape(config.get("architectures") or [], name)
    spec = SHAPES[shape]
    tag = tag or spec.tag
    tag_id = one_token(tokenizer, tag, after=spec.before_tag, what="step tag", name=name)
    if shape == "token-class":
        count = config.get("num_labels") or len(config.get("id2label") or {}) or 2
        if count != 2:
            raise WinnowError(f"process reward model {name}: a token-class head has {count} labels; expected 2")
        return Reading(shape, tag, tag_id, None)
    good, bad = labels or LABELS
    label_ids = tuple(one_token(tokenizer, t, after=" ", what="label", name=name) for t in (good, bad))
    return Reading(shape, tag, tag_id, (label_ids[0], label_ids[1]))


def check_prm(path: str, *, shape: str, tag: str | None, labels, system: str | None = None) -> str:
    """``winnow.plan``'s check of a process reward model before any work: the folder, its
    shape, its tag and labels (``reading``), a chat template where a ``system`` message is
    given. Returns the shape."""
    folder = resolve_model(path)
    tokenizer = load_tokenizer(folder)
    check_system(tokenizer, system, path)
    return reading(folder, tokenizer, shape=shape, tag=tag, labels=labels, name=path).shape


def check_system(tokenizer, system: str | None, name: str) -> None:
    """A system message needs a chat template to hold it: refused by name, never dropped."""
    if system is not None and not tokenizer.chat_template:
        raise WinnowError(
            f"process reward model {name} has no chat template to hold a system message (score.prm_system, --prm-system)"
        )


def with_system(prompt, system: str | None) -> list[dict]:
    """The chat messages a PRM reads for ``prompt`` (text: one user turn): ``system`` first in
    place of the prompt's own system messages, when given.

    >>> with_system([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}], "Reason.")
    [{'role': 'system', 'content': 'Reason.'}, {'role': 'user', 'content': '2+2?'}]
    >>> with_system("2+2?", None)
    [{'role': 'user', 'content': '2+2?'}]
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is None:
        return messages
    return [{"role": "system", "content": system}, *(m for m in messages if m["role"] != "system")]


class ProcessReward:
    """``ProcessReward(path)(prompts, completions) -> list[float | None]``: each completion's
    aggregated step score; ``step_rewards`` gives the step scores themselves, and after a call
    ``last_step_scores`` holds them (per row a list of K floats in [0, 1], None if unscored).

    batch_tokens, max_batch_size and max_padding shape the batches (``plan_batches``).
    """

    def __init__(
        self,
        path: str,
        *,
        shape: str = "auto",
        separator: str = "\n\n",
        step_tag: str | None = None,
        labels: list[str] | None = None,
        aggregate: str = "min",
        system: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int = 16384,
        max_batch_size: int = 64,
        max_padding: float = 0.02,
    ):
        if shape not in get_args(PrmShape) or aggregate not in get_args(PrmAggregate):
            raise WinnowError(f"process reward model {path}: unknown shape {shape!r} or aggregate {aggregate!r}")
        folder = resolve_model(path)
        self.name = path
        self.separator = unescape(separator)
        self.aggregate = aggregate
        self.device = pick_device(device)
        self.batch_tokens, self.max_batch_size, self.max_padding = batch_tokens, max_batch_size, max_padding
        self.tokenizer = load_tokenizer(folder)
        check_system(self.tokenizer, system, path)
        self.system = system
        self.reading = reading(folder, self.tokenizer, shape=shape, tag=step_tag, labels=labels, name=path)
        self.model = load_model(folder, self.reading.shape, resolve_dtype(dtype, self.device))
        self.model.to(self.device).eval()
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self.stats = {"real_tokens": 0, "padded_tokens": 0, "batches": 0}
        self.last_step_scores: list[list[float] | None] = []
        """After a call: each row's step scores (None: unscored)."""

    def __call__(self, prompts: list, completions: list[str], **kw) -> list[float | None]:
        self.last_step_scores = self.step_rewards(prompts, completions)
        return [aggregate_steps(s, self.aggregate) for s in self.last_step_scores]

    def step_rewards(self, prompts: list, completions: list[str]) -> list[list[float] | None]:
        """Each completion's step scores: per row a list of K floats in [0, 1] for its K steps,
        None for a row with no step, one longer than the model's context or whose tags the
        tokenizer did not keep whole. One forward pass per row, rows batched by length."""
        rows = self.tokenize(prompts, completions)
        out: list[list[float] | None] = [None] * len(rows)
        live = {i: r for i, r in enumerate(rows) if r is not None and len(r[0]) <= (self.max_length or len(r[0]))}
        keys = list(live)
        lengths = [len(live[i][0]) for i in keys]
        for batch in plan_batches(lengths, self.batch_tokens, self.max_batch_size, self.max_padding):
            picked = [keys[j] for j in batch]
            for i, scores in zip(picked, self._score([live[i] for i in picked]), strict=True):
                out[i] = scores
        return out

    def tokenize(self, prompts: list, completions: list[str]) -> list[tuple[list[int], list[int]] | None]:
        """Each row's token ids and the positions of its steps' tags (the last K tags of the
        row); None for a completion without steps or a row whose tags did not survive."""
        out: list[tuple[list[int], list[int]] | None] = []
        spec = SHAPES[self.reading.shape]
        for prompt, completion in zip(prompts, completions, strict=True):
            steps = split_steps(completion, self.separator)
            if not steps:
                out.append(None)
                continue
            body = render_steps(steps, shape=spec, tag=self.reading.tag, separator=self.separator)
            ids = self._render(prompt, body)
            tags = [j for j, t in enumerate(ids) if t == self.reading.tag_id][-len(steps) :]
            out.append((ids, tags) if len(tags) == len(steps) else None)
        return out

    def _render(self, prompt, body: str) -> list[int]:
        tok = self.tokenizer
        if tok.chat_template:
            messages = with_system(prompt, self.system)
            text = tok.apply_chat_template(messages + [{"role": "assistant", "content": body}], tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]  # the template wrote BOS
        if not isinstance(prompt, str):
            raise WinnowError(f"process reward model {self.name} has no chat template for chat-message prompts")
        return tok(f"{prompt} {body}", add_special_tokens=True)["input_ids"]

    def _score(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Step scores of whole rows, one forward pass for the batch; on CUDA out-of-memory the
        batch is halved and each half tried again."""
        try:
            return self._forward(rows)
        except torch.OutOfMemoryError:
            if len(rows) == 1:
                raise
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            half = len(rows) // 2
            return self._score(rows[:half]) + self._score(rows[half:])

    @torch.inference_mode()
    def _forward(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        ids, mask = right_pad([r for r, _ in rows], self.tokenizer.pad_token_id, self.device)
        self.stats["batches"] += 1
        self.stats["real_tokens"] += int(mask.sum())
        self.stats["padded_tokens"] += int(mask.numel() - mask.sum())
        which = torch.tensor([k for k, (_, tags) in enumerate(rows) for _ in tags], device=ids.device)
        where = torch.tensor([t for _, tags in rows for t in tags], device=ids.device)
        if self.reading.labels is None:  # token-class: the head's two classes at each tag
            logits = self.model(input_ids=ids, attention_mask=mask).logits[which, where]  # (S, 2)
            good = logits.float().softmax(dim=-1)[:, 1]
        else:  # math-shepherd: the LM head only at the tags, over the two labels
            base = getattr(self.model, self.model.base_model_prefix)
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state[which, where]  # (S, hidden)
            logits = self.model.get_output_embeddings()(hidden)[:, list(self.reading.labels)].float()  # (S, 2)
            cap = getattr(self.model.config, "final_logit_softcapping", None)
            if cap:  # Gemma 2 caps its logits before any softmax
                logits = torch.tanh(logits / cap) * cap
            good = logits.softmax(dim=-1)[:, 0]
        flat = good.cpu().numpy().astype(np.float64).tolist()
        out, at = [], 0
        for _, tags in rows:
            out.append(flat[at : at + len(tags)])
            at += len(tags)
        return out

    def summary(self) -> dict:
        """What this object's calls did: batches, real and padded tokens."""
        return {"shape": self.reading.shape, **self.stats}


def load_model(folder: Path, shape: str, dtype):
    """The model of a shape: a causal LM (math-shepherd) or a two-class token head."""
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    if shape == "math-shepherd":
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    if any(a.endswith("ForProcessRewardModel") for a in architectures):
        return load_process_reward_head(folder, dtype)
    return AutoModelForTokenClassification.from_pretrained(folder, dtype=dtype, num_labels=2)


def load_process_reward_head(folder: Path, dtype):
    """A ``*ForProcessRewardModel`` folder (Qwen2.5-Math-PRM) as a token classifier: the base
    model of its type, and its head ``score``, Linear(h, h) - ReLU - Linear(h, 2), built
    here, the weights read from its safetensors files (no code from the folder runs; an
    ``lm_head`` left in them is not read)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(folder, num_labels=2)
    model = AutoModelForTokenClassification.from_config(config, dtype=dtype)
    h = config.hidden_size
    model.score = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2)).to(dtype)
    state: dict = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    # a PRM checkpoint may still hold the LM head it was trained from; nothing reads it (vLLM skips it too)
    state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise WinnowError(
            f"process reward model {folder}: its weights are not a base model and a score head: {first}"
        ) from None
    return model
