"""Text the databases cannot store: NUL characters (Postgres refuses them in every text column) and lone
surrogates (UTF-16 halves that have no UTF-8 encoding, which JSON's `\\ud800` escapes can still carry).

Such text is refused at the door as a 400 naming the field (`api/limits.py` for URLs and JSON bodies, the
upload route for a file's name), so it never reaches a database that would answer with a 500, nor a store
that would keep an object whose row could not be written.
"""

import re
from collections.abc import Iterator
from typing import Any

from alignd.errors import InvalidRequest

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SUSPECT_JSON = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")
"""The only ways a JSON body can carry such text: a `\\u0000` or surrogate escape, or the UTF-8 form of a
surrogate (Python's JSON decoder lets it through). Bodies without any are not parsed a second time."""


def problem(text: str) -> str | None:
    """What makes `text` unstorable, in words; None when it is fine."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "a NUL character (\\u0000)"
    return f"a lone surrogate (\\u{ord(found.group()):04x})"


def check_text(text: str, *, param: str) -> None:
    """InvalidRequest naming `param` when `text` is unstorable."""
    found = problem(text)
    if found is not None:
        raise unstorable(param, found)


def unstorable(param: str, found: str) -> InvalidRequest:
    return InvalidRequest(
        f"invalid {param}: it contains {found}, which cannot be stored; remove it and send the request again",
        param=param,
        code="invalid_value",
    )


def find_in_json(value: Any) -> tuple[str, str] | None:
    """The first unstorable string in a parsed JSON value, key or value: its dotted path (`metadata.k`,
    `events.0.message`, as validation errors name fields) and the problem; None when there is none."""
    for path, text in _strings(value):
        found = problem(text)
        if found is not None:
            return dotted(path), found
    return None


def dotted(path: tuple[str, ...]) -> str:
    """A field path as a `param`, with unstorable characters escaped so the answer can be encoded."""
    return ".".join(_UNSTORABLE.sub(lambda char: f"\\u{ord(char.group()):04x}", part) for part in path)


def may_hold_unstorable(body: bytes) -> bool:
    """Cheap test on a raw JSON body: False means `find_in_json` would find nothing in it."""
    return _SUSPECT_JSON.search(body) is not None


def _strings(value: Any) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string in a JSON value with its path, walked with a stack: JSON may nest deeper than Python
    may recurse."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                stack.append(((*path, key), child))
                stack.append(((*path, key), key))
        elif isinstance(item, list):
            stack.extend(((*path, str(index)), child) for index, child in reversed(list(enumerate(item))))
