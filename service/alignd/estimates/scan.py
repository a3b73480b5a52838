"""One pass over a stored preference or chat file for the estimate: every row's duplicate keys (for the
overlap with the other file) and the examples to tokenize, all of them or an even sample of a large file.

Rows come from the upload validator's decoders (`typed_rows`, else the trainer's row parser), so they
are the rows validation counted; the sampled rows are parsed with the trainer's own row parser
(`parse_preference_line`), so they are the examples the trainer would tokenize.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from alignd.contract import DataFormat, PreferenceExample, parse_preference_line
from alignd.contract.chat import ChatExample, parse_chat_line
from alignd.datasets.chat_report import duplicate_keys
from alignd.datasets.lines import LineBatch, LineSplitter
from alignd.datasets.overlap import RowKeys
from alignd.datasets.rows import Rows
from alignd.datasets.typed_rows import decode_rows


@dataclass(frozen=True)
class FileScan:
    rows: int
    """Rows in the file (blank lines are not rows)."""
    examples: list[PreferenceExample]
    """Every `stride`-th row, from the first: all rows when `stride` is 1."""
    stride: int
    keys: RowKeys

    @property
    def sampled(self) -> bool:
        return self.stride > 1


def sample_stride(rows: int, max_rows: int) -> int:
    """Every how many rows one is tokenized so that at most `max_rows` are (1: all of them)."""
    return max(1, -(-rows // max_rows))


def scan_file(chunks: Iterable[bytes], *, rows: int, max_rows: int, max_line_bytes: int) -> FileScan:
    """Read the file once. `rows` is the row count validation recorded; it sets the sampling stride."""
    stride = sample_stride(rows, max_rows)
    splitter = LineSplitter(max_line_bytes=max_line_bytes)
    keys = RowKeys()
    examples: list[PreferenceExample] = []
    fmt: DataFormat | None = None
    seen = 0

    def take(batch: LineBatch) -> None:
        nonlocal fmt, seen
        fmt, batch_rows = _rows(batch, fmt)
        keys.add(batch_rows)
        for offset, line in enumerate(batch_rows.lines):
            if (seen + offset) % stride == 0:
                examples.append(parse_preference_line(batch.lines[line - batch.first], line, fmt))
        seen += len(batch_rows)

    for chunk in chunks:
        for batch in splitter.feed(chunk):
            take(batch)
    for batch in splitter.finish():
        take(batch)
    return FileScan(rows=seen, examples=examples, stride=stride, keys=keys)


@dataclass(frozen=True)
class ChatScan:
    """A chat (SFT) file's scan: like `FileScan`, with conversations for examples. Its keys are the chat
    report's duplicate keys, the conversation standing where a pair stands."""

    rows: int
    examples: list[ChatExample]
    stride: int
    keys: RowKeys

    @property
    def sampled(self) -> bool:
        return self.stride > 1


def scan_chat_file(chunks: Iterable[bytes], *, rows: int, max_rows: int, max_line_bytes: int) -> ChatScan:
    """Read a chat file once, every row parsed with `parse_chat_line` (the validator's and the trainer's
    parser): each row's duplicate keys, and every `stride`-th row kept to tokenize."""
    stride = sample_stride(rows, max_rows)
    splitter = LineSplitter(max_line_bytes=max_line_bytes)
    keys = RowKeys()
    examples: list[ChatExample] = []
    seen = 0

    def take(batch: LineBatch) -> None:
        nonlocal seen
        conversations, prompts, lines = [], [], []
        for line, raw in enumerate(batch.lines, batch.first):
            if not raw.strip():
                continue
            example = parse_chat_line(raw, line)
            conversation, prompt = duplicate_keys(example)
            conversations.append(conversation)
            prompts.append(prompt)
            lines.append(line)
            if seen % stride == 0:
                examples.append(example)
            seen += 1
        if lines:
            keys.add_keys(np.concatenate(conversations), np.concatenate(prompts), lines)

    for chunk in chunks:
        for batch in splitter.feed(chunk):
            take(batch)
    for batch in splitter.finish():
        take(batch)
    return ChatScan(rows=seen, examples=examples, stride=stride, keys=keys)


def _rows(batch: LineBatch, fmt: DataFormat | None) -> tuple[DataFormat | None, Rows]:
    """The batch's rows as the validator reads them: typed decoding, else row by row."""
    decoded = decode_rows(batch, fmt)
    if decoded is not None:
        return decoded
    examples: list[PreferenceExample] = []
    sizes: list[int] = []
    for line, raw in enumerate(batch.lines, batch.first):
        if raw.strip():
            example = parse_preference_line(raw, line, fmt)
            fmt = example.format
            examples.append(example)
            sizes.append(len(raw))
    return fmt, Rows.from_examples(examples, sizes)
