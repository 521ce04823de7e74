"""A judge model as a reward: ask an OpenAI-compatible server to grade each completion.

Each (prompt, completion) is put into a rubric template (``{prompt}`` and ``{completion}``
are replaced; the shipped default asks for "Score: N" from 1 to 10), sent as one user
turn at temperature 0, and the number in the answer is the reward. A prompt's images go
before the rubric's text as ``image_url`` parts: the judge is then a vision-language model. An answer without a
number in the rubric's range leaves the row unscored (None, NaN in the matrix), and is
counted in ``stats["unparseable"]`` and, like every unscored row, in the score summary.
Requests go through the ``openai`` backend's client, retry policy and concurrency bound
(``winnow.remote``), with their own settings (``judge_request_timeout``, ``judge_max_retries``,
``judge_concurrency``), and every reply is checked as the backend checks its replies
(``winnow.replies``): an HTML page, a missing ``message`` or a ``content`` that is not a
string is an invalid reply, retried, then one line naming the prompt. With
``judge_max_requests_per_minute`` / ``judge_max_tokens_per_minute`` every request waits for
its start under those limits (``winnow.budget.Pacer``), and each score row keeps what its
request used (``judge_usage``), which the score manifest sums and prices.

``ask`` is how every judge of winnow sends its prompts (this reward, the rule verifiers'
fallback judge in ``winnow.rewards.fallback``, the judge that picks in
``winnow.rewards.pick``), and ``load_template`` / ``fill`` how each reads and fills its
prompt template.
"""

from __future__ import annotations

import re
from pathlib import Path

from winnow import remote
from winnow.budget import Pacer, estimate_tokens
from winnow.errors import WinnowError
from winnow.replies import parse_choices, reply_limit, usage_of

SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
BARE_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\.?\s*$")
DATA = Path(__file__).parent.parent / "data"
"""The shipped prompt templates of the judges."""


def default_rubric() -> str:
    return (Path(__file__).parent.parent / "data" / "judge_rubric.txt").read_text(encoding="utf-8")


def rubric_identity(rubric: str | None) -> str:
    """A short hash of the rubric template in use, for the score stage's provenance."""
    import hashlib

    text = Path(rubric).read_text(encoding="utf-8") if rubric and Path(rubric).is_file() else default_rubric()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse_score(answer: str, low: float = 1, high: float = 10) -> float | None:
    """The judge's number: after "Score", or the whole answer; None when absent or out of range.

    >>> parse_score("Score: 7"), parse_score(" 8 "), parse_score("Score: 11"), parse_score("great answer")
    (7.0, 8.0, None, None)
    """
    match = SCORE.search(answer) or BARE_NUMBER.match(answer)
    if match is None:
        return None
    value = float(match.group(1))
    return value if low <= value <= high else None


def load_template(path: str | None, default: str, slots: tuple[str, ...], field: str) -> str:
    """A judge's prompt template: the file at ``path``, else the shipped ``default`` (a file
    of ``winnow/data/``); raises WinnowError naming ``field`` when the file is missing or
    lacks one of ``slots`` (``{question}``, ...)."""
    if path is not None and not Path(path).is_file():
        raise WinnowError(f"{field}: file does not exist: {path}")
    text = Path(path).read_text(encoding="utf-8") if path else (DATA / default).read_text(encoding="utf-8")
    for slot in slots:
        if "{" + slot + "}" not in text:
            raise WinnowError(f"{field}: template {path or default} has no {{{slot}}}")
    return text


def fill(template: str, values: dict[str, str]) -> str:
    """Each ``{name}`` of ``values`` replaced in one pass, so a completion that holds
    ``{reference}`` (or any braces) is sent as it is.

    >>> fill("Q: {question} A: {answer}", {"question": "{answer}?", "answer": "4"})
    'Q: {answer}? A: 4'
    """
    pattern = re.compile("|".join(re.escape("{" + name + "}") for name in values))
    return pattern.sub(lambda m: values[m.group(0)[1:-1]], template)


def template_identity(path: str | None, default: str) -> str:
    """A short hash of the template in use (the file, else the shipped default), for provenance."""
    import hashlib

    text = Path(path).read_text(encoding="utf-8") if path and Path(path).is_file() else (DATA / default).read_text()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def render_prompt(prompt) -> str:
    """A text prompt as it is; chat messages as 'role: content' lines, an image part as
    ``[image]`` (the judge sees the images themselves as parts of its request; not a model's own
    image token, which its processor would take for one more image).

    >>> render_prompt([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}])
    'user: [image]what is it?'
    """
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {_text_of(m['content'])}" for m in prompt)


def _text_of(content: str | list[dict]) -> str:
    if isinstance(content, str):
        return content
    return "".join("[image]" if part["type"] == "image" else part["text"] for part in content)


def judge_content(text: str, images: list) -> str | list[dict]:
    """The judge's user turn: the rubric's text, after the prompt's images (PIL images, sent
    as PNG ``data:`` URL parts, as a vision-language judge takes them) when it has any."""
    if not images:
        return text
    parts: list[dict] = [{"type": "image_url", "image_url": {"url": _png_url(image)}} for image in images]
    return [*parts, {"type": "text", "text": text}]


def _png_url(image) -> str:
    import base64
    import io

    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


class JudgeReward:
    """``JudgeReward(client, model=...)(prompts, completions) -> list[float | None]``."""

    def __init__(
        self,
        client: remote.ClientSettings,
        *,
        model: str,
        rubric: str | None = None,
        max_tokens: int = 16,
        low: float = 1,
        high: float = 10,
    ):
        if rubric is not None and not Path(rubric).is_file():
            raise WinnowError(f"score.judge_rubric: file does not exist: {rubric}")
        self.template = Path(rubric).read_text(encoding="utf-8") if rubric else default_rubric()
        for slot in ("{prompt}", "{completion}"):
            if slot not in self.template:
                raise WinnowError(f"score.judge_rubric: template {rubric} has no {slot}")
        self.client, self.model, self.max_tokens, self.low, self.high = client, model, max_tokens, low, high
        self.stats = {"asked": 0, "unparseable": 0}
        self.last_replies: list[str] = []
        """The judge's raw replies of the last call, row for row (kept with each score row)."""
        self.last_usage: list[dict] = []
        """What each request of the last call used, row for row (``winnow.replies.usage_of``)."""
        self.pacer = client.pacer()
        """The per-minute limits, shared by every request of this judge (all its calls)."""

    def render(self, prompt, completion: str) -> str:
        # replace, not str.format: prompts and completions may hold braces
        return self.template.replace("{prompt}", render_prompt(prompt)).replace("{completion}", completion)

    def __call__(self, prompts: list, completions: list[str], **kw) -> list[float | None]:
        ids = kw.get("prompt_ids") or [f"row {i}" for i in range(len(completions))]
        images = kw.get("images") or [[] for _ in completions]  # a vision-language run's, per row
        texts = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        replies = ask(
            self.client,
            model=self.model,
            texts=texts,
            ids=ids,
            max_tokens=self.max_tokens,
            images=images,
            pacer=self.pacer,
        )
        answers = [text for text, _ in replies]
        self.last_replies = answers
        self.last_usage = [usage for _, usage in replies]
        scores = [parse_score(a, self.low, self.high) for a in answers]
        self.stats["asked"] += len(scores)
        self.stats["unparseable"] += sum(s is None for s in scores)
        return scores


async def ask_async(
    client: remote.ClientSettings,
    *,
    model: str,
    texts: list[str],
    ids: list,
    max_tokens: int,
    images: list | None = None,
    pacer: Pacer | None = None,
) -> list[tuple[str, dict]]:
    """The judge's reply to each text and what its request used (``winnow.replies.usage_of``),
    each text sent as one user turn (after its row's images, when ``images`` gives them) at
    temperature 0, seed 0, under ``pacer``'s per-minute limits (default: the client's own).
    Returns [(reply, usage)], len = texts, in their order; ``ids[i]`` names text i's prompt
    in an error. Every judge (the reward, the rule's fallback, the one that picks) asks
    through here or ``ask``, its blocking twin, so all send, pace, retry and check alike."""
    import openai

    if not texts:  # nothing to ask: no client made
        return []
    pacer = pacer or client.pacer()
    api = remote.make_client(client)

    async def request(messages: list[dict], estimate: int) -> tuple[str, dict]:
        body = await remote.create(
            api,
            chat=True,
            limit=reply_limit(1, max_tokens),
            model=model,
            messages=messages,
            temperature=0.0,
            max_tokens=max_tokens,
            seed=0,
        )
        choices = parse_choices(body, chat=True, max_tokens=max_tokens)
        if len(choices) != 1:
            raise remote.InvalidReply(f"{len(choices)} choices for n=1")
        usage = usage_of(body, choices)
        used = None if usage["prompt_tokens"] is None else usage["prompt_tokens"] + usage["completion_tokens"]
        pacer.settle(estimate, used)
        return choices[0].text, usage

    def job(text: str, pid, seen: list):
        async def one() -> tuple[str, dict]:
            what = f"judge on prompt {pid!r}"
            messages = [{"role": "user", "content": judge_content(text, seen)}]
            estimate = estimate_tokens(len(text), max_tokens)  # the text's: images are not counted
            try:
                return await remote.call(client, what, lambda: request(messages, estimate), pacer, estimate)
            except openai.APIStatusError as e:
                raise WinnowError(f"{what}: server {client.base_url} answered {remote.describe(e)}") from None

        return one

    shown = images or [[] for _ in texts]
    try:
        jobs = [job(t, i, seen) for t, i, seen in zip(texts, ids, shown, strict=True)]
        return await remote.gather_bounded(client.concurrency, jobs)
    finally:
        await api.close()


ask = remote.blocking(ask_async)
"""``ask_async`` run to the end outside an event loop (the score stage's judges)."""
