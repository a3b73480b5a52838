"""Function calling in preference rows: OpenAI's `input.tools`, assistant `tool_calls` and `tool` turns.

The rules follow OpenAI's chat fine-tuning format, so a file OpenAI would train on is a file we
accept: a tool is `{"type": "function", "function": {"name", "description"?, "parameters"?,
"strict"?}}`; a tool call is `{"id", "type": "function", "function": {"name", "arguments"}}` with
`arguments` a string holding a JSON object; a `tool` turn answers an earlier call by its
`tool_call_id`. Chat templates (Hugging Face's `apply_chat_template`) want the arguments as a
dict, so `template_messages` converts the validated rows into that shape for rendering.

Both sides check whether a chat template can render tools with the same probe (`PROBE_TOOL`,
`renders_probe`): the control plane at job creation, the trainer before it tokenizes.
"""

import json
import re
from typing import Any

from alignd.contract.row_error import RowError

Message = dict[str, Any]
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""OpenAI's rule for function names."""

PROBE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "alignd_probe_lookup",
        "description": "Alignd probe: looks up a word.",
        "parameters": {
            "type": "object",
            "properties": {"word": {"type": "string", "description": "The word."}},
            "required": ["word"],
        },
    },
}
"""The tool rendered to find out whether a chat template shows tool definitions to the model."""
PROBE_ARGUMENT = "alignd_probe_word"
PROBE_RESULT = "alignd_probe_result"
PROBE_MESSAGES: list[Message] = [
    {"role": "user", "content": "Look up a word."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "alignd001",  # nine letters and digits: Mistral's templates refuse other ids
                "type": "function",
                "function": {"name": "alignd_probe_lookup", "arguments": {"word": PROBE_ARGUMENT}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "alignd001", "content": PROBE_RESULT},
]
"""A conversation (in the chat templates' shape) that calls `PROBE_TOOL` and has its answer."""


def renders_probe(rendered: str) -> bool:
    """Whether `PROBE_MESSAGES` rendered with `PROBE_TOOL` shows the tool's name and description, the
    call's arguments and the tool's answer: a template that drops any of them would train on other
    prompts and completions than the rows describe."""
    function = PROBE_TOOL["function"]
    shown = (function["name"], function["description"], PROBE_ARGUMENT, PROBE_RESULT)
    return all(text in rendered for text in shown)


def uses_tools(tools: list[dict[str, Any]] | None, *conversations: Any) -> bool:
    """Whether a row uses function calling: it offers tools, or one of its turns calls one."""
    return bool(tools) or any(
        isinstance(turns, list) and any(has_tool_calls(message) for message in turns)
        for turns in conversations
    )


def check_tools(value: Any, field: str, line: int) -> list[dict[str, Any]]:
    """`input.tools`: a list of function tools (empty means none)."""
    if not isinstance(value, list):
        raise RowError(line, field, f"expected a list of tools, got {type(value).__name__}")
    for i, tool in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(tool, dict):
            raise RowError(line, where, f"expected a tool object, got {type(tool).__name__}")
        if tool.get("type") != "function":
            raise RowError(line, f"{where}.type", f"expected 'function', got {tool.get('type')!r}")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise RowError(line, f"{where}.function", "expected an object with the function's name")
        _check_name(function.get("name"), f"{where}.function.name", line)
        if "description" in function and not isinstance(function["description"], str):
            raise RowError(line, f"{where}.function.description", "expected a string")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise RowError(line, f"{where}.function.parameters", "expected a JSON Schema object")
        if "strict" in function and not isinstance(function["strict"], bool | None):
            raise RowError(line, f"{where}.function.strict", "expected true or false")
    return value


def check_tool_calls(message: Message, where: str, line: int) -> None:
    """An assistant turn's `tool_calls`: each with an id, type 'function', a name, and arguments as a
    string holding a JSON object."""
    calls = message["tool_calls"]
    field = f"{where}.tool_calls"
    if message.get("role") != "assistant":
        raise RowError(line, field, "only assistant turns make tool calls")
    if not isinstance(calls, list) or not calls:
        raise RowError(line, field, "expected a non-empty list of tool calls")
    for i, call in enumerate(calls):
        at = f"{field}[{i}]"
        if not isinstance(call, dict):
            raise RowError(line, at, f"expected a tool call object, got {type(call).__name__}")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise RowError(line, f"{at}.id", "expected a non-empty string that tool turns answer")
        if call.get("type") != "function":
            raise RowError(line, f"{at}.type", f"expected 'function', got {call.get('type')!r}")
        function = call.get("function")
        if not isinstance(function, dict):
            raise RowError(line, f"{at}.function", "expected an object with name and arguments")
        _check_name(function.get("name"), f"{at}.function.name", line)
        _check_arguments(function.get("arguments"), f"{at}.function.arguments", line)


def check_tool_answers(turns: list[tuple[str, Message]], line: int) -> None:
    """Every `tool` turn names, in `tool_call_id`, a call made by an earlier assistant turn of the same
    conversation. `turns` pairs each message with its field path, in conversation order."""
    called: set[str] = set()
    for where, message in turns:
        if message.get("role") == "tool":
            answered = message.get("tool_call_id")
            if not isinstance(answered, str) or not answered:
                raise RowError(line, f"{where}.tool_call_id", "a tool turn must name the call it answers")
            if answered not in called:
                raise RowError(
                    line,
                    f"{where}.tool_call_id",
                    f"{answered!r} is not the id of a tool call made by an earlier assistant turn",
                )
        for call in message.get("tool_calls") or ():
            called.add(call["id"])


def has_tool_calls(message: Message) -> bool:
    return bool(message.get("tool_calls"))


def template_messages(messages: list[Message]) -> list[Message]:
    """Validated OpenAI messages in the shape Hugging Face chat templates render: tool-call arguments
    as dicts, and a missing or null `content` as "" (templates concatenate it)."""
    return [_template_message(message) for message in messages]


def _template_message(message: Message) -> Message:
    if "tool_calls" not in message and isinstance(message.get("content"), str):
        return message
    out = dict(message)
    if not isinstance(out.get("content"), str):
        out["content"] = ""
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": json.loads(call["function"]["arguments"]),
                },
            }
            for call in message["tool_calls"]
        ]
    else:
        out.pop("tool_calls", None)
    return out


def _check_name(name: Any, field: str, line: int) -> None:
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise RowError(line, field, "expected a function name of 1 to 64 letters, digits, '_' or '-'")


def _check_arguments(arguments: Any, field: str, line: int) -> None:
    if not isinstance(arguments, str):
        raise RowError(
            line, field, f"expected a string holding a JSON object, got {type(arguments).__name__}"
        )
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        raise RowError(line, field, "not valid JSON: give a JSON object in a string") from None
    if not isinstance(parsed, dict):
        raise RowError(line, field, f"expected a JSON object, got JSON {type(parsed).__name__}")
