"""The multipart body of `POST /v1/files`, parsed as it arrives.

Starlette's form parsing stores the file in a temporary file through the thread pool (a thread
hop for every network read) before the route sees it. Here the event loop parses the body and the
`file` part goes to a temporary file a MiB at a time (one thread hop per MiB); then the validating
thread reads it back in 1 MiB chunks. Validation starts only once the body has
ended: receiving and validating are both Python on one GIL, so run at once they take turns rather
than overlap. Memory stays at one chunk whatever the file's size.

If the spool's disk is full (or read-only), the rest of the body is still read, then the error is
answered (507, 503): a server that answers and closes while the client is still sending resets the
connection, and the client sees a broken pipe instead of the reason.
"""

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from alignd.errors import InvalidRequest, PayloadTooLarge
from alignd.faults import disk_error

FILE = "file"
PURPOSE = "purpose"
CHUNK = 1 << 20
MAX_FIELD_BYTES = 1024
"""Longest `purpose` kept; other fields are ignored, as FastAPI's form parsing ignores them."""
SPOOL = "the upload spool (ALIGND_UPLOAD_SPOOL_DIR, default the system's temp dir)"


class UploadForm:
    """`await receive()` on the event loop, then iterate `chunks()` on a worker thread, then `close()`."""

    def __init__(
        self, request: Request, *, max_file_bytes: int | None = None, spool_dir: Path | None = None
    ) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        if content_type != b"multipart/form-data" or not options.get(b"boundary"):
            raise InvalidRequest(
                "expected a multipart/form-data body with a 'file' part and a 'purpose' field", param=FILE
            )
        self._request = request
        self._max_file_bytes = max_file_bytes
        self._spool_dir = spool_dir
        self.file_bytes = 0
        self.filename: str | None = None
        self.purpose: str | None = None
        self._part: str | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header = (bytearray(), bytearray())
        self._field = bytearray()
        self._spool: IO[bytes] | None = None
        self._pending = bytearray()
        """File bytes parsed but not yet in `_spool`: written a MiB at a time, off the event loop."""
        self._complete = False
        """The closing boundary arrived: a body without it was cut off, and its file is not whole."""
        self._parser = MultipartParser(
            options[b"boundary"],
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": lambda data, start, end: self._header[0].extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._header[1].extend(data[start:end]),
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    async def receive(self) -> None:
        """Read and parse the whole body."""
        body = self._request.stream()
        try:
            async for data in body:
                self._parser.write(data)
                self._check_size()
                if len(self._pending) >= CHUNK:
                    await run_in_threadpool(self._spill)
            self._parser.finalize()
            await run_in_threadpool(self._spill)
        except MultipartParseError as exc:
            raise InvalidRequest(f"malformed multipart body: {exc}", param=FILE) from None
        except OSError as exc:
            error = disk_error(exc, where=SPOOL)
            if error is None:
                raise
            await self._discard(body)
            raise error from exc
        if not self._complete:
            raise InvalidRequest(
                "malformed multipart body: it ends before its closing boundary; was the upload cut off?",
                param=FILE,
            )

    async def _discard(self, body: AsyncIterator[bytes]) -> None:
        """Read the rest of the body without keeping it, up to the size limit (a larger body is cut off:
        the client was going to get a 413 anyway)."""
        self._pending.clear()
        async for data in body:
            self.file_bytes += len(data)
            if self._max_file_bytes is not None and self.file_bytes > self._max_file_bytes:
                return

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, read back in 1 MiB chunks (blocking: for a worker thread)."""
        if self._spool is None:
            return
        self._spool.seek(0)
        while chunk := self._spool.read(CHUNK):
            yield chunk

    def _check_size(self) -> None:
        """Refuse an oversized file as soon as it passes the limit, not after spooling all of it."""
        if self._max_file_bytes is not None and self.file_bytes > self._max_file_bytes:
            raise PayloadTooLarge(
                f"the file is over the {self._max_file_bytes}-byte limit; split it into smaller files",
                param=FILE,
            )

    def _spill(self) -> None:
        """Move the file bytes received so far to the temporary file (a thread: disk writes may block)."""
        if self._pending:
            assert self._spool is not None
            self._spool.write(self._pending)
            self._pending.clear()

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._part = None

    def _on_header_end(self) -> None:
        name, value = self._header
        self._headers[bytes(name).lower()] = bytes(value)
        self._header = (bytearray(), bytearray())

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        self._part = options.get(b"name", b"").decode("utf-8", "replace")
        self._field = bytearray()
        if self._part == FILE and self.filename is None:
            self.filename = options.get(b"filename", b"upload.jsonl").decode("utf-8", "replace")
            self._spool = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115  # closed by close()
        elif self._part == FILE:
            self._part = None  # a second file part is ignored, as FastAPI keeps only the first

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == FILE:
            self._pending += memoryview(data)[start:end]
            self.file_bytes += end - start
        elif self._part == PURPOSE and len(self._field) <= MAX_FIELD_BYTES:
            self._field += data[start:end]

    def _on_end(self) -> None:
        self._complete = True

    def _on_part_end(self) -> None:
        if self._part == PURPOSE and self.purpose is None:
            self.purpose = self._field[:MAX_FIELD_BYTES].decode("utf-8", "replace")
        self._part = None
