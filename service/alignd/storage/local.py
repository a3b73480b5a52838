"""The embedded default store: one file per key under a root directory.

Writes go to a temporary file in `{root}/.tmp` (same file system, so the final `os.replace` is
atomic) and appear under their key only when complete. Presigned URLs point at the API's own
`/v1/storage/{key}` route, signed by a `UrlSigner`; `.tmp` is therefore reserved and never a key.
A full disk is `InsufficientStorage` and a read-only one `Unavailable` (`alignd.faults`), so callers
answer 507 or 503 rather than fail on a bare OSError.
"""

import contextlib
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

from alignd.errors import NotFound, Unavailable
from alignd.faults import disk_error
from alignd.storage.base import (
    InvalidKey,
    ObjectStore,
    require_prefix,
    validate_expiry,
    validate_key,
    validate_prefix,
)
from alignd.storage.signing import UrlSigner

TMP_DIR = ".tmp"
WHERE = "the local store (ALIGND_STORE_DIR)"


class LocalStore(ObjectStore):
    name = "local"

    def __init__(self, root: Path, *, signer: UrlSigner, public_url: str) -> None:
        self.root = root
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self._tmp = root / TMP_DIR
        self._tmp.mkdir(parents=True, exist_ok=True)

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, content_type: str = "application/octet-stream"
    ) -> int:
        """The content type is not kept: the API serves every object as application/octet-stream."""
        path = self._path(key)
        with _disk_errors():
            tmp = tempfile.NamedTemporaryFile(dir=self._tmp, prefix="put-", delete=False)  # noqa: SIM115
        try:
            with tmp:
                written = _write_all(tmp, chunks)
            with _disk_errors():
                self._commit(Path(tmp.name), path)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
        return written

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"object {key} not found") from None
        return _read_all(handle, chunk_size)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"object {key} not found")
        return path.stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def modified_at(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"object {key} not found") from None

    def remove_staged(self, older_than: float) -> int:
        """Temp files of `put_stream` (`.tmp/put-*`) that a killed process never moved into place."""
        removed = 0
        for path in self._tmp.glob("put-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
        return removed

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _disk_errors():
            path.unlink(missing_ok=True)
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(require_prefix(prefix))
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(key for key, _ in self._walk(validate_prefix(prefix)))

    def total_bytes(self, prefix: str = "") -> int:
        return sum(size for _, size in self._walk(validate_prefix(prefix)))

    def presigned_get_url(self, key: str, expires_seconds: int) -> str:
        return self._signed_url("GET", key, expires_seconds)

    def presigned_put_url(self, key: str, expires_seconds: int) -> str:
        return self._signed_url("PUT", key, expires_seconds)

    def ping(self) -> None:
        if not (self.root.is_dir() and self._tmp.is_dir()):
            raise Unavailable(
                f"local store directory {self.root} is missing or not writable (no {TMP_DIR} inside)"
            )
        if os.statvfs(self._tmp).f_flag & os.ST_RDONLY:
            raise Unavailable(f"local store directory {self.root} is on a read-only file system")
        if not os.access(self._tmp, os.W_OK):
            raise Unavailable(f"local store directory {self.root} is not writable by this process")

    def _path(self, key: str) -> Path:
        if validate_key(key).split("/", 1)[0] == TMP_DIR:
            raise InvalidKey(f"storage key {key!r} uses the reserved top-level name {TMP_DIR}", param="key")
        return self.root / key

    def _commit(self, tmp: Path, path: Path) -> None:
        """Move a finished temp file into place. Retried because a concurrent delete may prune the
        (then empty) parent directory between our mkdir and our rename."""
        for _ in range(5):
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(tmp, path)
                return
        raise OSError(f"could not move the upload into place at {path}")

    def _prune(self, directory: Path) -> None:
        """Remove directories left empty by a delete, so deleted jobs leave no trees of empty folders."""
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _walk(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every file whose key starts with prefix, walking only the prefix's directory."""
        start = self.root / prefix.rpartition("/")[0]
        for directory, subdirs, files in os.walk(start):
            here = Path(directory)
            if here == self.root:
                subdirs[:] = [d for d in subdirs if d != TMP_DIR]
            for name in files:
                key = (here / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key, _size_or_zero(here / name)

    def _signed_url(self, method: str, key: str, expires_seconds: int) -> str:
        self._path(key)
        expires = int(time.time()) + validate_expiry(expires_seconds)
        signature = self.signer.sign(method, key, expires)
        query = urlencode({"expires": expires, "method": method, "signature": signature})
        return f"{self.public_url}/v1/storage/{key}?{query}"


SYNC_EVERY = 64 << 20
"""Bytes written between fdatasyncs: the disk writes a large object back while it streams in, and the
fsync that ends the write has only the tail left to wait for."""


def _write_all(out: IO[bytes], chunks: Iterable[bytes]) -> int:
    """Only the writes are translated (`_disk_errors`): an exception from `chunks` passes unchanged."""
    written = synced = 0
    for chunk in chunks:
        with _disk_errors():
            out.write(chunk)
            written += len(chunk)
            if written - synced >= SYNC_EVERY:
                out.flush()
                os.fdatasync(out.fileno())
                synced = written
    with _disk_errors():
        out.flush()
        os.fsync(out.fileno())
    return written


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        error = disk_error(exc, where=WHERE)
        if error is None:
            raise
        raise error from exc


def _read_all(handle: IO[bytes], chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def _size_or_zero(path: Path) -> int:
    """A file deleted while we list it counts as empty rather than failing the whole listing."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
