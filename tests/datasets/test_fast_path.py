"""The upload's fast path (rows decoded a batch at a time by msgspec) gives exactly what
parsing every row with the trainer's `parse_preference_line` gives: the same summary and report for
a good file, the same error for a bad one, whatever mix of rows and chunking."""

import json
import random
from collections.abc import Callable

import pytest

from alignd.datasets import DatasetSummary, DatasetValidator, LineBatch
from alignd.datasets.normalise import normalise, normalise_many
from alignd.datasets.typed_rows import decode_rows
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
    BASE + b',"id":' + b"1" * 30 + b"}",  # a big integer id: both read it exactly
]
ODD = [
    b"",  # blank lines are skipped, not rows
    b"   ",
    BASE + b',"weight":NaN}',
    BASE + b',"metadata":{"x":Infinity}}',
    BASE + b',"metadata":{"x":1e400}}',
    b'{"prompt":"\\ud800 lone surrogate","chosen":" a","rejected":" b"}',
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


def _turn(role: str, content: str, **extra: object) -> dict[str, object]:
    return {"role": role, "content": content, **extra}


SYSTEM, USER = _turn("system", "Be brief."), _turn("user", "Name a fruit.")
A, B = [_turn("assistant", " An apple.")], [_turn("assistant", " B.")]


def _conversation(
    prompt: object = (SYSTEM, USER), chosen: object = A, rejected: object = B, **extra: object
) -> bytes:
    row = {"chosen": chosen, "rejected": rejected, **extra}
    if prompt is not None:
        row["prompt"] = list(prompt) if isinstance(prompt, tuple) else prompt
    return json.dumps(row).encode()


def _openai(
    prompt: object = (SYSTEM, USER), chosen: object = A, rejected: object = B, **extra: object
) -> bytes:
    source = {"messages": list(prompt) if isinstance(prompt, tuple) else prompt}
    return json.dumps(
        {"input": source, "preferred_output": chosen, "non_preferred_output": rejected, **extra}
    ).encode()


def _message_rows(row: Callable[..., bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """GOOD, ODD and BAD rows of a message-list format, `row` writing one."""
    good = [
        row(),
        row(),  # an exact duplicate
        row((SYSTEM, _turn("user", "name a FRUIT")), [_turn("assistant", " A pear.")]),  # a near duplicate
        row(chosen=B),  # chosen equals rejected
        row((USER,), [_turn("assistant", " "), _turn("assistant", "x")]),  # one blank message
        row((_turn("user", "Héllo 😀\u2028"), _turn("tool", "{}")), [_turn("assistant", " ça va")]),
        row((_turn("developer", ""),), A),  # an empty prompt text is allowed
        row(weight=2.5, id="x1"),
        row(agreement=0.25, metadata={"source": "x"}),
        row(votes=[3, 1], id=7),
        row([{"content": "keys in another order", "role": "user"}]),
    ]
    odd = [
        b"",
        b"   ",
        row((_turn("user", "hi", name="bob"),)),  # a message field beyond role and content
        row(metadata={"x": float("nan")}),
        row((_turn("user", "\ud800 lone surrogate"),)),
    ]
    bad = [
        b"not json",
        row((_turn("robot", "hi"),)),
        row((_turn("user", None),)),
        row((_turn("user", 1),)),
        row(("not a message",)),
        row((USER, _turn("assistant", "ends with an answer"))),
        row(()),
        row(chosen=[_turn("user", "not an assistant")]),
        row(chosen=[_turn("assistant", "  ")]),
        row(chosen=[*A, _turn("user", "a user turn in a completion")]),
        row(rejected=[_turn("assistant", " "), _turn("assistant", "")]),  # every message blank
        row(rejected=[]),
        row(weight=0),
        row(metadata={"deep": _nested(40)}),
        row("a string prompt"),
        _row(),  # another format after message rows
    ]
    return good, odd, bad


CONVERSATIONAL = _message_rows(_conversation)
CONVERSATIONAL[0].extend(
    [
        _conversation(None, [USER, *A], [USER, *B]),  # the prompt is the turns chosen and rejected share
        _conversation(None, [SYSTEM, USER, *A, USER, *A], [SYSTEM, USER, *A, USER, *B]),
    ]
)
CONVERSATIONAL[2].extend(
    [
        _conversation(None, A, B),  # no shared turns
        _conversation(None, [USER, *A], [USER, *A]),  # all turns shared: empty completions
        _conversation(None, [USER, *A], "not a list"),
        _openai(),
    ]
)
OPENAI = _message_rows(_openai)
# OpenAI's tool turns name the call they answer, which this one does not.
OPENAI[2].append(OPENAI[0].pop(5))

TOOL = {"type": "function", "function": {"name": "find", "description": "Finds.", "parameters": {}}}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "find", "arguments": "{}"}}],
}
ANSWER = _turn("tool", "found", tool_call_id="c1")


def _with_call(**function: object) -> list[dict[str, object]]:
    call = {"id": "c1", "type": "function", "function": {"name": "find", "arguments": "{}", **function}}
    return [CALL | {"tool_calls": [call]}]


# Rows with tools and tool calls are good, but only the row-by-row parser reads them.
CONVERSATIONAL[1].extend(
    [
        _conversation((USER,), [CALL], tools=[TOOL]),
        _conversation((USER, CALL, _turn("tool", "found", name="find")), A, tools=[TOOL]),
    ]
)
CONVERSATIONAL[2].append(_conversation((USER,), A, tools={"find": TOOL}))
OPENAI[1].extend(
    [
        json.dumps(
            {
                "input": {"messages": [USER], "tools": [TOOL]},
                "preferred_output": A,
                "non_preferred_output": [CALL],
            }
        ).encode(),
        _openai((USER, CALL, ANSWER), A, B),
        _openai((USER,), [CALL | {"content": "Let me look."}]),  # content and a call
    ]
)
OPENAI[2].extend(
    [
        _openai((USER, CALL, _turn("tool", "found", tool_call_id="c2")), A),  # answers no call
        _openai((USER, _turn("tool", "found", tool_call_id="c1")), A),  # before the call
        _openai((USER,), _with_call(arguments={"q": 1})),  # arguments as an object, not a string
        _openai((USER,), _with_call(arguments="{not json")),
        _openai((USER,), _with_call(arguments="[1]")),
        _openai((USER,), _with_call(name="has space")),
        _openai((USER,), [CALL | {"tool_calls": []}]),
        _openai((_turn("user", "hi", tool_calls=CALL["tool_calls"]),), A),  # a user turn calling
        json.dumps(
            {"input": {"messages": [USER], "tools": TOOL}, "preferred_output": A, "non_preferred_output": B}
        ).encode(),
        json.dumps(
            {
                "input": {"messages": [USER], "tools": [{"type": "function"}]},
                "preferred_output": A,
                "non_preferred_output": B,
            }
        ).encode(),
        json.dumps(
            {
                "input": {"messages": [USER], "parallel_tool_calls": "yes"},
                "preferred_output": A,
                "non_preferred_output": B,
            }
        ).encode(),
    ]
)
OPENAI[0].append(
    json.dumps(  # as OpenAI's guide writes it
        {
            "input": {"messages": [USER], "tools": [], "parallel_tool_calls": True},
            "preferred_output": A,
            "non_preferred_output": B,
        }
    ).encode()
)
OPENAI[2].extend(
    [
        json.dumps({"input": [USER], "preferred_output": A, "non_preferred_output": B}).encode(),
        json.dumps({"input": {"msgs": [USER]}, "preferred_output": A, "non_preferred_output": B}).encode(),
        json.dumps({"input": {"messages": [USER]}, "preferred_output": A}).encode(),
        _conversation(),
    ]
)


def _add_unknown_fields(pools: tuple[list[bytes], list[bytes], list[bytes]], other_format: bytes) -> None:
    """Rows with a field outside the format, which `parse_preference_line` ignores unless its JSON is
    bad; `other_format` names a field that makes a row another format."""
    good, odd, bad = pools

    def extra(value: bytes, name: bytes = b"source") -> bytes:
        return good[0][:-1] + b',"' + name + b'":' + value + b"}"

    good += [
        extra(b'"hh-rlhf"'),
        extra(json.dumps({"tags": ["a", {"b": None}], "score": 7.5, "big": 10**400}).encode()),
        extra(json.dumps(_nested(29)).encode()),  # 31 levels in all: allowed
        extra(json.dumps([[]] * 40).encode()),  # shallow, with more brackets than the depth limit
    ]
    odd += [
        extra(b"NaN"),
        extra(b'"\\ud800"'),
    ]
    bad += [
        extra(json.dumps(_nested(40)).encode()),
        extra(b'"\xff"'),  # invalid UTF-8
        extra(b"1" * 5000),  # over Python's digit limit
        extra(b"1", name=b"\xff"),
        extra(b"[1,]"),
        b"\xef\xbb\xbf" + good[0],  # a byte-order mark
        extra(b'{"messages":[]}', name=other_format),  # last
    ]


_add_unknown_fields((GOOD, ODD, BAD), b"input")
_add_unknown_fields(CONVERSATIONAL, b"preferred_output")
OPENAI[2].append(
    json.dumps(
        {
            "input": {"messages": [USER], "tools": _nested(40)},
            "preferred_output": A,
            "non_preferred_output": B,
        }
    ).encode()
)
_add_unknown_fields(OPENAI, b"chosen")
OPENAI[0].append(OPENAI[2].pop())  # in OpenAI format, `chosen` is just another field
FORMATS = {"standard": (GOOD, ODD, BAD), "conversational": CONVERSATIONAL, "openai": OPENAI}


def _outcome(data: bytes, chunk: int, *, row_by_row: bool) -> DatasetSummary | tuple[str, str, str | None]:
    validator = DatasetValidator(row_by_row=row_by_row, max_errors=3)
    try:
        for start in range(0, len(data), chunk):
            validator.feed(data[start : start + chunk])
        return validator.finish()
    except AligndError as error:
        return type(error).__name__, error.message, error.param


@pytest.mark.parametrize("form", FORMATS)
@pytest.mark.parametrize("seed", range(40))
def test_fast_path_matches_row_by_row_parsing(form: str, seed: int) -> None:
    good, odd, bad = FORMATS[form]
    rng = random.Random(seed)
    pool = good * 3 + odd + (bad if seed % 2 else [])
    lines = [rng.choice(pool) for _ in range(rng.randint(1, 60))]
    ending = rng.choice([b"\n", b"\r\n"])
    data = ending.join(lines) + rng.choice([ending, b""])
    chunk = rng.choice([7, 64, 1000, len(data) + 1])
    fast = _outcome(data, chunk, row_by_row=False)
    assert fast == _outcome(data, chunk, row_by_row=True)


@pytest.mark.parametrize(
    ("form", "line"), [(form, line) for form, pools in FORMATS.items() for pool in pools for line in pool]
)
def test_each_row_alone_gets_the_row_by_row_verdict(form: str, line: bytes) -> None:
    first = FORMATS[form][0][0]
    data = first + b"\n" + line + b"\n" + first + b"\n"
    assert _outcome(data, 1 << 20, row_by_row=False) == _outcome(data, 1 << 20, row_by_row=True)


@pytest.mark.parametrize("form", FORMATS)
def test_good_rows_take_the_fast_path_and_the_report_is_the_same(form: str) -> None:
    good, odd, _ = FORMATS[form]
    decoded = decode_rows(LineBatch(1, good), None)
    assert decoded is not None and decoded[0] == form and len(decoded[1]) == len(good)
    assert all(decode_rows(LineBatch(1, [*good, line]), None) is None for line in odd)
    data = b"\n".join(good * 50) + b"\n"
    fast = _outcome(data, 4096, row_by_row=False)
    assert isinstance(fast, DatasetSummary) and fast.rows == len(good) * 50
    assert fast == _outcome(data, 4096, row_by_row=True)
    report = fast.report
    assert report.exact_duplicates.count > 0 and report.near_duplicates.count > 0
    assert report.chosen_equals_rejected.count > 0
    assert report.empty_responses.count > 0 or form == "standard"  # only a message can be blank


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
