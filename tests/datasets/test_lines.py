"""Splitting a chunked stream into numbered lines: the same lines for every chunking, CRLF and a
missing last newline handled, and size limits that name the line and stop early."""

import itertools
import random
from collections.abc import Iterator

import pytest

from alignd.datasets import FileTooLarge, LineBatch, LineSplitter, LineTooLong, split_lines
from alignd.errors import InvalidFile, PayloadTooLarge

DATA = b'{"a": 1}\r\n\n{"b": "\xc3\xa9t\xc3\xa9"}\n  \r\n{"c": 3}\r\n{"d": 4}'
EXPECTED = [
    (1, b'{"a": 1}'),
    (2, b""),
    (3, b'{"b": "\xc3\xa9t\xc3\xa9"}'),
    (4, b"  "),
    (5, b'{"c": 3}'),
    (6, b'{"d": 4}'),
]


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _lines(
    chunks: list[bytes], max_line_bytes: int = 100, max_total_bytes: int | None = None
) -> list[tuple[int, bytes]]:
    return list(split_lines(chunks, max_line_bytes=max_line_bytes, max_total_bytes=max_total_bytes))


@pytest.mark.parametrize("size", range(1, len(DATA) + 1))
def test_every_chunk_size_gives_the_same_lines(size: int) -> None:
    assert _lines(_chunked(DATA, size)) == EXPECTED


def test_crlf_split_across_chunks_and_empty_chunks() -> None:
    assert _lines([b"a\r", b"", b"\nb\r", b"\n", b"c"]) == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert _lines([b"a", b"\r", b"\n", b"\r", b"\n"]) == [(1, b"a"), (2, b"")]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([], []),
        ([b""], []),
        ([b"\n"], [(1, b"")]),
        ([b"x\n"], [(1, b"x")]),
        ([b"x"], [(1, b"x")]),
        ([b"x\r"], [(1, b"x")]),
        ([b"x\n\r"], [(1, b"x"), (2, b"")]),
        ([b"x\r\r\n"], [(1, b"x\r")]),
        ([b"a\rb\n"], [(1, b"a\rb")]),
    ],
)
def test_edges(chunks: list[bytes], expected: list[tuple[int, bytes]]) -> None:
    assert _lines(chunks) == expected


def test_random_streams_match_a_simple_reference() -> None:
    """What the trainer reads: split at LF, drop one CR before it, no line after a final LF."""
    rng = random.Random(7)
    for _ in range(300):
        data = bytes(rng.choice(b"ab\r\n") for _ in range(rng.randrange(40)))
        pieces = data.split(b"\n")
        if pieces[-1] == b"":
            pieces.pop()
        expected = [(n, p[:-1] if p.endswith(b"\r") else p) for n, p in enumerate(pieces, start=1)]
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randrange(6))))
        chunks = [data[i:j] for i, j in itertools.pairwise([0, *cuts, len(data)])]
        assert _lines(chunks) == expected, (data, chunks)


def test_a_line_at_the_limit_passes_and_the_crlf_does_not_count() -> None:
    assert _lines([b"x" * 10 + b"\r\n", b"y" * 10], max_line_bytes=10) == [(1, b"x" * 10), (2, b"y" * 10)]


def test_an_over_long_line_names_its_line_and_the_limit() -> None:
    with pytest.raises(LineTooLong) as caught:
        _lines([b"ok\n\nfine\n" + b"x" * 11 + b"\nnext\n"], max_line_bytes=10)
    error = caught.value
    assert isinstance(error, InvalidFile) and error.status_code == 400
    assert error.message == "line 4: line is 11 bytes, over the 10-byte limit"
    assert (error.line, error.size, error.limit) == (4, 11, 10)


def test_an_over_long_last_line_without_newline() -> None:
    with pytest.raises(LineTooLong, match=r"^line 2: line is at least 12 bytes, over the 10-byte limit$"):
        _lines([b"a\n", b"x" * 6, b"x" * 6], max_line_bytes=10)


def test_an_endless_line_is_refused_as_soon_as_it_passes_the_limit() -> None:
    """The stream never ends; the splitter must stop after about max_line_bytes, not buffer forever."""
    consumed = 0

    def endless() -> Iterator[bytes]:
        nonlocal consumed
        yield b'{"ok": 1}\n'
        while True:
            consumed += 1
            yield b"x" * 1000

    with pytest.raises(
        LineTooLong, match=r"^line 2: line is at least 10000 bytes, over the 9999-byte limit$"
    ):
        for _ in split_lines(endless(), max_line_bytes=9999, max_total_bytes=None):
            pass
    assert consumed == 10


def test_over_the_total_size_names_the_line_that_crossed_it() -> None:
    data = b"1\n22\n333\n4444\n"  # line 3 spans bytes 6..9
    assert _lines([data], max_total_bytes=len(data))[-1] == (4, b"4444")
    with pytest.raises(FileTooLarge) as caught:
        _lines(_chunked(data, 4), max_total_bytes=7)
    error = caught.value
    assert isinstance(error, PayloadTooLarge) and error.status_code == 413 and error.param == "file"
    assert error.message.startswith("line 3: the file is over the 7-byte limit")
    assert error.line == 3


def test_over_the_total_size_raises_before_the_chunk_is_split() -> None:
    splitter = LineSplitter(max_line_bytes=100, max_total_bytes=5)
    assert list(splitter.feed(b"ab\n")) == [LineBatch(1, [b"ab"])]
    with pytest.raises(FileTooLarge, match=r"^line 3: "):
        splitter.feed(b"c\nd\n")


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineSplitter(max_line_bytes=0)
