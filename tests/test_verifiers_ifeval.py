"""winnow.verifiers.ifeval: each IFEval family against outcomes worked out by hand."""

import json

import pytest

from winnow.errors import WinnowError
from winnow.verifiers.ifeval import CHECKERS, check_row, ifeval
from winnow.verifiers.text import count_sentences, count_words, word_tokens


def one(instruction_id, response, mode="strict", **kwargs):
    return check_row(response, [instruction_id], [kwargs], mode=mode)[0]


# (instruction id, kwargs, a response that follows it, one that does not)
CASES = [
    ("keywords:existence", {"keywords": ["apple", "pie"]}, "Apple and PIE.", "Apple only."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "cat cat", "one cat"),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "one cat", "cat, CAT"),
    ("keywords:forbidden_words", {"forbidden_words": ["red", "blue"]}, "A reddish sky.", "The Blue sea."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"}, "zZz", "zz"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "less than"}, "zz", "ZZZ"),
    ("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "Two words", "one two three"),
    ("length_constraints:number_words", {"num_words": 3, "relation": "at least"}, "it's fine", "fine."),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"}, "Dr. Who came.", "A. B? C!"),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "at least"},
        "One. Two! Three?",
        "Mr. X. Y.",
    ),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\nb", "a\n***\n\n***\nb"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 1}, "***\nonly one\n***", "a *** b"),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "Then"},
        "First.\n\n'Then, more.",
        "First.\n\nNow then.",
    ),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\np. s. bye", "Hi. PS bye"),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.P.S later", "Hi.\nP.S. later"),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [place]", "[name] at place"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two", "* one\n** bold\n- two\n- three"),
    ("detectable_format:constrained_response", {}, "Well. My answer is maybe.", "My answer is Yes."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and **b**", "*a* and * *"),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nx\nSection 2\ny",
        "Section 1 only",
    ),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    ("detectable_format:title", {}, "<<A Poem>>\nroses", "<< >> and <<broken\n>>"),
    ("combination:two_responses", {}, "Yes.\n******\nNo.", "Yes.\n******\nYes."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "say hi. Hi!", "Hi! Say hi."),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        '"Done. any other questions?"',
        "Any other questions? No.",
    ),
    ("startend:quotation", {}, '  "quoted"  ', '"open'),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": "at least"},
        "I DON'T know",
        "I Don't know",
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "WELL-KNOWN fact",
        "US and UK",
    ),
    (
        "change_case:english_capital",
        {},
        "THIS IS A SHORT ENGLISH SENTENCE ABOUT THE WEATHER.",
        "This is not all capitals.",
    ),
    (
        "change_case:english_lowercase",
        {},
        "this is a short english sentence about the weather.",
        "this is Not lower case.",
    ),
    ("punctuation:no_comma", {}, "No commas here.", "One, two."),
    (
        "language:response_language",
        {"language": "fr"},
        "Bonjour, je voudrais une tasse de café et un croissant, s'il vous plaît.",
        "Hello, I would like a cup of coffee and a croissant, please.",
    ),
]


@pytest.mark.parametrize(("instruction_id", "kwargs", "good", "bad"), CASES, ids=[c[0] for c in CASES])
def test_each_checker_strict(instruction_id, kwargs, good, bad):
    assert one(instruction_id, good, **kwargs) is True
    assert one(instruction_id, bad, **kwargs) is False


def test_every_registered_id_has_a_case():
    assert {c[0] for c in CASES} == set(CHECKERS)


def test_loose_variants_drop_first_last_lines_and_asterisks():
    # strict fails; loose passes once the first line ("Sure!") is dropped
    resp = 'Sure! Here it is:\n"All quoted"'
    assert one("startend:quotation", resp) is False
    assert one("startend:quotation", resp, mode="loose") is True
    # the last line carries the comma: loose drops it
    assert one("punctuation:no_comma", "No comma here\nbye, then", mode="loose") is True
    # asterisks removed: the bold end phrase ends the response only in loose mode
    resp = "Body.\n**Any other questions?**"
    assert one("startend:end_checker", resp, end_phrase="Any other questions?") is False
    assert one("startend:end_checker", resp, mode="loose", end_phrase="Any other questions?") is True
    # a comma in a middle line stays in every variant
    assert one("punctuation:no_comma", "a\nb, c\nd", mode="loose") is False


def test_reward_is_the_fraction_followed_and_counts_blank_completions():
    ids = [["punctuation:no_comma", "startend:quotation", "keywords:existence"]] * 3
    kwargs = [[{}, {}, {"keywords": ["tea"]}]] * 3
    s = ifeval(["p"] * 3, ['"tea, please"', '"tea please"', "  "], instruction_id_list=ids, kwargs=kwargs)
    assert s == [pytest.approx(2 / 3), 1.0, 0.0]
    assert s.no_answer == 1


def test_hf_style_kwargs_with_every_key_and_none_values():
    row = {"num_highlights": None, "relation": "at least", "num_words": 2, "keywords": None, "prompt_to_repeat": None}
    assert ifeval(["p"], ["hello"], instruction_id_list=[["length_constraints:number_words"]], kwargs=[[row]]) == [0.0]
    row["relation"] = "less than"
    assert ifeval(["p"], ["hello"], instruction_id_list=[["length_constraints:number_words"]], kwargs=[[row]]) == [1.0]


def test_row_without_instructions_is_unscored():
    assert ifeval(["p"], ["x"], instruction_id_list=[[]], kwargs=[[]]) == [None]


@pytest.mark.parametrize(
    ("ids", "kwargs", "message"),
    [
        (["detectable_format:rephrase"], [{}], "unknown instruction id 'detectable_format:rephrase'"),
        (["length_constraints:number_words"], [{"num_words": 5}], "needs the argument 'relation'"),
        (["punctuation:no_comma"], [{"num_words": 5}], "takes no argument 'num_words'"),
        (["keywords:frequency"], [{"keyword": "a", "frequency": 1, "relation": "at most"}], "relation must be one of"),
        (["punctuation:no_comma", "startend:quotation"], [{}], "2 ids but kwargs 1"),
    ],
)
def test_bad_rows_are_refused_by_name(ids, kwargs, message):
    with pytest.raises(WinnowError, match="row 0 of the batch") as e:
        ifeval(["p"], ["x"], instruction_id_list=[ids], kwargs=[kwargs])
    assert message in str(e.value)


def test_text_helpers():
    assert count_words("It's 3 o'clock, isn't it?") == 8  # \w+ splits at apostrophes, as nltk's RegexpTokenizer
    # punkt's English tables: "e.g." ends a sentence before a word seen starting sentences
    assert count_sentences("Wait... what? I said so. e.g. this one.") == 4
    assert count_sentences("No end punctuation\n\nstill one") == 1
    assert word_tokens("HE'S here.") == ["HE", "'S", "here", "."]


def test_an_ifeval_file_row_as_it_is():
    """IFEval's first row, as a JSON line of its file; a 300-word response without commas
    with three highlighted sections follows all three instructions, and loses one per fault."""
    line = (
        '{"key": 1000, "prompt": "Write a 300+ word summary of the wikipedia page ... Do not use any commas '
        'and highlight at least 3 sections that has titles in markdown format ...", '
        '"instruction_id_list": ["punctuation:no_comma", "detectable_format:number_highlighted_sections", '
        '"length_constraints:number_words"], '
        '"kwargs": [{}, {"num_highlights": 3}, {"relation": "at least", "num_words": 300}]}'
    )
    row = json.loads(line)
    words = " ".join(["word"] * 293)  # + 7 words around them = 300
    good = f"*Early life* {words} *Career path* and *Later years*."
    fewer = f"*Early life* {words[:-5]} *Career path* and *Later years*."  # 299 words
    comma = good.replace("Career path", "Career, path")
    plain = good.replace("*", "")
    s = ifeval(
        [row["prompt"]] * 4,
        [good, fewer, comma, plain],
        instruction_id_list=[row["instruction_id_list"]] * 4,
        kwargs=[row["kwargs"]] * 4,
    )
    assert s == [1.0, pytest.approx(2 / 3), pytest.approx(2 / 3), pytest.approx(2 / 3)]
