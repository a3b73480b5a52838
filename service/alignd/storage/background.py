"""Writing one object on a thread while the caller keeps working on the next chunk.

An upload is validated chunk by chunk on its way to the store. Done in one thread, every write (and
the final fsync, or the S3 part uploads) waits for validation and the other way round; file and socket
writes let go of the GIL, so on a thread they overlap with the validation of the next chunk.
"""

import queue
import threading
from collections.abc import Iterator

from alignd.storage.base import ObjectStore

_END = object()
_ABORT = object()


class WriteAborted(Exception):
    """Raised inside the store's `put_stream` to make it give up on the object."""


class BackgroundWriter:
    """`write` chunks, then `close` (the object is stored) or `abort` (nothing is stored).

    At most `depth` chunks wait in memory. A store error is raised by the next `write` or `close`.
    """

    def __init__(self, store: ObjectStore, key: str, *, content_type: str, depth: int = 4) -> None:
        self._store = store
        self._key = key
        self._content_type = content_type
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.written = 0
        self._thread = threading.Thread(target=self._run, name=f"alignd-put-{key}", daemon=True)
        self._thread.start()

    def write(self, chunk: bytes) -> None:
        self._put(chunk)
        self._raise_error()

    def close(self) -> int:
        """Wait for the object to be stored; its size."""
        self._put(_END)
        self._thread.join()
        self._raise_error()
        return self.written

    def abort(self) -> None:
        """Give up: the store discards what it had (as it does when its stream raises)."""
        self._put(_ABORT)
        self._thread.join()

    def _put(self, item: object) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self.written = self._store.put_stream(self._key, self._chunks(), content_type=self._content_type)
        except WriteAborted:
            pass
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc

    def _chunks(self) -> Iterator[bytes]:
        while (item := self._queue.get()) is not _END:
            if item is _ABORT:
                raise WriteAborted
            yield item  # type: ignore[misc]  # the queue holds bytes and the two markers
