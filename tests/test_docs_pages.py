"""The docs as a reader meets them: the home page links every page of the nav, the layout in
CONTRIBUTING.md names every module, install hints name this project, no page speaks of a
chapter the reader does not have, and doctests in docstrings render as code."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import import_file

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+\.md)")


def nav_pages(items) -> list[str]:
    """Every page of mkdocs.yml's nav, in order."""
    out: list[str] = []
    for item in items:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_the_home_page_links_every_page_of_the_nav():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    linked = LINK.findall((ROOT / "docs" / "index.md").read_text())
    assert sorted(set(linked)) == sorted(set(nav) - {"index.md"})


def test_the_layout_in_contributing_names_every_module():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    block = text.split("## Layout of the code", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}  # first column -> the rest, continuation lines included
    last = ""
    for line in block.splitlines():
        if line.startswith("winnow/"):
            last, _, rest = line.partition(" ")
            entries[last] = rest
        elif line.strip() and last:
            entries[last] += " " + line.strip()
    package = ROOT / "winnow"
    top = {f"winnow/{p.name}" for p in package.glob("*.py")}
    packages = {f"winnow/{p.parent.name}/" for p in package.glob("*/__init__.py")}
    assert sorted(entries) == sorted(top | packages)
    for name in packages:
        modules = {p.name for p in (ROOT / name).glob("*.py")} - {"__init__.py"}
        named = set(re.findall(r"\w+\.py", entries[name]))
        assert named == modules, name


def sources() -> list[Path]:
    files = [*ROOT.glob("winnow/**/*.py"), *ROOT.glob("docs/**/*.md"), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    return sorted(files)


@pytest.mark.parametrize(
    "pattern",
    [
        r"pip install '?winnow\[",  # PyPI's "winnow" is another project: install from the repository
        r"(?i)\bthe chapter",  # a reader of the docs or the help has no chapter
        r"(?i)chapter's",
    ],
)
def test_no_page_help_or_message_says(pattern):
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(pattern, line)
    ]
    assert found == []


def test_every_page_ends_with_a_whole_sentence():
    for path in sorted(ROOT.glob("docs/**/*.md")):
        last = path.read_text().rstrip().splitlines()[-1].rstrip()
        if last.startswith(("::: ", "    ")):  # an API page ends with a mkdocstrings block and its options
            continue
        assert last.endswith((".", "```", ")", "|", "-->")), f"{path.relative_to(ROOT)} ends: {last!r}"


def docs_hooks():
    return import_file(ROOT / "scripts" / "docs_hooks.py")


def test_a_docstring_doctest_renders_as_code_not_a_blockquote():
    import markdown

    import winnow.api

    doc = textwrap.dedent(inspect.getdoc(winnow.api.score) or "")
    assert ">>> score(" in doc
    plain = markdown.Markdown(extensions=["pymdownx.superfences"]).convert(doc)
    assert "<blockquote>" in plain  # what Markdown alone makes of ">>>"
    html = markdown.Markdown(extensions=[docs_hooks().DoctestBlocks(), "pymdownx.superfences"]).convert(doc)
    assert "<blockquote>" not in html
    assert '<pre><span></span><code><span class="gp">&gt;&gt;&gt; </span><span class="n">score</span>' in html
    assert docs_hooks().fence_doctests(["```", ">>> x", "```"]) == ["```", ">>> x", "```"]  # fenced: as is
