"""Prompt normalisation for near-duplicate detection: case-folded, with punctuation and whitespace
removed ("Hello,  World!" and "hello world" both give "helloworld"; so do "2+2" and "2 + 2").

`normalise` is the definition; `normalise_many` gives the same texts, UTF-8 encoded, for a whole
batch at once. For ASCII prompts (most of them) it is one translate over the batch joined into one
bytes object, so the per-prompt cost is a C pass instead of a Python call.
"""

import re
from collections.abc import Sequence

_REMOVED = re.compile(r"[^\w]|_")
"""Punctuation, symbols, control characters and whitespace: what `normalise` removes."""
_ASCII_REMOVED = bytes(code for code in range(128) if _REMOVED.match(chr(code)))
_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_LOWER = bytes.maketrans(_UPPER, _UPPER.lower())
"""For ASCII, lower case is case folding."""
_SEPARATOR = b"\x00"
"""Joins a batch's prompts. `normalise` removes it from text, so the batch's translate keeps it, and a
batch where a prompt holds one takes the one-at-a-time path."""
_BATCH_REMOVED = _ASCII_REMOVED.replace(_SEPARATOR, b"")


def normalise(text: str) -> str:
    """Case-folded, punctuation and whitespace removed: "Hello,  World!" -> "helloworld"."""
    return _REMOVED.sub("", text.casefold())


def normalise_many(texts: Sequence[str]) -> list[bytes]:
    """`[normalise(text).encode() for text in texts]`, for ASCII texts in one pass over the batch."""
    joined = "\x00".join(texts)
    if texts and joined.isascii():
        normalised = joined.encode("ascii").translate(_LOWER, _BATCH_REMOVED).split(_SEPARATOR)
        if len(normalised) == len(texts):
            return normalised
    return [normalise(text).encode() for text in texts]
