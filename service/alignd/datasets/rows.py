"""A batch of valid rows as columns: what the quality report reads.

Both validation paths produce it: typed batch decoding (`typed_rows`) and the row-by-row parser
shared with the trainer (`Rows.from_examples`). Message lists hold `Message`s, hashable and
compared by value, whichever path read them, so the report treats both paths' rows alike.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from alignd.contract import PreferenceExample
from alignd.contract.preference import Role
from alignd.contract.tools import uses_tools


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A message with a role and a content and nothing else (typed decoding reads only these)."""

    role: Role
    content: str


class ExtendedMessage(Message, frozen=True):
    """A message with more fields (`name`, `tool_calls`, ...), which only the row-by-row parser reads.
    `extra` is those fields as canonical JSON, so equal messages compare and hash equal."""

    extra: str


Turns = tuple[Message, ...]
"""Tuples, not lists: the garbage collector stops tracking a tuple of untracked objects (`Message`s
are) at its first pass, so a batch's rows never reach the older generations, whose collections cost
tenths of a second in a server's heap."""
Text = str | Turns
"""A prompt or a response: a string (standard format) or a message list (the other formats)."""


@dataclass(frozen=True)
class Rows:
    lines: Sequence[int]
    """1-based line numbers, ascending."""
    prompts: Sequence[Text]
    chosen: Sequence[Text]
    rejected: Sequence[Text]
    line_bytes: Sequence[int]
    """Raw line sizes without the line ending."""
    strings: bool
    """True when every text is a string (the standard format), False when all are message lists."""
    weights: list[float] | None = None
    """None when every row weighs 1.0."""
    agreement: list[float | None] | None = None
    """None when no row carries agreement."""
    tools: list[str | None] | None = None
    """Each row's tool definitions as canonical JSON (None for a row without tools); None when no row
    offers tools."""
    tool_lines: list[int] | None = None
    """Lines of the rows that use function calling (`contract.tools.uses_tools`); None when none does."""

    def __len__(self) -> int:
        return len(self.lines)

    @classmethod
    def from_examples(cls, examples: list[PreferenceExample], line_bytes: list[int]) -> "Rows":
        weights = [example.weight for example in examples]
        agreement = [example.agreement for example in examples]
        tools = [None if e.tools is None else _CANONICAL_JSON.encode(e.tools) for e in examples]
        tool_lines = [e.line for e in examples if uses_tools(e.tools, e.prompt, e.chosen, e.rejected)]
        return cls(
            lines=[example.line for example in examples],
            prompts=[_text(example.prompt) for example in examples],
            chosen=[_text(example.chosen) for example in examples],
            rejected=[_text(example.rejected) for example in examples],
            line_bytes=line_bytes,
            strings=all(type(example.prompt) is str for example in examples),
            weights=weights if any(weight != 1.0 for weight in weights) else None,
            agreement=agreement if any(value is not None for value in agreement) else None,
            tools=tools if any(value is not None for value in tools) else None,
            tool_lines=tool_lines or None,
        )


_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _text(text: str | list[dict[str, Any]]) -> Text:
    return text if isinstance(text, str) else tuple(map(_message, text))


def _message(message: dict[str, Any]) -> Message:
    """A parsed message (role and content already checked) as a `Message`. A tool call counts as content:
    its function's name and arguments are what the model writes, so the report measures them."""
    role, content = message["role"], message.get("content")
    if len(message) == 2 and isinstance(content, str):
        return Message(role, content)
    text = content if isinstance(content, str) else ""
    for call in message.get("tool_calls") or ():
        text += call["function"]["name"] + call["function"]["arguments"]
    extra = {name: value for name, value in message.items() if name not in ("role", "content")}
    return ExtendedMessage(role, text, _CANONICAL_JSON.encode(extra))
