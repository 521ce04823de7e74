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
