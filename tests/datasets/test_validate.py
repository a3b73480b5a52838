"""Validating a streamed file with the trainer's row rules: every kind of bad input is a 4xx that
names the line (and the field, where there is one); good files give format, rows, size and hash."""

import hashlib
import json
from collections.abc import Iterator

import pytest

from alignd.contract import DataFormat
from alignd.datasets import DatasetValidator, FileTooLarge, validate_stream
from alignd.errors import InvalidFile, PayloadTooLarge

STANDARD = {"prompt": "Name a fruit.", "chosen": " An apple.", "rejected": " A dog."}
CONVERSATIONAL = {
    "prompt": [{"role": "user", "content": "Name a fruit."}],
    "chosen": [{"role": "assistant", "content": "An apple."}],
    "rejected": [{"role": "assistant", "content": "A dog."}],
}
OPENAI = {
    "input": {"messages": [{"role": "user", "content": "Name a fruit."}]},
    "preferred_output": [{"role": "assistant", "content": "An apple."}],
    "non_preferred_output": [{"role": "assistant", "content": "A dog."}],
}


def _line(row: object) -> bytes:
    return json.dumps(row).encode() + b"\n"


def _jsonl(*rows: object) -> bytes:
    return b"".join(_line(row) for row in rows)


def _chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (STANDARD, DataFormat.standard),
        (CONVERSATIONAL, DataFormat.conversational),
        (OPENAI, DataFormat.openai),
    ],
)
def test_a_valid_file_gives_format_rows_size_and_sha256(row: dict[str, object], fmt: DataFormat) -> None:
    data = _jsonl(row, row | {"id": 2, "weight": 0.5}) + b"\r\n\n" + json.dumps(row).encode()
    summary = validate_stream(_chunks(data))
    assert summary.format is fmt and summary.rows == 3 and summary.bytes == len(data)
    assert summary.sha256 == hashlib.sha256(data).hexdigest()
    assert summary.report.rows == 3 and summary.report.exact_duplicates.count == 2


def test_feed_and_finish_match_validate_stream() -> None:
    data = _jsonl(STANDARD, STANDARD | {"chosen": " A pear."})
    validator = DatasetValidator(max_line_bytes=1000, max_total_bytes=10_000)
    for chunk in _chunks(data, 3):
        validator.feed(chunk)
    assert validator.finish() == validate_stream([data])


def _conversational_with(**overrides: object) -> dict[str, object]:
    return CONVERSATIONAL | overrides


BAD_FILES = [
    pytest.param(_jsonl(STANDARD) + b"{oops\n", "line 2: not valid JSON", None, id="not-json"),
    pytest.param(b"[1, 2]\n", "line 1: expected a JSON object, got list", None, id="not-an-object"),
    pytest.param(
        _jsonl({"prompt": "p", "rejected": " b"}),
        "line 1, field 'chosen': missing field",
        "chosen",
        id="missing",
    ),
    pytest.param(
        _jsonl({"question": "p", "chosen": " a", "rejected": " b"}),
        "line 1, field 'prompt': missing field",
        "prompt",
        id="wrong-format",
    ),
    pytest.param(
        _jsonl(STANDARD | {"chosen": 3}),
        "line 1, field 'chosen': expected a string, got int",
        "chosen",
        id="type",
    ),
    pytest.param(
        _jsonl(STANDARD, STANDARD | {"rejected": "  "}),
        "line 2, field 'rejected': empty completion",
        "rejected",
        id="empty-completion",
    ),
    pytest.param(
        _jsonl(_conversational_with(chosen=[{"role": "user", "content": "An apple."}])),
        "line 1, field 'chosen[0].role': completion turns must be 'assistant'",
        "chosen[0].role",
        id="wrong-role",
    ),
    pytest.param(
        _jsonl(_conversational_with(prompt=[{"role": "narrator", "content": "x"}])),
        "line 1, field 'prompt[0].role': role 'narrator' is not one of",
        "prompt[0].role",
        id="unknown-role",
    ),
    pytest.param(
        _jsonl(STANDARD, CONVERSATIONAL),
        "line 2: row is in conversational format but the file started in standard format",
        None,
        id="mixed-formats",
    ),
    pytest.param(
        b'{"prompt": "\xff", "chosen": " a", "rejected": " b"}\n',
        "line 1: invalid UTF-8 at byte 12",
        None,
        id="utf8",
    ),
    pytest.param(
        _jsonl(STANDARD | {"weight": -1}),
        "line 1, field 'weight': expected a finite number greater than 0",
        "weight",
        id="w",
    ),
    pytest.param(
        _jsonl(STANDARD) + b"\n\n" + _line(STANDARD | {"prompt": "x" * 300}),
        "line 4: line is ",  # "358 bytes" or "at least 30x bytes", by chunking
        None,
        id="over-long-line",
    ),
    pytest.param(b"", "the file has no rows", None, id="empty-file"),
    pytest.param(b"\n \r\n\t\n", "the file has no rows", None, id="blank-lines-only"),
]


@pytest.mark.parametrize(("data", "message", "param"), BAD_FILES)
@pytest.mark.parametrize("chunk_size", [1, 5, 1 << 20])
def test_bad_input_is_invalid_file_naming_line_and_field(
    data: bytes, message: str, param: str | None, chunk_size: int
) -> None:
    with pytest.raises(InvalidFile) as caught:
        validate_stream(_chunks(data, chunk_size), max_line_bytes=300, max_total_bytes=10_000)
    error = caught.value
    assert error.status_code == 400 and error.code == "invalid_file"
    assert error.message.startswith(message), error.message
    assert error.param == param


def test_over_the_size_limit_is_413_naming_the_line_and_raised_while_streaming() -> None:
    data = _jsonl(*[STANDARD] * 10)
    validator = DatasetValidator(max_total_bytes=len(_line(STANDARD)) * 3 + 5)
    with pytest.raises(FileTooLarge) as caught:
        for chunk in _chunks(data, 16):
            validator.feed(chunk)
    error = caught.value
    assert isinstance(error, PayloadTooLarge) and error.status_code == 413
    assert error.message.startswith("line 4: the file is over the ")
    with pytest.raises(FileTooLarge):
        validator.finish()


def test_bad_rows_wait_for_finish_but_an_over_long_line_fails_at_once() -> None:
    validator = DatasetValidator(max_line_bytes=100)
    validator.feed(b"{oops\n" + _line(STANDARD))
    with pytest.raises(InvalidFile) as caught:
        validator.feed(b"x" * 101)
    assert caught.value.message == (
        "2 invalid rows: line 1: not valid JSON: Expecting property name enclosed in double quotes at "
        "column 2; line 3: line is at least 101 bytes, over the 100-byte limit"
    )
    with pytest.raises(InvalidFile):
        validator.feed(_line(STANDARD))


def test_the_first_ten_errors_are_listed_and_all_are_counted() -> None:
    rows = [STANDARD | {"chosen": ""} if i % 2 else STANDARD for i in range(60)]
    with pytest.raises(InvalidFile) as caught:
        validate_stream([_jsonl(*rows)])
    message = caught.value.message
    assert message.startswith(
        "30 invalid rows (10 listed): line 2, field 'chosen': empty completion; line 4, "
    )
    assert message.count("empty completion") == 10 and "line 20," in message and "line 22," not in message
    assert caught.value.param == "chosen"


def test_max_errors_is_configurable() -> None:
    with pytest.raises(InvalidFile) as caught:
        validate_stream([b"1\n2\n3\n"], max_errors=2)
    assert caught.value.message == (
        "3 invalid rows (2 listed): line 1: expected a JSON object, got int; "
        "line 2: expected a JSON object, got int"
    )
    with pytest.raises(ValueError, match="max_errors"):
        DatasetValidator(max_errors=0)


def test_the_format_comes_from_the_first_valid_row() -> None:
    with pytest.raises(InvalidFile) as caught:
        validate_stream([b"{oops\n" + _jsonl(CONVERSATIONAL, STANDARD)])
    message = caught.value.message
    assert message.startswith("2 invalid rows: line 1: not valid JSON")
    assert "line 3: row is in standard format but the file started in conversational format" in message


def test_json_nested_too_deep_is_a_row_error() -> None:
    deep = b'{"prompt": "p", "chosen": " a", "rejected": " b", "metadata": ' + b"[" * 40 + b"]" * 40 + b"}\n"
    with pytest.raises(InvalidFile, match=r"^line 1: JSON nested deeper than 32 levels"):
        validate_stream([deep])
