"""The one quoting helper: everything that comes from a pod and lands in a generated shell script
goes through `quote` (a single-quoted word that bash reads back byte for byte). Pure."""

from __future__ import annotations

import shlex
from collections.abc import Iterable


def quote(word: str) -> str:
    """One shell word, read back exactly by bash/sh (single quotes; `'` as '"'"')."""
    if "\0" in word:
        raise ValueError("a NUL byte cannot be passed through a shell word")
    return shlex.quote(word)


def join(argv: Iterable[str]) -> str:
    """An argv list as one shell command line, every element quoted."""
    return " ".join(quote(a) for a in argv)
