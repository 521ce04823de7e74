"""One source for every option: CLI help is the config field's docstring, choices come from
the tables ``validate`` checks against, and config.py and the executors import no cycle."""

from __future__ import annotations

import subprocess
import sys

import pytest

from winnow.cli_options import NOT_IN, ONLY_IN, OPTIONS, STAGES_OF, Option, parser
from winnow.config import SECTIONS
from winnow.errors import WinnowError
from winnow.serve.reward import REFUSED as SERVE_REFUSED
from winnow.settings import CHOICES, build, field_docs

# What a choice needs besides itself to pass validation.
NEEDS = {
    ("generate", "backend", "openai"): {"base_url": "http://127.0.0.1:1/v1"},
    ("serve", "backend", "openai"): {"base_url": "http://127.0.0.1:1/v1"},
    ("select", "strategy", "top_k_overall"): {"k": 1},
    ("select", "strategy", "top_k_per_prompt"): {"k": 1},
    ("select", "strategy", "random_k_overall"): {"k": 1},
    ("select", "strategy", "threshold"): {"threshold": 0.5},
    ("select", "strategy", "rso"): {"beta": 0.1},
    ("select", "pairs", "rso"): {"beta": 0.1},
    ("export", "stage", "sft"): {"model_card": True},
    ("export", "stage", "dpo"): {"model_card": True},
    ("score", "fallback_on", "fail"): {"fallback_judge": "http://127.0.0.1:1/v1", "judge_model": "j"},
    ("pick", "select_by", "judge"): {"judge": "http://127.0.0.1:1/v1", "judge_model": "j"},
}


def help_of(command: str, flag: str) -> str:
    sub = parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    action = next(a for a in sub._actions if flag in a.option_strings)
    return " ".join(str(action.help).split())


def test_every_option_is_a_documented_field():
    for rows in OPTIONS.values():
        for flag, section, field, *_ in rows:
            assert field_docs(SECTIONS[section]).get(field), f"{flag}: {section}.{field} has no docstring"


@pytest.mark.parametrize(("command", "section"), [(c, s) for c in ("generate", "serve", "run") for s in OPTIONS])
def test_help_is_the_docstring_with_its_choices(command, section):
    for flag, row_section, field, *_ in OPTIONS[section]:
        if (
            row_section != section
            or section
            not in {
                "generate": ["generate", "executor"],
                "serve": ["serve", "score"],
                "run": ["generate", "score", "select", "sft", "rounds", "executor"],
            }[command]
        ):
            continue
        if command == "serve" and section == "score" and field in SERVE_REFUSED:
            assert help_of(command, flag) == "==SUPPRESS=="  # taken only to be refused, so not listed
            continue
        shown = help_of(command, flag)
        assert shown.startswith(field_docs(SECTIONS[section])[field].replace("%", "%%")[:40])
        if (section, field) in CHOICES:
            assert f"Choices: {' | '.join(CHOICES[section, field])}." in shown


def test_an_option_row_holds_no_help_of_its_own():
    # (flag, section, field) and at most a metavar or nargs: help, type and default are the field's
    assert Option._fields == ("flag", "section", "field", "metavar", "nargs")
    for rows in OPTIONS.values():
        for row in rows:
            assert row.metavar is None or row.metavar.replace(",", "").isupper(), row
            assert row.nargs in (None, "+"), row


def test_every_flag_shows_exactly_its_field_docstring_then_choices_and_default():
    for command, sections in STAGES_OF.items():
        for section in sections:
            for flag, _, field, *_ in OPTIONS[section]:
                if command == "serve" and section == "score" and field in SERVE_REFUSED:
                    continue
                taken = ONLY_IN.get((section, field), command) == command and command not in NOT_IN.get(
                    (section, field), ()
                )
                if not taken:  # another command's flag: not listed
                    with pytest.raises(StopIteration):
                        help_of(command, flag)
                    continue
                doc = field_docs(SECTIONS[section])[field]
                extra = help_of(command, flag).replace("%%", "%").removeprefix(doc)
                assert extra != help_of(command, flag), f"winnow {command} {flag}: help is not its field's docstring"
                assert extra == "" or extra.startswith((" Choices:", " Shipped", " Repeat", " (default:")), (
                    flag,
                    extra,
                )


def test_the_flag_kind_comes_from_the_annotation():
    by_flag = {a.option_strings[0]: a for a in parser()._subparsers._group_actions[0].choices["run"]._actions}  # type: ignore[union-attr]
    assert (by_flag["--n"].type, by_flag["--n"].metavar) == (int, "N")
    assert (by_flag["--temperature"].type, by_flag["--temperature"].metavar) == (float, "FLOAT")
    assert by_flag["--dedup"].nargs == 0 and by_flag["--dedup"].default is None
    assert type(by_flag["--stop"]).__name__ == "_AppendAction" and by_flag["--stop"].metavar == "TEXT"
    assert by_flag["--reasoning-tags"].nargs == "+" and by_flag["--reasoning-tags"].metavar == "TAG"
    assert by_flag["--reward-weights"].type("1,-0.5") == [1.0, -0.5]
    assert by_flag["--api-key-env"].metavar == "VAR" and by_flag["--base-url"].metavar == "URL"
    assert "(default: 1.0)" in " ".join(str(by_flag["--temperature"].help).split())


def test_device_help_names_mps_and_serve_backend_names_vllm():
    assert "mps" in help_of("generate", "--device") and "mps" in help_of("serve", "--device")
    assert "Choices: hf | openai | vllm." in help_of("serve", "--backend")


@pytest.mark.parametrize(("section", "field"), sorted(CHOICES))
def test_each_choice_shown_is_accepted_and_others_are_not(section, field):
    for choice in CHOICES[section, field]:
        value = "cuda:1" if choice == "cuda:N" else choice
        build(SECTIONS[section], {field: value, **NEEDS.get((section, field, choice), {})})
    with pytest.raises(WinnowError, match=f"{section}.{field}"):
        build(SECTIONS[section], {field: "no-such-choice"})


def test_config_and_executors_import_no_cycle():
    # config sits below the executors (it holds the list of executors); they may import it, never the reverse
    code = "import sys, winnow.config; print('winnow.executors' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
