"""The upload's fast path (standard rows decoded a batch at a time by msgspec) gives exactly what
parsing every row with the trainer's `parse_preference_line` gives: the same summary and report for
a good file, the same error for a bad one, whatever mix of rows and chunking."""

import json
import random

import pytest

from alignd.datasets import DatasetSummary, DatasetValidator
from alignd.datasets.normalise import normalise, normalise_many
from alignd.errors import AligndError


def _row(
    prompt: str = "Name a fruit.", chosen: str = " An apple.", rejected: str = " B.", **extra: object
) -> bytes:
    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}).encode()


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


BASE = b'{"prompt":"P","chosen":"C","rejected":"R"'
GOOD = [
    _row(),
    _row(),  # an exact duplicate
    _row("name a FRUIT", " A pear.", " A cat."),  # a near duplicate
    _row("", " yes", " no"),  # an empty prompt is allowed
    _row("Same?", " same", " same"),
    _row("Héllo, wörld!", " ça va", " 😀", id="x1"),
    _row("tabs\tand\u00a0spaces", " a\u2028b", " \u0000c", id=7),
    _row("w", " a", " b", weight=2.5),
    _row("w", " a", " b", weight=1),
    _row("a", " a", " b", agreement=0.25),
    _row("v", " a", " b", votes=[3, 1]),
    _row("v", " a", " b", votes=0.75, agreement=0.1),  # votes is read after agreement
    _row("m", " a", " b", metadata={"source": "x", "tags": ["a", {"b": None}]}),
    _row("d", " a", " b", metadata={"deep": _nested(29)}),  # 32 levels in all: allowed
    json.dumps({"chosen": " first", "rejected": " second", "prompt": "keys in another order"}).encode(),
    b'  {"prompt":"spaced","chosen":" a","rejected":" b"}  ',
    BASE + b',"prompt":"duplicate key, last wins"}',
    b'{"prompt":"escaped \\u0041\\n\\ud83d\\ude00","chosen":" \\/a","rejected":" b"}',
    b'{"prompt":"numbers","chosen":" a","rejected":" b","weight":1e2,"agreement":0,"id":-0}',
]
ODD = [
    b"",  # blank lines are skipped, not rows
    b"   ",
    BASE + b',"extra":"an unknown field"}',
    BASE + b',"weight":NaN}',
    BASE + b',"metadata":{"x":Infinity}}',
    BASE + b',"metadata":{"x":1e400}}',
    b'{"prompt":"\\ud800 lone surrogate","chosen":" a","rejected":" b"}',
    BASE + b',"id":' + b"1" * 30 + b"}",  # a big integer id
]
BAD = [
    b"not json",
    b"[1, 2]",
    b'{"prompt":"p","chosen":" a"}',
    b'{"prompt":"p","chosen":" a","rejected":"   "}',
    b'{"prompt":"p","chosen":"","rejected":" b"}',
    b'{"prompt":1,"chosen":" a","rejected":" b"}',
    b'{"chosen":" a","rejected":" b"}',
    _row(weight=0),
    _row(weight=True),
    _row(weight="1"),
    _row(agreement=1.5),
    _row(votes=[0, 0]),
    _row(votes=[True, 1]),
    _row(id=True),
    _row(id=1.5),
    _row(metadata=[1]),
    _row(metadata={"deep": _nested(40)}),
    BASE + b',"weight":' + b"1" * 400 + b"}",  # an integer too large for a float
    BASE + b',"metadata":' + b"1" * 5000 + b"}",  # over Python's digit limit
    b'{"prompt":"p\xff","chosen":" a","rejected":" b"}',
    BASE + b',"\xed\xa0\x80":1}',  # invalid UTF-8 in a key
    b'{"prompt":"control \x01 character","chosen":" a","rejected":" b"}',
    BASE + b"} trailing",
    b'{"input":{"messages":[]},"prompt":"p","chosen":" a","rejected":" b"}',
    json.dumps(
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        }
    ).encode(),  # another format after standard rows
]


def _outcome(data: bytes, chunk: int, *, row_by_row: bool) -> DatasetSummary | tuple[str, str, str | None]:
    validator = DatasetValidator(row_by_row=row_by_row, max_errors=3)
    try:
        for start in range(0, len(data), chunk):
            validator.feed(data[start : start + chunk])
        return validator.finish()
    except AligndError as error:
        return type(error).__name__, error.message, error.param


@pytest.mark.parametrize("seed", range(40))
def test_fast_path_matches_row_by_row_parsing(seed: int) -> None:
    rng = random.Random(seed)
    pool = GOOD * 3 + ODD + (BAD if seed % 2 else [])
    lines = [rng.choice(pool) for _ in range(rng.randint(1, 60))]
    ending = rng.choice([b"\n", b"\r\n"])
    data = ending.join(lines) + rng.choice([ending, b""])
    chunk = rng.choice([7, 64, 1000, len(data) + 1])
    fast = _outcome(data, chunk, row_by_row=False)
    assert fast == _outcome(data, chunk, row_by_row=True)


@pytest.mark.parametrize("line", [*GOOD, *ODD, *BAD])
def test_each_row_alone_gets_the_row_by_row_verdict(line: bytes) -> None:
    data = _row() + b"\n" + line + b"\n" + _row("after") + b"\n"
    assert _outcome(data, 1 << 20, row_by_row=False) == _outcome(data, 1 << 20, row_by_row=True)


def test_good_rows_take_the_fast_path_and_the_report_is_the_same() -> None:
    data = b"\n".join(GOOD * 50) + b"\n"
    fast = _outcome(data, 4096, row_by_row=False)
    assert isinstance(fast, DatasetSummary) and fast.rows == len(GOOD) * 50
    assert fast == _outcome(data, 4096, row_by_row=True)
    assert fast.report.exact_duplicates.count > 0 and fast.report.near_duplicates.count > 0


TEXTS = [
    "",
    " ",
    "Hello,  World!",
    "  HELLO\tworld ",
    "a\x0b\x0c\x1c\x1d\x1e\x1fb",
    "snake_case and CAPS",
    "ends with space ",
    "\x00 null inside",
    "héllo wörld",
    "“quoted” text",
    "ǅ titlecase ß",
    "...",
    "line\r\nbreak",
]


@pytest.mark.parametrize("seed", range(20))
def test_normalise_many_matches_normalise(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "aZ _-.,!?\t\n\x0b\x1f\x7f09"
    texts = [
        rng.choice(TEXTS) if rng.random() < 0.3 else "".join(rng.choices(alphabet, k=rng.randint(0, 12)))
        for _ in range(rng.randint(1, 30))
    ]
    ascii_only = [text for text in texts if text.isascii() and "\x00" not in text]
    for batch in (texts, ascii_only):
        assert normalise_many(batch) == [normalise(text).encode() for text in batch]
