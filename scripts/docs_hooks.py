"""MkDocs hook: the reference pages' generated parts, made from the code at build time.

A page holds a marker where a generated part goes, so the part cannot drift from the code:

- ``<!-- winnow:cli -->``: every subcommand's usage and options, from ``winnow.cli_options.parser()``;
- ``<!-- winnow:config -->``: every YAML section and field, from the config dataclasses
  (type, default, the field's docstring, the choices from ``settings.CHOICES``);
- ``<!-- winnow:config SECTION -->``: one section's table;
- ``<!-- winnow:schema MODEL -->``: the fields of a request or response body of
  ``winnow serve``, from its pydantic model in ``winnow.serve.schema``;
- ``<!-- winnow:figures TABLE -->``: a table of the demos' recorded figures, one column per CPU
  capability, from ``figures/`` (``winnow.figures``; ``TABLES`` names them).

README.md, which is read raw, holds each figures table between its marker and
``<!-- winnow:end -->``; ``fill_blocks`` rewrites them (``scripts/record_figures.py readme``)
and a test checks that the README's are the ones the records give.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

MARKER = re.compile(r"<!-- winnow:(cli|config|schema|figures)(?: ([\w-]+))? -->")
BLOCK = re.compile(r"(<!-- winnow:figures ([\w-]+) -->\n)(.*?)(<!-- winnow:end -->)", re.DOTALL)


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
    if kind == "figures":
        return figures_table(name)
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


def fill_blocks(text: str) -> str:
    """Each ``<!-- winnow:figures TABLE -->`` ... ``<!-- winnow:end -->`` block of a raw page
    (README.md) filled with the table the records give now."""
    return BLOCK.sub(lambda m: m.group(1) + figures_table(m.group(2)) + m.group(4), text)


def _value(key: str, digits: int = 3):
    return lambda f: f"{f[key]:.{digits}f}" if isinstance(f[key], float) else f"{f[key]:,}"


def _gain(key: str):
    return lambda f: f"{f[key]:+.3f} [{f[key + ' ci95 low']:+.3f}, {f[key + ' ci95 high']:+.3f}]"


def _pair(first: str, second: str, sep: str, digits: int = 3):
    return lambda f: f"{_value(first, digits)(f)}{sep}{_value(second, digits)(f)}"


def _rows_of(demo: str, *rows: tuple[str, object]) -> list[tuple[str, str, object]]:
    """A table's rows whose figures one demo's records hold: each (label, cell) as (label, demo, cell)."""
    return [(label, demo, cell) for label, cell in rows]


FAMILIES = {
    "keywords:existence": "include a word",
    "keywords:forbidden_words": "forbidden words",
    "detectable_format:title": "`<<title>>`",
    "length_constraints:number_words": "fewer than N words",
    "detectable_content:postscript": "P.S.",
    "punctuation:no_comma": "no commas",
    "startend:quotation": "quotation marks",
}
"""The constraints demo's instruction families, as the tables name them."""

TABLES: dict[str, tuple[str, list[tuple[str, str, object]]]] = {
    "demo": (
        "mean reward, 32 held-out prompts x 8 samples",
        [
            ("starting SmolLM2-135M-Instruct", "demo", _value("mean_reward start")),
            ("round 1: fine-tuned on its best-of-8", "demo", _value("mean_reward round 1")),
            (
                "round 2 (`winnow demo --rounds 2`): best of 16 over both rounds",
                "demo-rounds-2",
                _value("mean_reward round 2"),
            ),
            ("round 1 over start (paired bootstrap 95% CI)", "demo", _gain("gain round 1 over start")),
            ("round 2 over round 1", "demo-rounds-2", _gain("gain round 2 over round 1")),
            ("round 2 over start", "demo-rounds-2", _gain("gain round 2 over start")),
            (
                "training prompts, one sample / best of 8",
                "demo",
                _pair("train_mean_reward", "train_mean_best_reward", " / "),
            ),
        ],
    ),
    "constraints": (
        "`winnow demo --task constraints`",
        _rows_of(
            "demo-constraints",
            ("held-out strict pass@1, start (42 prompts x 4 samples)", _value("pass_at_1 start")),
            ("held-out strict pass@1, fine-tuned", _value("pass_at_1 fine-tuned")),
            ("gain (paired bootstrap 95% CI)", _gain("gain")),
            ("training samples, adaptive / fixed N = 8", _pair("train samples", "train fixed_samples", " / ")),
            ("training prompts with a passing completion", _pair("train prompts_with_a_pass", "train prompts", " of ")),
            ("passing completions fine-tuned on", _value("train selected")),
            ("pass@1 / pass@2 over the first step's samples", _pair("train pass@1", "train pass@2", " / ")),
        ),
    ),
    "constraints-families": (
        "held-out strict pass@1 by family: start / fine-tuned",
        _rows_of(
            "demo-constraints",
            *(
                (label, _pair(f"pass_at_1 start {iid}", f"pass_at_1 fine-tuned {iid}", " / ", 2))
                for iid, label in FAMILIES.items()
            ),
        ),
    ),
}
"""Each figures table: its corner cell and its rows (label, demo whose records hold it, cell from figures)."""


def figures_table(name: str) -> str:
    """One table of recorded figures: a row per figure, a column per CPU capability (run records
    first), then where each column's figures come from. A figure a record lacks reads "-"."""
    from winnow.figures import records

    corner, rows = TABLES[name]
    demos = list(dict.fromkeys(demo for _, demo, _ in rows))
    found = {demo: records(demo) for demo in demos}
    caps = sorted({c for recs in found.values() for c in recs}, key=lambda c: (_copied(found, c), c))
    out = [f"| {corner} | " + " | ".join(caps) + " |", "|---|" + "---|" * len(caps)]
    for label, demo, cell in rows:
        cells = []
        for cap in caps:
            rec = found[demo].get(cap)
            try:
                cells.append(cell(rec["figures"]) if rec else "-")  # type: ignore[operator]
            except KeyError:
                cells.append("-")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    for demo in demos:
        cells = [_source(found[demo][cap]) if cap in found[demo] else "-" for cap in caps]
        out.append(f"| `winnow {' '.join(_argv(demo))}`: how measured | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _argv(demo: str) -> tuple[str, ...]:
    from winnow.figures import DEMOS

    return DEMOS[demo].argv


def _copied(found: dict, cap: str) -> bool:
    return all(recs[cap]["provenance"] != "run" for recs in found.values() if cap in recs)


def _source(rec: dict) -> str:
    """Where a record's figures come from, in one cell."""
    peak = (rec.get("report") or {}).get("peak_memory_mb") or rec.get("peak_memory_mb")
    cost = f"{rec['wall_seconds']:,.0f} s wall, {peak / 1024:.1f} GB peak"
    if rec["provenance"] != "run":
        return f"copied from the docs of commit `{rec['commit'][:7]}` ({rec['date']}, an earlier commit); {cost}"
    m = rec["machine"]
    dirty = " with uncommitted changes" if rec["dirty"] else ""
    return (
        f"commit `{rec['commit'][:7]}`{dirty} ({rec['date']}); {m['cpu_count']} cores, {m['torch_threads']} torch "
        f"threads, torch {m['torch']}, transformers {m['transformers']}; {cost}"
        + (f" ({rec['note']})" if rec.get("note") else "")
    )
