"""The multipart body of `POST /v1/files`, parsed as it arrives.

Starlette's form parsing stores the whole file in a temporary file (a thread-pool hop per network
read, and a second copy on disk) before the route sees any of it, so receiving and validating took
turns. Here the event loop parses the body and hands the `file` part to the validating thread in
1 MiB chunks through a small bounded queue: receiving, validating and storing overlap, and memory
stays at a few chunks whatever the file's size.
"""

import asyncio
from collections.abc import Iterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from alignd.errors import InvalidRequest

FILE = "file"
PURPOSE = "purpose"
CHUNK = 1 << 20
MAX_FIELD_BYTES = 1024
"""Longest `purpose` kept; other fields are ignored, as FastAPI's form parsing ignores them."""
_END = b""


class UploadInterrupted(Exception):
    """The body ended before the file did (a malformed body or a client that went away)."""


class UploadForm:
    """Run `receive()` on the event loop and iterate `chunks()` on a worker thread at the same time.

    `file_seen` is set when the file part's headers arrive, or when the body ends without one.
    `purpose` is known by then when the client sends it first (the OpenAI SDK and curl's usual order
    do); otherwise once `receive()` has returned.
    """

    def __init__(self, request: Request, *, depth: int = 4) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        if content_type != b"multipart/form-data" or not options.get(b"boundary"):
            raise InvalidRequest(
                "expected a multipart/form-data body with a 'file' part and a 'purpose' field", param=FILE
            )
        self._request = request
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=depth)
        self._failed = False
        self.file_seen = asyncio.Event()
        self.filename: str | None = None
        self.purpose: str | None = None
        self._part: str | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header = (bytearray(), bytearray())
        self._field = bytearray()
        self._file = bytearray()
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
        """Read and parse the whole body, queueing the file's bytes, then end the chunk stream."""
        try:
            async for data in self._request.stream():
                self._parser.write(data)
                while len(self._file) >= CHUNK:
                    await self._queue.put(self._take(CHUNK))
            self._parser.finalize()
            if not self._complete:
                raise MultipartParseError(
                    "the body ends before its closing boundary: was the upload cut off?"
                )
            if self._file:
                await self._queue.put(self._take(len(self._file)))
        except MultipartParseError as exc:
            await self._fail()
            raise InvalidRequest(f"malformed multipart body: {exc}", param=FILE) from None
        except (ClientDisconnect, Exception):
            await self._fail()
            raise
        finally:
            self.file_seen.set()
        await self._queue.put(_END)

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, for a worker thread; raises `UploadInterrupted` if the body broke off."""
        while chunk := asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result():
            yield chunk
        if self._failed:
            raise UploadInterrupted("the request body ended before the file did")

    async def _fail(self) -> None:
        self._failed = True
        await self._queue.put(_END)

    def _take(self, size: int) -> bytes:
        chunk = bytes(self._file[:size])
        del self._file[:size]
        return chunk

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
            self.file_seen.set()
        elif self._part == FILE:
            self._part = None  # a second file part is ignored, as FastAPI keeps only the first

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == FILE:
            self._file += data[start:end]
        elif self._part == PURPOSE and len(self._field) <= MAX_FIELD_BYTES:
            self._field += data[start:end]

    def _on_end(self) -> None:
        self._complete = True

    def _on_part_end(self) -> None:
        if self._part == PURPOSE and self.purpose is None:
            self.purpose = self._field[:MAX_FIELD_BYTES].decode("utf-8", "replace")
        self._part = None
