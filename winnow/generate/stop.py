"""Stop strings for the transformers backend: when a completion's text first contains one,
the completion ends there, and its text is cut before it (as vLLM and the OpenAI API do).

The check runs after every sampled token, so it decodes only the tail of the completion:
a stop string of c characters that has just appeared lies in the last few tokens (a byte-level
token may hold a quarter of a character, hence ``4 * c + 4`` tokens), and an earlier one would
have ended the completion already.
"""

from __future__ import annotations


class StopStrings:
    """``hit(tokens)`` says whether a completion's text holds a stop string; ``cut(text)``
    returns the text before the first one, and whether there was one.

    >>> class Chars:  # a stand-in tokenizer: token i is the character chr(i)
    ...     def decode(self, ids, skip_special_tokens=True):
    ...         return "".join(map(chr, ids))
    >>> stops = StopStrings(Chars(), ["\\n\\n", "END"])
    >>> stops.hit([ord(c) for c in "one\\ntwo"]), stops.hit([ord(c) for c in "one\\n\\n"])
    (False, True)
    >>> stops.cut("a END b\\n\\n")
    ('a ', True)
    """

    def __init__(self, tokenizer, stops: tuple[str, ...] | list[str]):
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 4

    def __bool__(self) -> bool:
        return bool(self.stops)

    def hit(self, tokens: list[int]) -> bool:
        """True when the decoded tail of ``tokens`` contains a stop string."""
        text = self.tokenizer.decode(tokens[-self.window :], skip_special_tokens=True)
        return any(s in text for s in self.stops)

    def end(self, tokens: list[int]) -> int:
        """Tokens up to and including the one that completed the first stop string (all if none)."""
        for i in range(len(tokens)):
            if self.hit(tokens[: i + 1]):
                return i + 1
        return len(tokens)

    def cut(self, text: str) -> tuple[str, bool]:
        """The text before the earliest stop string, and whether one was found."""
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return (text[: min(found)], True) if found else (text, False)
