"""Preference rows: the three accepted JSONL formats, detected and validated one line at a time.

Both the upload validator (control plane) and the trainer call `parse_preference_line`, so a
file the API accepts is a file the trainer can train on, with the same line-numbered errors.
"""

import json
import json.scanner
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, get_args

from alignd.contract.row_error import RowError
from alignd.contract.tools import check_tool_answers, check_tool_calls, check_tools, has_tool_calls

MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_JSON_DEPTH = 32
Role = Literal["system", "user", "assistant", "tool", "developer"]
ROLES: tuple[str, ...] = get_args(Role)


class DataFormat(StrEnum):
    standard = "standard"
    """{"prompt": str, "chosen": str, "rejected": str}"""
    conversational = "conversational"
    """{"prompt": [messages], "chosen": [messages], "rejected": [messages]}, prompt optional."""
    openai = "openai"
    """{"input": {"messages": [...], "tools"?: [...]}, "preferred_output": [msg],
    "non_preferred_output": [msg]}"""


Message = dict[str, Any]
Text = str | list[Message]


@dataclass(frozen=True)
class PreferenceExample:
    """One validated pair. Conversational formats carry message lists, standard carries strings."""

    line: int
    format: DataFormat
    prompt: Text
    chosen: Text
    rejected: Text
    id: str | None = None
    weight: float = 1.0
    agreement: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    """Function tools the prompt offers (OpenAI's `input.tools`, or a conversational row's `tools`);
    None when there are none. Rendered into the prompt by the chat template."""
    parallel_tool_calls: bool | None = None
    """OpenAI's `input.parallel_tool_calls`, kept as given; chat templates have no use for it."""


def parse_preference_line(
    raw: bytes | str, line: int, expected: DataFormat | None = None
) -> PreferenceExample:
    """Parse and validate one JSONL line; `expected` is the format of the file's first row."""
    obj = _load_object(raw, line)
    found = detect_format(obj, line)
    if expected is not None and found != expected:
        raise RowError(
            line,
            None,
            f"row is in {found} format but the file started in {expected} format; use one format per file",
        )
    parts: tuple[Text, Text, Text]
    tools: dict[str, Any] = {}
    if found is DataFormat.openai:
        parts = _openai_parts(obj, line)
        tools = _tool_fields(obj["input"], "input.", line)
    elif found is DataFormat.conversational:
        parts = _conversational_parts(obj, line)
        tools = _tool_fields(obj, "", line, json_text=True)
    else:
        parts = _standard_parts(obj, line)
    prompt, chosen, rejected = parts
    return PreferenceExample(
        line=line,
        format=found,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        **optional_fields(obj, line),
        **tools,
    )


def _tool_fields(
    source: dict[str, Any], prefix: str, line: int, *, json_text: bool = False
) -> dict[str, Any]:
    """`tools` (None when absent or empty) and `parallel_tool_calls`, checked. With `json_text`, `tools` may
    also be a string of JSON, as TRL datasets keep it (Arrow cannot hold the tools' varying schemas)."""
    out: dict[str, Any] = {}
    if "tools" in source:
        tools = source["tools"]
        if json_text and isinstance(tools, str):
            try:
                tools = json.loads(tools)
            except (ValueError, RecursionError):
                raise RowError(line, f"{prefix}tools", "not valid JSON: give a list of tools") from None
        out["tools"] = check_tools(tools, f"{prefix}tools", line) or None
    if "parallel_tool_calls" in source:
        value = source["parallel_tool_calls"]
        if not isinstance(value, bool):
            raise RowError(line, f"{prefix}parallel_tool_calls", "expected true or false")
        out["parallel_tool_calls"] = value
    return out


OPENAI_FIELDS = ("input", "preferred_output", "non_preferred_output")
"""Any one of them makes a row OpenAI format, whatever else it holds."""


def detect_format(obj: dict[str, Any], line: int) -> DataFormat:
    if any(name in obj for name in OPENAI_FIELDS):
        return DataFormat.openai
    if "chosen" not in obj or "rejected" not in obj:
        missing = "chosen" if "chosen" not in obj else "rejected"
        raise RowError(
            line,
            missing,
            "missing field; expected prompt/chosen/rejected or input/preferred_output/non_preferred_output",
        )
    return DataFormat.conversational if isinstance(obj["chosen"], list) else DataFormat.standard


def _load_object(raw: bytes | str, line: int) -> dict[str, Any]:
    if isinstance(raw, bytes):
        if len(raw) > MAX_LINE_BYTES:
            raise RowError(line, None, f"line is {len(raw)} bytes, over the {MAX_LINE_BYTES}-byte limit")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RowError(line, None, f"invalid UTF-8 at byte {exc.start}") from None
    obj = _parse_json(raw, line)
    if not isinstance(obj, dict):
        raise RowError(line, None, f"expected a JSON object, got {type(obj).__name__}")
    # Only a line with a second '{' or a '[' can nest; most standard-format rows have neither.
    if (raw.find("{", 1) != -1 or "[" in raw) and json_depth(obj) > MAX_JSON_DEPTH:
        raise RowError(line, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return obj


_SCAN_ONCE = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # the stub wants a duck type
"""The (C) scanner behind `json.loads`. Called directly it parses a one-line object in about two thirds
of the time, without `json.loads`'s wrappers and whitespace regexes."""


def _parse_json(text: str, line: int) -> Any:
    """`json.loads(text)`. A line that is exactly one JSON value (the usual case) is parsed by the scanner
    alone; anything else (whitespace around the value, an error) goes through `json.loads` itself, so the
    results and messages are always `json.loads`'s."""
    try:
        value, end = _SCAN_ONCE(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError, RecursionError):
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError(line, None, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise RowError(line, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # an integer over Python's digit limit
        raise RowError(line, None, f"not valid JSON: {exc}") from None


def json_depth(value: Any, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((json_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((json_depth(v, level + 1) for v in value), default=level)
    return level


def _standard_parts(obj: dict[str, Any], line: int) -> tuple[str, str, str]:
    if "prompt" not in obj:
        raise RowError(line, "prompt", "missing field (standard format needs prompt, chosen, rejected)")
    prompt = _string(obj, "prompt", line, allow_empty=True)
    return prompt, _string(obj, "chosen", line), _string(obj, "rejected", line)


def _string(obj: dict[str, Any], name: str, line: int, *, allow_empty: bool = False) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise RowError(line, name, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RowError(line, name, "empty completion")
    return value


def _conversational_parts(
    obj: dict[str, Any], line: int
) -> tuple[list[Message], list[Message], list[Message]]:
    chosen = _messages(obj["chosen"], "chosen", line)
    rejected = _messages(obj["rejected"], "rejected", line)
    if "prompt" in obj:
        prompt = _messages(obj["prompt"], "prompt", line)
    else:
        prompt, chosen, rejected = _split_implicit_prompt(chosen, rejected, line)
    _check_prompt(prompt, "prompt", line)
    _check_completion(chosen, "chosen", line)
    _check_completion(rejected, "rejected", line)
    return prompt, chosen, rejected


def _split_implicit_prompt(
    chosen: list[Message], rejected: list[Message], line: int
) -> tuple[list[Message], list[Message], list[Message]]:
    """Chosen and rejected are whole conversations; the prompt is the turns they share."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise RowError(
            line, "prompt", "missing field, and chosen and rejected share no leading turns to use as one"
        )
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _openai_parts(obj: dict[str, Any], line: int) -> tuple[list[Message], list[Message], list[Message]]:
    for name in ("input", "preferred_output", "non_preferred_output"):
        if name not in obj:
            raise RowError(line, name, "missing field (OpenAI preference format)")
    source = obj["input"]
    if not isinstance(source, dict) or "messages" not in source:
        raise RowError(line, "input.messages", "expected an object with a messages list")
    prompt = _messages(source["messages"], "input.messages", line)
    chosen = _messages(obj["preferred_output"], "preferred_output", line)
    rejected = _messages(obj["non_preferred_output"], "non_preferred_output", line)
    _check_prompt(prompt, "input.messages", line)
    # OpenAI's rule; conversational (Hugging Face) rows often name the tool instead of the call.
    check_tool_answers([(f"input.messages[{i}]", message) for i, message in enumerate(prompt)], line)
    _check_completion(chosen, "preferred_output", line)
    _check_completion(rejected, "non_preferred_output", line)
    return prompt, chosen, rejected


def _messages(value: Any, name: str, line: int) -> list[Message]:
    if not isinstance(value, list):
        raise RowError(line, name, f"expected a list of messages, got {type(value).__name__}")
    for i, message in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(message, dict):
            raise RowError(line, where, f"expected a message object, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise RowError(line, f"{where}.role", f"role {role!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if message.get("tool_calls") is not None:
            check_tool_calls(message, where, line)
            if content is not None and not isinstance(content, str):
                got = type(content).__name__
                raise RowError(line, f"{where}.content", f"expected a string or null, got {got}")
        elif not isinstance(content, str):
            raise RowError(line, f"{where}.content", f"expected a string, got {type(content).__name__}")
    return value


def _check_prompt(prompt: list[Message], name: str, line: int) -> None:
    if not prompt:
        raise RowError(line, name, "empty prompt: give at least one user message")
    if prompt[-1]["role"] == "assistant":
        raise RowError(
            line,
            f"{name}[{len(prompt) - 1}].role",
            "the prompt ends with an assistant turn; the completion must answer it",
        )


def _check_completion(messages: list[Message], name: str, line: int) -> None:
    if not messages:
        raise RowError(line, name, "empty completion")
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            raise RowError(
                line, f"{name}[{i}].role", f"completion turns must be 'assistant', got {message['role']!r}"
            )
    if not any((m.get("content") or "").strip() or has_tool_calls(m) for m in messages):
        raise RowError(line, f"{name}[0].content", "empty completion: give content or tool_calls")


def optional_fields(obj: dict[str, Any], line: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "id" in obj:
        if not isinstance(obj["id"], str | int) or isinstance(obj["id"], bool):
            raise RowError(line, "id", "expected a string or an integer")
        out["id"] = str(obj["id"])
    if "weight" in obj:
        weight = obj["weight"]
        if not _is_number(weight) or not 0 < (_float(weight) or 0) < math.inf:
            raise RowError(line, "weight", "expected a finite number greater than 0")
        out["weight"] = float(weight)
    for name in ("agreement", "votes"):
        if name in obj:
            out["agreement"] = _agreement(obj[name], name, line)
    if "metadata" in obj:
        if not isinstance(obj["metadata"], dict):
            raise RowError(line, "metadata", "expected an object")
        out["metadata"] = obj["metadata"]
    return out


def _agreement(value: Any, name: str, line: int) -> float:
    """`agreement` is a share in [0, 1]; `votes` is [for chosen, for rejected] counts."""
    if name == "votes" and isinstance(value, list):
        if (
            len(value) != 2
            or not all(_is_number(v) and v >= 0 and _float(v) is not None for v in value)
            or sum(value) == 0
        ):
            raise RowError(
                line, name, "expected [votes for chosen, votes for rejected] with a positive total"
            )
        return float(value[0]) / (float(value[0]) + float(value[1]))
    if not _is_number(value) or not 0 <= value <= 1:
        raise RowError(line, name, "expected a number between 0 and 1")
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(value: int | float) -> float | None:
    """`float(value)`, or None for an integer too large for a float."""
    try:
        return float(value)
    except OverflowError:
        return None
