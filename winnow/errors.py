"""The one exception type winnow raises for bad input; the CLI turns it into exit 2."""


class WinnowError(Exception):
    """A user-facing error: the message names the file, line and field where there is one."""


def where(path, line: int | None = None, field: str | None = None) -> str:
    """Format a location prefix such as ``prompts.jsonl:3: field 'prompt'``."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field is not None:
        text += f": field '{field}'"
    return text


def install_hint(extra: str) -> str:
    """How to add an optional extra, as the install page writes it (winnow installs from its
    repository; a PyPI package of the same name is another project).

    >>> install_hint("ray")
    "pip install -e '.[ray]' (in winnow's repository root)"
    """
    return f"pip install -e '.[{extra}]' (in winnow's repository root)"
