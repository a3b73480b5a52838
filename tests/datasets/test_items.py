"""`alignd.datasets.items`: eval item files validated while they stream, whatever the chunk sizes."""

import hashlib

import pytest

from alignd.datasets.items import ItemsValidator
from alignd.errors import InvalidFile, PayloadTooLarge

BODY = (
    b'{"question": "2 + 2?", "answer": "4"}\r\n\n'
    b'{"item": {"q": "x"}, "sample": {"output_text": "y"}}\n'
    b'{"a": [1]}'
)


@pytest.mark.parametrize("chunk_size", [1, 7, len(BODY)])
def test_items_are_counted_across_any_chunking(chunk_size: int) -> None:
    validator = ItemsValidator()
    for start in range(0, len(BODY), chunk_size):
        validator.feed(BODY[start : start + chunk_size])
    summary = validator.finish()
    assert summary.rows == 3
    assert summary.bytes == len(BODY)
    assert summary.sha256 == hashlib.sha256(BODY).hexdigest()


def test_a_line_over_the_limit_and_a_file_over_the_limit() -> None:
    with pytest.raises(InvalidFile, match="line 2: line is"):
        validator = ItemsValidator(max_line_bytes=16)
        validator.feed(b'{"a": 1}\n{"a": "a long value"}\n')
        validator.finish()
    with pytest.raises(PayloadTooLarge, match="over the 8-byte limit"):
        ItemsValidator(max_total_bytes=8).feed(b'{"a": 1}\n{"b": 2}\n')


def test_too_deep_items_are_refused() -> None:
    deep = b'{"a": ' * 40 + b"1" + b"}" * 40 + b"\n"
    validator = ItemsValidator()
    validator.feed(deep)
    with pytest.raises(InvalidFile, match="nested deeper than 32 levels"):
        validator.finish()
