"""Rows decoded a batch at a time by msgspec's typed JSON decoder: the upload's fast path.

It only vouches for a batch in which every line is a row of the file's format that
`parse_preference_line` would accept with the same values. For anything else (a blank line, a
message with fields beyond role and content, another format, a bad row, JSON that msgspec reads more
strictly than Python's `json`, such as NaN or a lone surrogate) it answers None and the caller
parses the batch row by row, which gives the trainer's exact verdict and messages. Each format has
a strict decoder (no unknown fields) and, for batches with fields outside the format (a `source`
column), a lenient one that skips them, which only runs where `_skippable`
says that skipping cannot hide an error.
Optional fields go through the trainer's own checks (`optional_fields`), so there is one definition
of each rule; the message-list rules are restated here as plain predicates, and
tests/datasets/test_fast_path.py holds both paths to the same verdicts.
"""

import contextlib
import functools
import json
import operator
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple

import msgspec

from alignd.contract import DataFormat
from alignd.contract.preference import (
    MAX_JSON_DEPTH,
    MAX_LINE_BYTES,
    OPENAI_FIELDS,
    RowError,
    json_depth,
    optional_fields,
)
from alignd.datasets.lines import LineBatch
from alignd.datasets.rows import Rows, Text, Turns


class _Row(msgspec.Struct, forbid_unknown_fields=True, gc=False, kw_only=True):
    """The optional fields every format may carry; any other unknown field fails decoding."""

    id: Any = msgspec.UNSET
    weight: Any = msgspec.UNSET
    agreement: Any = msgspec.UNSET
    votes: Any = msgspec.UNSET
    metadata: Any = msgspec.UNSET


_OPTIONAL = _Row.__struct_fields__


NoTools = Annotated[list[Any], msgspec.Meta(max_length=0)]
"""OpenAI's `"tools": []`: no tools. A row that offers tools fails typed decoding and goes row by row, where
their rules (`contract.tools`) are checked."""


class _StandardRow(_Row, kw_only=True):
    prompt: str
    chosen: str
    rejected: str


class _ConversationalRow(_Row, kw_only=True):
    chosen: Turns
    rejected: Turns
    prompt: Turns | msgspec.UnsetType = msgspec.UNSET
    tools: NoTools | msgspec.UnsetType = msgspec.UNSET
    parallel_tool_calls: bool | msgspec.UnsetType = msgspec.UNSET


class _OpenAIInput(msgspec.Struct, forbid_unknown_fields=True, gc=False, kw_only=True):
    messages: Turns
    tools: NoTools | msgspec.UnsetType = msgspec.UNSET
    parallel_tool_calls: bool | msgspec.UnsetType = msgspec.UNSET


class _OpenAIRow(_Row, kw_only=True):
    input: _OpenAIInput
    preferred_output: Turns
    non_preferred_output: Turns


Columns = tuple[Sequence[Text], Sequence[Text], Sequence[Text]]
"""Prompts, chosen and rejected of a batch."""


def _standard_columns(rows: list[_StandardRow]) -> Columns | None:
    chosen = [row.chosen for row in rows]
    rejected = [row.rejected for row in rows]
    if not all(map(str.strip, chosen)) or not all(map(str.strip, rejected)):
        return None
    return [row.prompt for row in rows], chosen, rejected


def _conversational_columns(rows: list[_ConversationalRow]) -> Columns | None:
    parts = [
        _split_prompt(row) if row.prompt is msgspec.UNSET else (row.prompt, row.chosen, row.rejected)
        for row in rows
    ]
    return _checked(*zip(*parts, strict=True)) if parts else ([], [], [])


def _split_prompt(row: _ConversationalRow) -> tuple[Turns, Turns, Turns]:
    """Chosen and rejected are whole conversations; the prompt is the turns they share."""
    chosen, rejected = row.chosen, row.rejected
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _openai_columns(rows: list[_OpenAIRow]) -> Columns | None:
    prompts = [row.input.messages for row in rows]
    if any(message.role == "tool" for prompt in prompts for message in prompt):
        return None  # a tool turn without the `tool_call_id` OpenAI requires (it would be an extra field)
    chosen = [row.preferred_output for row in rows]
    rejected = [row.non_preferred_output for row in rows]
    return _checked(prompts, chosen, rejected)


def _checked(prompts: Sequence[Turns], chosen: Sequence[Turns], rejected: Sequence[Turns]) -> Columns | None:
    """The columns, if every prompt and completion keeps the message-list rules."""
    if (
        all(map(_good_prompt, prompts))
        and all(map(_good_completion, chosen))
        and all(map(_good_completion, rejected))
    ):
        return prompts, chosen, rejected
    return None


def _good_prompt(prompt: Turns) -> bool:
    return bool(prompt) and prompt[-1].role != "assistant"


def _good_completion(messages: Turns) -> bool:
    """Assistant turns only, at least one with content that is not blank."""
    if len(messages) == 1:
        return messages[0].role == "assistant" and bool(messages[0].content.strip())
    roles = {message.role for message in messages}
    return roles == {"assistant"} and any(message.content.strip() for message in messages)


def _lenient(row_type: type[_Row], *fields: tuple[str, Any, Any]) -> type[msgspec.Struct]:
    """`row_type`, skipping unknown fields; `fields` adds or retypes some."""
    name = f"_Lenient{row_type.__name__.lstrip('_')}"
    return msgspec.defstruct(
        name, fields, bases=(row_type,), forbid_unknown_fields=False, kw_only=True, gc=False
    )


_LenientOpenAIInput = msgspec.defstruct(
    "_LenientOpenAIInput", [], bases=(_OpenAIInput,), forbid_unknown_fields=False, gc=False, kw_only=True
)
_STEERING = [(name, Any, msgspec.UNSET) for name in OPENAI_FIELDS]


class _Format(NamedTuple):
    strict: msgspec.json.Decoder[Any]
    lenient: msgspec.json.Decoder[Any]
    """Skips fields outside the format, as `parse_preference_line` ignores them (`_skippable` first)."""
    columns: Callable[[list[Any]], Columns | None]
    steered: bool
    """Its lenient rows carry `OPENAI_FIELDS`, all UNSET unless the row is really in OpenAI format."""


_FORMATS = {
    DataFormat.standard: _Format(
        msgspec.json.Decoder(_StandardRow),
        msgspec.json.Decoder(_lenient(_StandardRow, *_STEERING)),
        _standard_columns,
        True,
    ),
    DataFormat.conversational: _Format(
        msgspec.json.Decoder(_ConversationalRow),
        msgspec.json.Decoder(_lenient(_ConversationalRow, *_STEERING)),
        _conversational_columns,
        True,
    ),
    DataFormat.openai: _Format(
        msgspec.json.Decoder(_OpenAIRow),
        msgspec.json.Decoder(_lenient(_OpenAIRow, ("input", _LenientOpenAIInput, msgspec.NODEFAULT))),
        _openai_columns,
        False,
    ),
}
_OPTIONAL_VALUES = operator.attrgetter(*_OPTIONAL)
_NONE_SET = (msgspec.UNSET,) * len(_OPTIONAL)
_STEERING_VALUES: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*OPENAI_FIELDS)
_UNSTEERED = (msgspec.UNSET,) * len(OPENAI_FIELDS)


def decode_rows(batch: LineBatch, expected: DataFormat | None) -> tuple[DataFormat, Rows] | None:
    """The batch's rows and their format (`expected`, or any format when None), or None when the batch
    must be parsed row by row."""
    lines = batch.lines
    if max(map(len, lines)) > MAX_LINE_BYTES:
        return None
    joined = b"\n".join(lines)
    skippable = functools.cache(functools.partial(_skippable, lines, joined))
    for form in (expected,) if expected is not None else DataFormat:
        spec = _FORMATS[form]
        decoded = _decode(spec, joined, skippable)
        if decoded is not None:
            rows = _rows(batch, decoded, spec.columns, strings=form is DataFormat.standard)
            return None if rows is None else (form, rows)
    return None


def _decode(spec: _Format, joined: bytes, skippable: Callable[[], bool]) -> list[Any] | None:
    """Strictly, or else skipping unknown fields where that is safe."""
    with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):
        return spec.strict.decode_lines(joined)
    if not skippable():
        return None
    try:
        decoded = spec.lenient.decode_lines(joined)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if not spec.steered or list(map(_STEERING_VALUES, decoded)).count(_UNSTEERED) == len(decoded):
        return decoded
    return None


def _skippable(lines: Sequence[bytes], joined: bytes) -> bool:
    """Whether msgspec may skip this batch's unknown fields unread: it checks their JSON syntax, but not
    what Python's `json` (and then `parse_preference_line`) would also refuse in them, namely invalid
    UTF-8, integers over Python's digit limit, and nesting over `MAX_JSON_DEPTH`. A batch with a long
    run of digits goes row by row, even if it would be fine."""
    if not joined.isascii():
        try:
            joined.decode("utf-8")
        except UnicodeDecodeError:
            return False
    if not all(map(_shallow, lines)):
        return False
    digits = sys.get_int_max_str_digits()
    if digits and len(joined) > digits:
        return _DIGIT * (digits + 1) not in joined.translate(_DIGITS_ALIKE)
    return True


def _shallow(line: bytes) -> bool:
    """Nested no deeper than `MAX_JSON_DEPTH`: certain with fewer brackets than that, else parsed to see."""
    if line.count(b"{") + line.count(b"[") <= MAX_JSON_DEPTH:
        return True
    try:
        return json_depth(json.loads(line)) <= MAX_JSON_DEPTH
    except (ValueError, RecursionError):
        return False


_DIGIT = b"0"
_DIGITS_ALIKE = bytes(_DIGIT[0] if b"0"[0] <= code <= b"9"[0] else b"x"[0] for code in range(256))
"""Every ASCII digit as "0" and every other byte not: a run of digits becomes a run of zeros, which
`in` finds far faster than a regular expression."""


def _rows(
    batch: LineBatch, decoded: list[Any], columns: Callable[[Any], Columns | None], *, strings: bool
) -> Rows | None:
    if len(decoded) != len(batch.lines):  # blank lines are skipped by the decoder
        return None
    texts = columns(decoded)
    if texts is None:
        return None
    prompts, chosen, rejected = texts
    weights: list[float] | None = None
    agreement: list[float | None] | None = None
    optional = list(map(_OPTIONAL_VALUES, decoded))
    extended = [] if optional.count(_NONE_SET) == len(optional) else _with_optional_fields(optional)
    for index in extended:
        fields = _optional(decoded[index], batch.first + index)
        if fields is None:
            return None
        if "weight" in fields:
            weights = weights or [1.0] * len(decoded)
            weights[index] = fields["weight"]
        if "agreement" in fields:
            agreement = agreement or [None] * len(decoded)
            agreement[index] = fields["agreement"]
    return Rows(
        lines=range(batch.first, batch.first + len(batch.lines)),
        prompts=prompts,
        chosen=chosen,
        rejected=rejected,
        line_bytes=list(map(len, batch.lines)),
        strings=strings,
        weights=weights,
        agreement=agreement,
    )


def _with_optional_fields(optional: Sequence[tuple[Any, ...]]) -> list[int]:
    return [index for index, values in enumerate(optional) if any(v is not msgspec.UNSET for v in values)]


def _optional(row: _Row, line: int) -> dict[str, Any] | None:
    """The row's checked optional fields, or None when they break a rule (or nest too deep)."""
    present = {name: value for name in _OPTIONAL if (value := getattr(row, name)) is not msgspec.UNSET}
    if any(json_depth(value, 2) > MAX_JSON_DEPTH for value in present.values()):
        return None
    try:
        return optional_fields(present, line)
    except RowError:
        return None
