"""Supervised (SFT) rows: OpenAI's chat format, validated one line at a time.

`{"messages": [...], "tools": [...]?, "parallel_tool_calls": bool?}`, as OpenAI's supervised fine-tuning
takes it. Every assistant message is trained on unless it carries `"weight": 0` (OpenAI's rule: `weight`
is 0 or 1 and only assistant messages have one). Both the upload validator and the trainer call
`parse_chat_line`, so a file the API accepts is one the trainer can train on, with the same line-numbered
errors.

A file is either preference data (`alignd.contract.preference`) or chat data, never both: the first row
decides (`is_chat_row`), and a job's method must match its files' kind.
"""

from dataclasses import dataclass, field
from typing import Any, Final

from alignd.contract.preference import (
    OPENAI_FIELDS,
    ROLES,
    Message,
    RowError,
    _load_object,
)

CHAT_FORMAT: Final = "chat"
"""The `format` an uploaded chat (SFT) file is recorded with (preference files have their DataFormat)."""
PREFERENCE_FIELDS = (*OPENAI_FIELDS, "chosen", "rejected")
"""A row with any of these is preference data, whatever else it holds."""


@dataclass(frozen=True)
class ChatExample:
    """One validated conversation. `trained[i]` says whether message i's tokens are trained on."""

    line: int
    messages: list[Message]
    trained: list[bool]
    tools: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool | None = None
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def has_trained_turn(self) -> bool:
        return any(self.trained)


def is_chat_row(obj: dict[str, Any]) -> bool:
    """A row of OpenAI's chat format: `messages`, and none of the preference formats' fields."""
    return "messages" in obj and not any(name in obj for name in PREFERENCE_FIELDS)


def is_chat_line(raw: bytes | str) -> bool:
    """Whether a (non-blank) line is a chat row; False for anything that is not a JSON object."""
    try:
        return is_chat_row(_load_object(raw, 0))
    except RowError:
        return False


def parse_chat_line(raw: bytes | str, line: int) -> ChatExample:
    obj = _load_object(raw, line)
    if not is_chat_row(obj):
        found = next((name for name in PREFERENCE_FIELDS if name in obj), None)
        if found is not None:
            raise RowError(
                line,
                found,
                'row is preference data but the file started with chat rows ({"messages": [...]}); '
                "use one kind per file",
            )
        raise RowError(line, "messages", 'missing field; a chat row is {"messages": [...]}')
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise RowError(line, "messages", "expected a non-empty list of messages")
    trained = [_message(message, i, line) for i, message in enumerate(messages)]
    return ChatExample(
        line=line,
        messages=messages,
        trained=trained,
        tools=_tools(obj, line),
        parallel_tool_calls=_flag(obj, "parallel_tool_calls", line),
        **_optional(obj, line),
    )


def _message(message: Any, index: int, line: int) -> bool:
    """Check one message; returns whether it is trained on (an assistant turn without weight 0)."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise RowError(line, where, f"expected a message object, got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise RowError(line, f"{where}.role", f"role {role!r} is not one of {', '.join(ROLES)}")
    content = message.get("content")
    calls = message.get("tool_calls")
    if calls is not None and (role != "assistant" or not isinstance(calls, list)):
        raise RowError(line, f"{where}.tool_calls", "only an assistant message has tool_calls, a list")
    if not isinstance(content, str) and not (content is None and calls):
        raise RowError(line, f"{where}.content", f"expected a string, got {type(content).__name__}")
    if "weight" not in message:
        return role == "assistant"
    weight = message["weight"]
    if role != "assistant":
        raise RowError(line, f"{where}.weight", "only assistant messages carry a weight")
    if isinstance(weight, bool) or weight not in (0, 1):
        raise RowError(line, f"{where}.weight", f"expected 0 or 1, got {weight!r}")
    return weight == 1


def _tools(obj: dict[str, Any], line: int) -> list[dict[str, Any]] | None:
    tools = obj.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise RowError(line, "tools", "expected a list of tool objects")
    return tools


def _flag(obj: dict[str, Any], name: str, line: int) -> bool | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, bool):
        raise RowError(line, name, "expected true or false")
    return value


def _optional(obj: dict[str, Any], line: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "id" in obj:
        if not isinstance(obj["id"], str | int) or isinstance(obj["id"], bool):
            raise RowError(line, "id", "expected a string or an integer")
        out["id"] = str(obj["id"])
    if "metadata" in obj:
        if not isinstance(obj["metadata"], dict):
            raise RowError(line, "metadata", "expected an object")
        out["metadata"] = obj["metadata"]
    return out


def content_length(message: Message) -> int:
    """Characters of a message's text (a tool-call-only assistant turn has none)."""
    content = message.get("content")
    return len(content) if isinstance(content, str) else 0


def is_blank(message: Message) -> bool:
    """An empty or whitespace-only turn with no tool calls."""
    content = message.get("content")
    return not message.get("tool_calls") and not (isinstance(content, str) and content.strip())
