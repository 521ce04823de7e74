"""Keeping evaluation sets out of selected data: long shared n-grams with eval texts, and
near-duplicate completions (MinHash LSH).

Words are runs of letters, digits and ``_`` (``\\w+``), lowercased; an n-gram is n consecutive
words. Eval n-grams are held as a sorted array of 64-bit hashes with the eval item of each
(12 bytes per distinct n-gram, whatever its length), never as strings: an eval set of 10^4
items of 500 words holds at most 5 * 10^6 n-grams, 60 MB. Contamination follows GPT-3's and
OpenThoughts' rule (a shared 13-gram), without their exceptions for frequent n-grams.

Eval files: a ``.jsonl`` file is one item a line, its text every string among the columns
``EVAL_COLUMNS`` present (each column matched alone, so no n-gram spans two columns); any
other file is plain text, one item a non-blank line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np

from winnow.errors import WinnowError, install_hint, where

EVAL_COLUMNS = ("text", "prompt", "question", "problem", "answer", "solution")
"""The columns of a JSONL eval file read as eval text; a row needs at least one."""
NUM_PERM = 128
"""MinHash permutations: the estimate of a Jaccard of 0.8 has a standard deviation of 0.035."""
MINHASH_SEED = 1
"""MinHash's fixed seed: the same texts give the same signatures in every process."""
SCHEME = "affine32"
"""datasketch's hashing scheme, named so a new default in datasketch cannot change signatures
(32-bit hash values: 512 bytes a signature)."""
SHINGLE = 5
"""Words per shingle for near-duplicates."""
_WORD = re.compile(r"\w+")
_MULT = np.uint64(0x100000001B3)  # FNV's prime: n-gram hash = sum of word hashes times its powers, mod 2^64


def words(text: str) -> list[str]:
    """The words n-grams are made of.

    >>> words("The cat's 3 hats!")
    ['the', 'cat', 's', '3', 'hats']
    """
    return _WORD.findall(text.lower())


@lru_cache(maxsize=1 << 18)
def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def ngram_hashes(tokens: list[str], n: int) -> np.ndarray:
    """Hashes of the n-grams of ``tokens``, shape (max(len - n + 1, 0),) uint64, in order;
    equal n-grams, equal hashes, in any process (blake2b of each word, not Python's hash).

    >>> a = ngram_hashes(words("a b c d"), 3)
    >>> a.shape, bool(a[1] == ngram_hashes(words("b c d"), 3)[0])
    ((2,), True)
    """
    count = len(tokens) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    w = np.fromiter((_word_hash(t) for t in tokens), dtype=np.uint64, count=len(tokens))
    h = np.zeros(count, dtype=np.uint64)
    for k in range(n):  # uint64 arithmetic wraps: a polynomial hash mod 2^64
        h = h * _MULT + w[k : k + count]
    return h


def file_sha256(path: str) -> str:
    """The sha256 of an eval file's bytes: the select stage's config holds it, so a changed
    file refuses resume. A missing or unreadable file is one line naming it."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise WinnowError(f"select.decontaminate: cannot read eval file {path}: {e.strerror or e}") from None
    return digest.hexdigest()


def eval_items(path: str) -> Iterator[tuple[str, list[str]]]:
    """(label ``file:line``, texts) of each item of an eval file (module docstring)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not path.endswith(".jsonl"):
                yield f"{path}:{lineno}", [line]
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise WinnowError(f"{where(path, lineno)}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise WinnowError(f"{where(path, lineno)}: expected a JSON object")
            texts = []
            for column in EVAL_COLUMNS:
                if column in row:
                    if not isinstance(row[column], str):
                        raise WinnowError(f"{where(path, lineno, column)}: must be a string")
                    texts.append(row[column])
            if not texts:
                raise WinnowError(f"{where(path, lineno)}: no eval text (a column among {', '.join(EVAL_COLUMNS)})")
            yield f"{path}:{lineno}", texts


@dataclass
class Match:
    """Where a text meets an eval item: the item's label and the shared n-gram."""

    item: str
    ngram: str


@dataclass
class EvalIndex:
    """The eval n-grams: ``hashes`` sorted distinct uint64, shape (G,); ``items`` (G,) int32,
    an eval item holding each; ``labels`` each item's ``file:line``."""

    n: int
    hashes: np.ndarray
    items: np.ndarray
    labels: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, paths: list[str], n: int) -> EvalIndex:
        """Every n-gram of every item of ``paths``; an item shorter than n words has none."""
        parts: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        labels: list[str] = []
        for path in paths:
            for label, texts in eval_items(path):
                for text in texts:
                    h = ngram_hashes(words(text), n)
                    parts.append(h)
                    owners.append(np.full(len(h), len(labels), dtype=np.int32))
                labels.append(label)
        hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        items = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int32)
        hashes, first = np.unique(hashes, return_index=True)  # sorted; the first item holding each
        return cls(n, hashes, items[first], labels)

    def find(self, text: str) -> Match | None:
        """The first n-gram of ``text`` an eval item holds, or None.

        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "eval.txt")
        >>> _ = open(p, "w").write("one two three four\\n")
        >>> index = EvalIndex.build([p], 3)
        >>> index.find("Say: TWO three, four!").ngram, index.find("two three five")
        ('two three four', None)
        """
        tokens = words(text)
        h = ngram_hashes(tokens, self.n)
        if not len(h) or not len(self.hashes):
            return None
        at = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        hits = np.flatnonzero(self.hashes[at] == h)
        if not len(hits):
            return None
        k = int(hits[0])
        return Match(self.labels[int(self.items[at[k]])], " ".join(tokens[k : k + self.n]))


def shingles(text: str) -> list[bytes]:
    """A text's word 5-shingles (the whole text as one when it is shorter).

    >>> shingles("a b c d e f")
    [b'a b c d e', b'b c d e f']
    """
    tokens = words(text)
    return [" ".join(tokens[k : k + SHINGLE]).encode() for k in range(max(len(tokens) - SHINGLE + 1, 1))]


def load_datasketch():
    """datasketch (the ``dedup`` extra), or one line saying how to install it."""
    try:
        import datasketch
    except ImportError:
        raise WinnowError(f"select.near_dedup: needs datasketch: {install_hint('dedup')}") from None
    return datasketch


@lru_cache(maxsize=1)
def _permutations():
    MinHash = load_datasketch().MinHash

    return MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED, scheme=SCHEME).permutations


def minhash(text: str):
    """The text's MinHash over its shingles (``NUM_PERM`` permutations, seed ``MINHASH_SEED``;
    the permutations are made once and shared by every signature)."""
    MinHash = load_datasketch().MinHash

    m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED, permutations=_permutations(), scheme=SCHEME)
    m.update_batch(shingles(text))
    return m


Key = TypeVar("Key", bound=Hashable)


def near_duplicates(keys: list[Key], signatures: dict[Key, Any], threshold: float) -> list[tuple[Key, Key, float]]:
    """Walk ``keys`` in order and return (key, earlier kept key, estimated Jaccard) for each
    whose MinHash estimates a Jaccard >= threshold with an earlier kept one (LSH finds the
    candidates; the estimate decides). The earliest of a group is kept, the rest returned.
    signatures: key -> MinHash."""
    lsh = load_datasketch().MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    dropped = []
    for n, key in enumerate(keys):
        m = signatures[key]
        scored = [(m.jaccard(signatures[keys[c]]), c) for c in lsh.query(m)]
        close = [(j, c) for j, c in scored if j >= threshold]
        if close:
            j, c = max(close, key=lambda jc: (jc[0], -jc[1]))  # the closest, the earliest on a tie
            dropped.append((key, keys[c], j))
        else:
            lsh.insert(n, m)
    return dropped
