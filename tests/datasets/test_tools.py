"""OpenAI-format rows with function calling: `input.tools`, assistant `tool_calls` and `tool` turns are
accepted at upload and counted in the report; malformed ones are refused with the line and the field."""

import copy
import json
from typing import Any

import pytest

from alignd.contract import DataFormat, parse_preference_line
from alignd.datasets import validate_stream
from alignd.errors import InvalidFile
from alignd_trainer.synthetic import FIND_TOOL, preference_rows, tool_rows

Row = dict[str, Any]


def _jsonl(rows: list[Row]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def test_tool_rows_are_accepted_and_keep_their_tools() -> None:
    rows = preference_rows(2, fmt="openai") + tool_rows(4)
    summary = validate_stream([_jsonl(rows)])
    assert summary.format is DataFormat.openai and summary.rows == 6
    assert summary.report.tools.count == 4 and summary.report.tools.example_lines == [3, 4, 5, 6]
    # A tool call is what the completion says: such a completion is not an empty response.
    assert summary.report.empty_responses.count == 0

    example = parse_preference_line(json.dumps(rows[2]), 3)
    assert example.tools == [FIND_TOOL] and example.parallel_tool_calls is False
    assert example.chosen == rows[2]["preferred_output"]


def test_rows_differing_only_in_their_tools_are_not_exact_duplicates() -> None:
    row = tool_rows(1)[0]
    other = copy.deepcopy(row)
    other["input"]["tools"][0]["function"]["description"] = "Finds something else."
    report = validate_stream([_jsonl([row, other, row])]).report
    assert report.exact_duplicates.count == 1 and report.exact_duplicates.example_lines == [3]


def test_rows_calling_tools_without_offering_them_count_as_using_tools() -> None:
    row = copy.deepcopy(tool_rows(1)[0])
    del row["input"]["tools"]
    report = validate_stream([_jsonl([*preference_rows(1, fmt="openai"), row])]).report
    assert report.tools.count == 1 and report.tools.example_lines == [2]


def test_an_empty_tools_list_offers_no_tools() -> None:
    row = preference_rows(1, fmt="openai")[0]
    row["input"] |= {"tools": [], "parallel_tool_calls": True}
    assert parse_preference_line(json.dumps(row), 1).tools is None
    assert validate_stream([_jsonl([row])]).report.tools.count == 0


def _broken(change: str) -> Row:
    """The second kind of `tool_rows` row (prompt: user, assistant call, tool answer), broken one way."""
    row = copy.deepcopy(tool_rows(2)[1])
    call = row["input"]["messages"][1]["tool_calls"][0]
    if change == "arguments-object":
        call["function"]["arguments"] = {"category": "fruit"}
    elif change == "arguments-not-json":
        call["function"]["arguments"] = "{category: fruit"
    elif change == "no-id":
        del call["id"]
    elif change == "type":
        call["type"] = "code"
    elif change == "no-name":
        del call["function"]["name"]
    elif change == "unknown-call":
        row["input"]["messages"][2]["tool_call_id"] = "call_99"
    elif change == "no-call-id":
        del row["input"]["messages"][2]["tool_call_id"]
    elif change == "tools-not-list":
        row["input"]["tools"] = FIND_TOOL
    elif change == "tool-type":
        row["input"]["tools"][0]["type"] = "retrieval"
    elif change == "tool-name":
        row["input"]["tools"][0]["function"]["name"] = "find thing"
    elif change == "parallel":
        row["input"]["parallel_tool_calls"] = "no"
    elif change == "user-calls":
        row["input"]["messages"][0]["tool_calls"] = [call]
    elif change == "empty-calls":
        row["preferred_output"] = [{"role": "assistant", "content": None, "tool_calls": []}]
    elif change == "null-content":
        row["preferred_output"] = [{"role": "assistant", "content": None}]
    return row


BROKEN = [
    ("arguments-object", "input.messages[1].tool_calls[0].function.arguments", "expected a string"),
    ("arguments-not-json", "input.messages[1].tool_calls[0].function.arguments", "not valid JSON"),
    ("no-id", "input.messages[1].tool_calls[0].id", "non-empty string"),
    ("type", "input.messages[1].tool_calls[0].type", "expected 'function'"),
    ("no-name", "input.messages[1].tool_calls[0].function.name", "function name"),
    ("unknown-call", "input.messages[2].tool_call_id", "'call_99' is not the id of a tool call"),
    ("no-call-id", "input.messages[2].tool_call_id", "must name the call it answers"),
    ("tools-not-list", "input.tools", "expected a list of tools"),
    ("tool-type", "input.tools[0].type", "expected 'function'"),
    ("tool-name", "input.tools[0].function.name", "function name"),
    ("parallel", "input.parallel_tool_calls", "expected true or false"),
    ("user-calls", "input.messages[0].tool_calls", "only assistant turns"),
    ("empty-calls", "preferred_output[0].tool_calls", "non-empty list"),
    ("null-content", "preferred_output[0].content", "expected a string"),
]


@pytest.mark.parametrize(("change", "field", "message"), BROKEN, ids=[case[0] for case in BROKEN])
def test_malformed_tool_rows_name_the_line_and_the_field(change: str, field: str, message: str) -> None:
    rows = [*tool_rows(2), _broken(change)]
    with pytest.raises(InvalidFile) as caught:
        validate_stream([_jsonl(rows)])
    assert caught.value.param == field
    assert caught.value.message.startswith(f"line 3, field '{field}': ")
    assert message in caught.value.message


def test_conversational_rows_may_offer_tools_as_trl_keeps_them() -> None:
    """TRL's conversational format: a `tools` column, a list or a string of JSON."""
    row = preference_rows(1, fmt="conversational")[0]
    as_list = row | {"tools": [FIND_TOOL]}
    as_text = row | {"tools": json.dumps([FIND_TOOL])}
    summary = validate_stream([_jsonl([row, as_list, as_text])])
    assert summary.format is DataFormat.conversational and summary.report.tools.example_lines == [2, 3]
    assert parse_preference_line(json.dumps(as_text), 1).tools == [FIND_TOOL]
    with pytest.raises(InvalidFile, match=r"^line 2, field 'tools': not valid JSON"):
        validate_stream([_jsonl([row, row | {"tools": "[{"}])])
