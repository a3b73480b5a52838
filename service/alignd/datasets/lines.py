"""JSONL lines from a stream of byte chunks of any size, in bounded memory.

Lines end at `\\n`; one `\\r` before it is dropped too, so CRLF files read like LF files, and a
last line without a newline still counts. Line numbers are 1-based and count every line, blank
ones included, exactly as the trainer numbers the same file.

Memory: the chunk being split plus the one line that spans chunks (briefly twice, while it is
copied out). A line over `max_line_bytes` is refused as soon as that many bytes arrive without a
newline, so an endless line never piles up; the total size is checked before each chunk is split.
"""

from collections.abc import Iterable, Iterator

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


class LineSplitter:
    """Push-style splitter: `feed` each chunk and iterate what it returns, then iterate `finish()`.

    Iterate each returned iterator to the end before the next `feed`: lines are cut lazily from
    the chunk, so the chunk is never copied whole.
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

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        """Check the size limit now, then return the lines this chunk completes."""
        self.total_bytes += len(chunk)
        if self.max_total_bytes is not None and self.total_bytes > self.max_total_bytes:
            within = len(chunk) - (self.total_bytes - self.max_total_bytes)
            raise FileTooLarge(line=self._line + chunk.count(b"\n", 0, within), limit=self.max_total_bytes)
        return self._cut(chunk)

    def finish(self) -> Iterator[tuple[int, bytes]]:
        """The last line, when the stream does not end with a newline."""
        if self._pending:
            line = self._checked(bytes(self._pending))
            self._pending = bytearray()
            yield self._line, line

    def _cut(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        start = 0
        end = chunk.find(b"\n")
        while end != -1:
            if self._pending:
                self._pending += memoryview(chunk)[start:end]
                line = bytes(self._pending)
                self._pending = bytearray()
            else:
                line = chunk[start:end]
            yield self._line, self._checked(line)
            self._line += 1
            start = end + 1
            end = chunk.find(b"\n", start)
        if start < len(chunk):
            self._pending += memoryview(chunk)[start:]
            known = len(self._pending) - int(self._pending.endswith(b"\r"))
            if known > self.max_line_bytes:
                raise LineTooLong(line=self._line, size=known, limit=self.max_line_bytes, complete=False)

    def _checked(self, line: bytes) -> bytes:
        """The line without a CR before its newline, if it is within the limit."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line_bytes:
            raise LineTooLong(line=self._line, size=len(line), limit=self.max_line_bytes, complete=True)
        return line


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
        yield from splitter.feed(chunk)
    yield from splitter.finish()
