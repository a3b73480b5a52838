"""Chat (SFT) files at upload: OpenAI's `{"messages": [...]}` rows are detected from the first row,
validated with the trainer's rules (every error names the line and the field) and get their own report."""

import json
from collections.abc import Iterator

import pytest

from alignd.contract.chat import CHAT_FORMAT
from alignd.datasets import validate_stream
from alignd.datasets.chat_report import ChatQualityReport
from alignd.errors import InvalidFile

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "An apple."},
    ]
}
PREFERENCE = {"prompt": "Name a fruit.", "chosen": " An apple.", "rejected": " A dog."}


def _jsonl(*rows: object) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _chunks(data: bytes, size: int = 11) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def _turns(*turns: tuple[str, str], **extra: object) -> dict[str, object]:
    return {"messages": [{"role": role, "content": content} for role, content in turns], **extra}


def test_a_chat_file_is_detected_and_reported() -> None:
    weighted = {
        "messages": [
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "A dog.", "weight": 0},
            {"role": "user", "content": "A fruit, please."},
            {"role": "assistant", "content": "A pear."},
        ]
    }
    tools = CHAT | {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}
    rows = [
        CHAT,  # 1
        CHAT,  # 2: exact duplicate of 1
        _turns(
            ("system", "be brief"), ("user", "name a FRUIT"), ("assistant", "A plum.")
        ),  # 3: near duplicate
        _turns(("user", "Say a colour."), ("assistant", "   ")),  # 4: empty turn
        _turns(("user", "Hello?")),  # 5: no assistant turn
        weighted,  # 6: one untrained turn
        tools,  # 7: near duplicate too (same prompt, tools differ)
    ]
    data = b"\n" + _jsonl(*rows)
    summary = validate_stream(_chunks(data))
    assert summary.format == CHAT_FORMAT and summary.rows == 7 and summary.bytes == len(data)
    report = summary.report
    assert isinstance(report, ChatQualityReport)
    lines = {
        name: (sample.count, sample.example_lines)
        for name, sample in [
            ("exact", report.exact_duplicates),
            ("near", report.near_duplicates),
            ("empty", report.empty_turns),
            ("no_assistant", report.no_assistant_turn),
        ]
    }
    # Line numbers count the leading blank line.
    assert lines == {"exact": (1, [3]), "near": (2, [4, 8]), "empty": (1, [5]), "no_assistant": (1, [6])}
    assert (report.untrained_turns, report.rows_with_tools) == (1, 1)
    assert report.lengths is not None
    assert (report.lengths.turns.min, report.lengths.turns.max) == (1, 4)
    # No trained turn in row 5 (0 characters); "An apple." (9) is the longest trained answer.
    assert report.lengths.trained_characters.min == 0 and report.lengths.trained_characters.max == 9
    assert report.truncation is None


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": "hi"}, "messages", "non-empty list"),
        (_turns(("robot", "hi")), "messages[0].role", "role 'robot'"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "expected a string"),
        (
            {"messages": [{"role": "user", "content": "hi", "weight": 1}]},
            "messages[0].weight",
            "only assistant",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "x", "weight": 2},
                ]
            },
            "messages[1].weight",
            "expected 0 or 1",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "x", "weight": True},
                ]
            },
            "messages[1].weight",
            "expected 0 or 1",
        ),
        (CHAT | {"tools": {"name": "x"}}, "tools", "list of tool objects"),
        (CHAT | {"parallel_tool_calls": "yes"}, "parallel_tool_calls", "true or false"),
        (PREFERENCE, "chosen", "preference data"),
        ({"text": "hello"}, "messages", "missing field"),
    ],
)
def test_a_bad_chat_row_names_its_line_and_field(row: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidFile) as caught:
        validate_stream([_jsonl(CHAT, row)])
    assert caught.value.param == field
    assert caught.value.message.startswith(f"line 2, field '{field}'") and words in caught.value.message


def test_an_assistant_turn_may_only_call_tools() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    row = {
        "messages": [
            {"role": "user", "content": "Look it up."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ]
    }
    summary = validate_stream([_jsonl(row)])
    assert summary.rows == 1 and isinstance(summary.report, ChatQualityReport)
    assert summary.report.empty_turns.count == 0


def test_a_file_with_nothing_to_train_on_is_refused() -> None:
    untrained = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 0}]
    }
    with pytest.raises(InvalidFile, match="no row has an assistant turn to train on"):
        validate_stream([_jsonl(untrained, _turns(("user", "hello")))])


def test_a_preference_file_with_a_chat_row_later_is_refused() -> None:
    with pytest.raises(InvalidFile) as caught:
        validate_stream([_jsonl(PREFERENCE, CHAT)])
    assert caught.value.message.startswith("line 2")
