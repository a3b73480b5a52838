"""JSONL lines from a stream of byte chunks of any size, in bounded memory.

Lines end at `\\n`; one `\\r` before it is dropped too, so CRLF files read like LF files, and a
last line without a newline still counts. Line numbers are 1-based and count every line, blank
ones included, exactly as the trainer numbers the same file.

Memory: the chunk being split (twice: the chunk and its lines) plus the one line that spans
chunks. A line over `max_line_bytes` is refused as soon as that many bytes arrive without a
newline, so an endless line never piles up; the total size is checked before each chunk is split.
"""

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from alignd.errors import InvalidFile, PayloadTooLarge


class LineTooLong(InvalidFile):
    """One line is over the per-line limit. `size` is a lower bound when the line never ended."""

    def __init__(self, *, line: int, size: int, limit: int, complete: bool) -> None:
        amount = f"{size} bytes" if complete else f"at least {size} bytes"
        self.detail = f"line is {amount}, over the {limit}-byte limit"
        """The message without its "line N: " prefix."""
        super().__init__(f"line {line}: {self.detail}")
        self.line = line
        self.size = size
        self.limit = limit


class FileTooLarge(PayloadTooLarge):
    """The stream is over the total size limit; `line` is the line that crossed it."""

    def __init__(self, *, line: int, limit: int) -> None:
        super().__init__(
            f"line {line}: the file is over the {limit}-byte limit; split it into smaller files",
            param="file",
        )
        self.line = line
        self.limit = limit


class LineBatch(NamedTuple):
    """Consecutive lines of one chunk: `lines[i]` is line number `first + i`, without its ending."""

    first: int
    lines: list[bytes]


class LineSplitter:
    """Push-style splitter: `feed` each chunk and iterate what it returns, then iterate `finish()`.

    Lines come in batches, one or two per chunk, cut by `bytes.split` (the per-line cost is a C
    loop's, not a Python generator's). Iterate each returned iterator to the end before the next
    `feed`: a line over the limit is raised only after the batch of lines before it.
    """

    def __init__(self, *, max_line_bytes: int, max_total_bytes: int | None = None) -> None:
        if max_line_bytes <= 0:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self.max_total_bytes = max_total_bytes
        self.total_bytes = 0
        self._line = 1
        """Number of the line being read: the one `_pending` belongs to."""
        self._pending = bytearray()
        """The start of a line whose newline has not arrived yet."""

    def feed(self, chunk: bytes) -> Iterator[LineBatch]:
        """Check the size limit now, then return the lines this chunk completes."""
        self.total_bytes += len(chunk)
        if self.max_total_bytes is not None and self.total_bytes > self.max_total_bytes:
            within = len(chunk) - (self.total_bytes - self.max_total_bytes)
            raise FileTooLarge(line=self._line + chunk.count(b"\n", 0, within), limit=self.max_total_bytes)
        return self._cut(chunk)

    def finish(self) -> Iterator[LineBatch]:
        """The last line, when the stream does not end with a newline."""
        if self._pending:
            line = bytes(self._pending)
            self._pending = bytearray()
            yield from self._checked(LineBatch(self._line, [line[:-1] if line.endswith(b"\r") else line]))

    def _cut(self, chunk: bytes) -> Iterator[LineBatch]:
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if lines:
            if self._pending:
                self._pending += lines[0]
                lines[0] = bytes(self._pending)
                self._pending = bytearray()
            if b"\r" in chunk or b"\r" in lines[0]:
                lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
            batch = LineBatch(self._line, lines)
            self._line += len(lines)
            yield from self._checked(batch)
        if tail:
            self._pending += tail
            known = len(self._pending) - int(self._pending.endswith(b"\r"))
            if known > self.max_line_bytes:
                raise LineTooLong(line=self._line, size=known, limit=self.max_line_bytes, complete=False)

    def _checked(self, batch: LineBatch) -> Iterator[LineBatch]:
        """The batch, or the lines before its first line over the limit and then that line's error."""
        limit = self.max_line_bytes
        if max(map(len, batch.lines)) <= limit:
            yield batch
            return
        index = next(i for i, line in enumerate(batch.lines) if len(line) > limit)
        if index:
            yield LineBatch(batch.first, batch.lines[:index])
        size = len(batch.lines[index])
        raise LineTooLong(line=batch.first + index, size=size, limit=limit, complete=True)


def split_lines(
    chunks: Iterable[bytes], *, max_line_bytes: int, max_total_bytes: int | None
) -> Iterator[tuple[int, bytes]]:
    """Yield `(line number, line without its ending)` for every line of the chunked stream.

    Raises `LineTooLong` (an `InvalidFile`, 400) for a line over `max_line_bytes` and
    `FileTooLarge` (a `PayloadTooLarge`, 413) once the stream passes `max_total_bytes`
    (`None`: no limit); both name the line.
    """
    splitter = LineSplitter(max_line_bytes=max_line_bytes, max_total_bytes=max_total_bytes)
    for chunk in chunks:
        for batch in splitter.feed(chunk):
            yield from enumerate(batch.lines, batch.first)
    for batch in splitter.finish():
        yield from enumerate(batch.lines, batch.first)
