"""MkDocs hook: the reference pages' generated parts, made from the code at build time.

A page holds a marker where a generated part goes, so the part cannot drift from the code:

- ``<!-- winnow:cli -->``: every subcommand's usage and options, from ``winnow.cli_options.parser()``;
- ``<!-- winnow:config -->``: every YAML section and field, from the config dataclasses
  (type, default, the field's docstring, the choices from ``settings.CHOICES``);
- ``<!-- winnow:config SECTION -->``: one section's table;
- ``<!-- winnow:schema MODEL -->``: the fields of a request or response body of
  ``winnow serve``, from its pydantic model in ``winnow.serve.schema``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

MARKER = re.compile(r"<!-- winnow:(cli|config|schema)(?: (\w+))? -->")


def on_page_markdown(markdown: str, **kwargs) -> str:
    return MARKER.sub(_generated, markdown)


def on_config(config, **kwargs):
    """Docstrings' doctests (``>>>`` lines) as Python code blocks: Markdown alone reads them
    as a blockquote three deep. mkdocstrings renders docstrings with these same extensions."""
    config.markdown_extensions.append(DoctestBlocks())
    return config


DOCTEST = re.compile(r"^(\s*)>>> ")
FENCE = re.compile(r"^\s*(```|~~~)")


def fence_doctests(lines: list[str]) -> list[str]:
    """Wrap each run of doctest lines (a ``>>>`` line up to the next blank line) in a
    ``pycon`` fence; lines inside fences already are left as they are.

    >>> fence_doctests(["text", "", ">>> 1 + 1", "2", "", "more"])
    ['text', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'more']
    """
    out: list[str] = []
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            fenced = not fenced
        match = None if fenced else DOCTEST.match(line)
        if match is None:
            out.append(line)
            i += 1
            continue
        indent = match.group(1)
        end = i
        while end < len(lines) and lines[end].strip():
            end += 1
        out += [f"{indent}```pycon", *lines[i:end], f"{indent}```"]
        i = end
    return out


def _doctest_extension():
    from markdown.extensions import Extension
    from markdown.preprocessors import Preprocessor

    class Fence(Preprocessor):
        def run(self, lines: list[str]) -> list[str]:
            return fence_doctests(lines)

    class Doctests(Extension):
        def extendMarkdown(self, md):
            # after whitespace is normalised (30), before fenced code blocks are read (25)
            md.preprocessors.register(Fence(md), "winnow_doctests", 27)

    return Doctests


def DoctestBlocks():
    return _doctest_extension()()


def _generated(match: re.Match) -> str:
    kind, name = match.group(1), match.group(2)
    if kind == "cli":
        return cli_reference()
    if kind == "config":
        return config_reference(name)
    return schema_reference(name)


def schema_reference(name: str) -> str:
    """A pydantic body's fields: name, type, default (required when none) and bounds."""
    from winnow.serve import schema

    model = getattr(schema, name)
    out = ["| field | type | default | bounds |", "|---|---|---|---|"]
    for field, info in model.model_fields.items():
        ann = info.annotation
        kind = ann.__name__ if isinstance(ann, type) else str(ann)
        kind = kind.replace("typing.", "").replace("winnow.serve.schema.", "").replace(" | ", " or ")
        default = "required" if info.is_required() else f"`{info.default!r}`"
        bounds = ", ".join(
            f"{k} {getattr(m, k)}"
            for m in info.metadata
            for k in ("ge", "gt", "le", "lt", "min_length")
            if hasattr(m, k)
        )
        out.append(f"| `{field}` | `{kind}` | {default} | {bounds} |")
    return "\n".join(out) + "\n"


def cli_reference() -> str:
    from winnow.cli_options import parser

    top = parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for name, command in sub.choices.items():
        out += [f"## winnow {name}", "", command.description or "", ""]
        out += ["```text", command.format_usage().strip(), "```", ""]
        expand = command._get_formatter()._expand_help  # argparse's own %-expansion of help
        rows = [(", ".join(a.option_strings) or a.dest, _cell(expand(a))) for a in command._actions if a.help]
        out += ["| option | meaning |", "|---|---|", *[f"| `{o}` | {h} |" for o, h in rows], ""]
    return "\n".join(out)


def config_reference(only: str | None = None) -> str:
    from winnow.config import SECTIONS
    from winnow.config.fields import hints
    from winnow.settings import CHOICES, field_docs, type_name

    out = []
    for section, cls in SECTIONS.items():
        if only and section != only:
            continue
        if not only:
            doc = cls.__doc__ or ""
            out += [f"## `{section}`", "", "" if doc.startswith(f"{cls.__name__}(") else _cell(doc), ""]
        docs = field_docs(cls)
        out += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            text = docs.get(f.name, "")
            if (section, f.name) in CHOICES:
                text += " Choices: " + ", ".join(f"`{c}`" for c in CHOICES[section, f.name]) + "."
            kind = type_name(hints(cls)[f.name]).replace(" | ", " or ")
            out.append(f"| `{f.name}` | `{kind}` | `{default!r}` | {_cell(text)} |")
        out.append("")
    return "\n".join(out)


def _cell(text: str | None) -> str:
    """One table cell: one line, pipes and angle brackets escaped."""
    return " ".join(str(text or "").split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
