"""Eval item files (purpose "evals"): one JSON object per line, validated while they stream to the store.

Unlike preference data, an item's fields are the user's: each line must be a JSON object, either the
item itself or OpenAI's `{"item": {...}, "sample": {...}}`, within the same line-length, depth and size
limits as preference files. Bad lines are named (the first few) in one 400, and nothing is stored.
"""

import hashlib
import json
from dataclasses import dataclass

from alignd.contract.preference import MAX_JSON_DEPTH, MAX_LINE_BYTES, json_depth
from alignd.datasets.lines import LineBatch, LineSplitter
from alignd.errors import AligndError, InvalidFile

MAX_ERRORS = 5


@dataclass(frozen=True)
class ItemsSummary:
    rows: int
    bytes: int
    sha256: str


class ItemsValidator:
    """`feed` each chunk, then `finish`; the same push interface as `DatasetValidator`."""

    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES, max_total_bytes: int | None = None) -> None:
        self.rows = 0
        self._lines = LineSplitter(max_line_bytes=max_line_bytes, max_total_bytes=max_total_bytes)
        self._sha256 = hashlib.sha256()
        self._errors: list[str] = []
        self._error_count = 0
        self._failed: AligndError | None = None

    def feed(self, chunk: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        try:
            for batch in self._lines.feed(chunk):
                self._batch(batch)
        except AligndError as exc:
            self._failed = exc
            raise
        self._sha256.update(chunk)

    def finish(self) -> ItemsSummary:
        if self._failed is not None:
            raise self._failed
        try:
            for batch in self._lines.finish():
                self._batch(batch)
        except AligndError as exc:
            self._failed = exc
            raise
        if self._error_count:
            listed = "; ".join(self._errors)
            prefix = f"{self._error_count} invalid lines: " if self._error_count > 1 else ""
            self._failed = InvalidFile(prefix + listed, param="file")
            raise self._failed
        if not self.rows:
            self._failed = InvalidFile("the file has no items", param="file")
            raise self._failed
        return ItemsSummary(rows=self.rows, bytes=self._lines.total_bytes, sha256=self._sha256.hexdigest())

    def _batch(self, batch: LineBatch) -> None:
        for line, raw in enumerate(batch.lines, batch.first):
            if not raw.strip():
                continue
            problem = _problem(raw)
            if problem is None:
                self.rows += 1
                continue
            self._error_count += 1
            if len(self._errors) < MAX_ERRORS:
                self._errors.append(f"line {line}: {problem}")


def _problem(raw: bytes) -> str | None:
    """Why a line is not an item; None when it is one."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not valid JSON ({exc})"
    except RecursionError:
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    if not isinstance(value, dict):
        return 'expected a JSON object: the item, or {"item": {...}}'
    if json_depth(value) > MAX_JSON_DEPTH:
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    if "item" in value and set(value) <= {"item", "sample"} and not isinstance(value["item"], dict):
        return '"item" must be an object'
    return None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
