"""Validate a preference or chat (SFT) file while it streams: rows, format, size, checksum and quality
report. The first row decides the kind: a chat row (`{"messages": [...]}`) makes it a chat file, whose
rows go through `alignd.contract.chat` and `ChatReportBuilder` one by one.

The row rules are the trainer's (`alignd.contract.parse_preference_line`), so a file accepted
here trains. Batches are decoded by msgspec first (`typed_rows`), which accepts only what that
parser accepts, with the same values; every other batch is parsed row by row.
The whole file is read even after a bad row, to list up to `max_errors` of them in one error; only
a size limit stops it early.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NoReturn

from alignd.contract import DataFormat, PreferenceExample, RowError, parse_preference_line
from alignd.contract.chat import CHAT_FORMAT, is_chat_line, parse_chat_line
from alignd.contract.preference import MAX_LINE_BYTES
from alignd.datasets.chat_report import ChatQualityReport, ChatReportBuilder
from alignd.datasets.lines import LineBatch, LineSplitter, LineTooLong
from alignd.datasets.report import QualityReport, QualityReportBuilder
from alignd.datasets.rows import Rows
from alignd.datasets.typed_rows import decode_rows
from alignd.errors import AligndError, InvalidFile

MAX_ERRORS = 10


@dataclass(frozen=True)
class DatasetSummary:
    """A valid file: its one format, row count, size, SHA-256 (hex) and quality report."""

    format: DataFormat | Literal["chat"]
    rows: int
    bytes: int
    sha256: str
    report: QualityReport | ChatQualityReport


class DatasetValidator:
    """Push-style validator: `feed` each chunk as it streams to storage, then `finish`.

    `feed` raises at once when a size limit is passed (`LineTooLong`, an `InvalidFile`, or
    `FileTooLarge`, a `PayloadTooLarge`); bad rows are collected and `finish` raises one
    `InvalidFile` listing the first `max_errors` of them, with `param` the first error's field.
    Once it has raised, the validator raises the same error again.
    """

    def __init__(
        self,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_total_bytes: int | None = None,
        max_errors: int = MAX_ERRORS,
        agreement_threshold: float = 0.5,
        row_by_row: bool = False,
    ) -> None:
        if max_errors < 1:
            raise ValueError("max_errors must be at least 1")
        self.max_errors = max_errors
        self.row_by_row = row_by_row
        """Parse every row with `parse_preference_line`, never the typed batch decoder (the reference
        the fast path is tested against)."""
        self.format: DataFormat | None = None
        self.rows = 0
        self._lines = LineSplitter(max_line_bytes=max_line_bytes, max_total_bytes=max_total_bytes)
        self._sha256 = hashlib.sha256()
        self._report = QualityReportBuilder(agreement_threshold=agreement_threshold)
        self._chat: ChatReportBuilder | None = None
        """Set when the first row is a chat row: the file is SFT data."""
        self._kind_known = False
        self._errors: list[RowError] = []
        self._error_count = 0
        self._failed: AligndError | None = None

    def feed(self, chunk: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        try:
            for batch in self._lines.feed(chunk):
                self._batch(batch)
        except LineTooLong as exc:
            self._fail_on_long_line(exc)
        except AligndError as exc:
            self._failed = exc
            raise
        self._sha256.update(chunk)

    def finish(self) -> DatasetSummary:
        if self._failed is not None:
            raise self._failed
        try:
            for batch in self._lines.finish():
                self._batch(batch)
        except LineTooLong as exc:
            self._fail_on_long_line(exc)
        if self._error_count:
            self._failed = _invalid(self._errors, self._error_count)
            raise self._failed
        if self._chat is not None:
            return self._chat_summary(self._chat)
        if self.format is None:
            self._failed = InvalidFile("the file has no rows")
            raise self._failed
        return DatasetSummary(
            format=self.format,
            rows=self.rows,
            bytes=self._lines.total_bytes,
            sha256=self._sha256.hexdigest(),
            report=self._report.build(),
        )

    def _chat_summary(self, chat: ChatReportBuilder) -> DatasetSummary:
        if not chat.trainable_rows:
            self._failed = InvalidFile(
                "no row has an assistant turn to train on (every row lacks one or gives each weight 0)",
                param="messages",
            )
            raise self._failed
        return DatasetSummary(
            format=CHAT_FORMAT,
            rows=self.rows,
            bytes=self._lines.total_bytes,
            sha256=self._sha256.hexdigest(),
            report=chat.build(),
        )

    def _batch(self, batch: LineBatch) -> None:
        """Rows take the typed batch decoder; whatever it can't vouch for, row by row."""
        if not self._kind_known:
            first = next((raw for raw in batch.lines if raw.strip()), None)
            if first is None:
                return
            self._kind_known = True
            self._chat = ChatReportBuilder() if is_chat_line(first) else None
        if self._chat is not None:
            self._chat_rows(batch, self._chat)
            return
        decoded = None if self.row_by_row else decode_rows(batch, self.format)
        if decoded is None:
            self._rows_one_by_one(batch)
            return
        self.format, rows = decoded
        self.rows += len(rows)
        if not self._error_count:
            self._report.add(rows)

    def _rows_one_by_one(self, batch: LineBatch) -> None:
        examples: list[PreferenceExample] = []
        sizes: list[int] = []
        for line, raw in enumerate(batch.lines, batch.first):
            if not raw.strip():
                continue
            try:
                example = parse_preference_line(raw, line, self.format)
            except RowError as error:
                self._error_count += 1
                if len(self._errors) < self.max_errors:
                    self._errors.append(error)
                continue
            self.format = example.format
            self.rows += 1
            examples.append(example)
            sizes.append(len(raw))
        if examples and not self._error_count:
            self._report.add(Rows.from_examples(examples, sizes))

    def _chat_rows(self, batch: LineBatch, chat: ChatReportBuilder) -> None:
        for line, raw in enumerate(batch.lines, batch.first):
            if not raw.strip():
                continue
            try:
                example = parse_chat_line(raw, line)
            except RowError as error:
                self._error_count += 1
                if len(self._errors) < self.max_errors:
                    self._errors.append(error)
                continue
            self.rows += 1
            if not self._error_count:
                chat.add(example, len(raw))

    def _fail_on_long_line(self, exc: LineTooLong) -> NoReturn:
        """A line over the limit stops validation; it is listed after the bad rows found before it."""
        self._error_count += 1
        self._errors = [*self._errors[: self.max_errors - 1], RowError(exc.line, None, exc.detail)]
        self._failed = _invalid(self._errors, self._error_count)
        raise self._failed from exc


def validate_stream(
    chunks: Iterable[bytes],
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_total_bytes: int | None = None,
    max_errors: int = MAX_ERRORS,
    agreement_threshold: float = 0.5,
) -> DatasetSummary:
    """Validate a whole chunked stream; see `DatasetValidator`."""
    validator = DatasetValidator(
        max_line_bytes=max_line_bytes,
        max_total_bytes=max_total_bytes,
        max_errors=max_errors,
        agreement_threshold=agreement_threshold,
    )
    for chunk in chunks:
        validator.feed(chunk)
    return validator.finish()


def _invalid(errors: list[RowError], count: int) -> InvalidFile:
    listed = "; ".join(str(error) for error in errors)
    if count == 1:
        message = listed
    elif count == len(errors):
        message = f"{count} invalid rows: {listed}"
    else:
        message = f"{count} invalid rows ({len(errors)} listed): {listed}"
    return InvalidFile(message, param=errors[0].field)
