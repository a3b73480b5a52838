"""Standard-format rows decoded a batch at a time by msgspec's typed JSON decoder.

This is the upload's fast path. It only vouches for a batch in which every line is a standard row
that `parse_preference_line` would accept with the same values; for anything else (a blank line,
an unknown field, another format, a bad row, JSON that msgspec reads more strictly than Python's
`json`, such as NaN or a lone surrogate) it answers None and the caller parses the batch row by row,
which gives the trainer's exact verdict and messages. Optional fields go through the trainer's own
checks (`optional_fields`), so there is one definition of each rule.
"""

import operator
from typing import Any

import msgspec

from alignd.contract.preference import MAX_JSON_DEPTH, MAX_LINE_BYTES, RowError, json_depth, optional_fields
from alignd.datasets.lines import LineBatch
from alignd.datasets.rows import Rows


class _StandardRow(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    prompt: str
    chosen: str
    rejected: str
    id: Any = msgspec.UNSET
    weight: Any = msgspec.UNSET
    agreement: Any = msgspec.UNSET
    votes: Any = msgspec.UNSET
    metadata: Any = msgspec.UNSET


_OPTIONAL = ("id", "weight", "agreement", "votes", "metadata")
_OPTIONAL_VALUES = operator.attrgetter(*_OPTIONAL)
_NONE_SET = (msgspec.UNSET,) * len(_OPTIONAL)
_DECODER = msgspec.json.Decoder(_StandardRow)


def decode_standard(batch: LineBatch) -> Rows | None:
    """The batch's rows, or None when the batch must be parsed row by row."""
    lines = batch.lines
    if max(map(len, lines)) > MAX_LINE_BYTES:
        return None
    try:
        decoded = _DECODER.decode_lines(b"\n".join(lines))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if len(decoded) != len(lines):  # blank lines are skipped by the decoder
        return None
    chosen = [row.chosen for row in decoded]
    rejected = [row.rejected for row in decoded]
    if not all(map(str.strip, chosen)) or not all(map(str.strip, rejected)):
        return None
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
        lines=range(batch.first, batch.first + len(lines)),
        prompts=[row.prompt for row in decoded],
        chosen=chosen,
        rejected=rejected,
        line_bytes=list(map(len, lines)),
        strings=True,
        weights=weights,
        agreement=agreement,
    )


def _with_optional_fields(optional: list[tuple[Any, ...]]) -> list[int]:
    return [index for index, values in enumerate(optional) if any(v is not msgspec.UNSET for v in values)]


def _optional(row: _StandardRow, line: int) -> dict[str, Any] | None:
    """The row's checked optional fields, or None when they break a rule (or nest too deep)."""
    present = {name: value for name in _OPTIONAL if (value := getattr(row, name)) is not msgspec.UNSET}
    if any(json_depth(value, 2) > MAX_JSON_DEPTH for value in present.values()):
        return None
    try:
        return optional_fields(present, line)
    except RowError:
        return None
