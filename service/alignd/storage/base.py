"""The ObjectStore interface: where uploaded files, checkpoints, adapters and logs live.

Two backends implement it (a local directory and any S3 endpoint), and the rest of the
control plane sees only this class. Every method validates its key first, so no path
component from user input can reach a file system path or an S3 key (DESIGN §10).
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from alignd.errors import InvalidRequest

MAX_KEY_LENGTH = 512
MAX_URL_SECONDS = 7 * 24 * 3600
"""S3 refuses presigned URLs that live longer than 7 days; the local store keeps the same limit."""

_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


class InvalidKey(InvalidRequest, ValueError):
    """A key breaks the key rules. Also a ValueError: a bad key is a caller's bug, but if one ever
    reaches an API response it is a 400, not a 500."""

    code = "invalid_storage_key"


def validate_key(key: str) -> str:
    """Check a whole object key: '/'-separated segments of [A-Za-z0-9._-], none empty, '.' or '..',
    no leading '/', at most 512 characters. Returns the key, so callers can validate inline."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("storage key must be a non-empty string", param="key")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"storage key is longer than {MAX_KEY_LENGTH} characters", param="key")
    if not _KEY.fullmatch(key):
        raise InvalidKey(
            f"storage key {key!r} must be '/'-separated segments of letters, digits, '.', '_' and '-'",
            param="key",
        )
    if any(segment in (".", "..") for segment in key.split("/")):
        raise InvalidKey(f"storage key {key!r} has a '.' or '..' segment", param="key")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix is empty (everything) or a key, optionally ending in '/' (a "directory")."""
    if prefix == "":
        return prefix
    validate_key(prefix.removesuffix("/"))
    return prefix


def require_prefix(prefix: str) -> str:
    """delete_prefix refuses the empty prefix: wiping the whole store is never one call away."""
    if not validate_prefix(prefix):
        raise InvalidKey("refusing to delete with an empty prefix", param="prefix")
    return prefix


def validate_expiry(expires_seconds: int) -> int:
    """Presigned URLs must expire, and within the 7 days S3 allows, so both backends agree."""
    if not 1 <= expires_seconds <= MAX_URL_SECONDS:
        raise ValueError(f"expires_seconds must be between 1 and {MAX_URL_SECONDS}, got {expires_seconds}")
    return expires_seconds


class ObjectStore(ABC):
    """Flat key → bytes storage with streaming I/O and presigned URLs.

    Writes are all-or-nothing: `put_stream` commits the object only once the iterator is exhausted,
    so a rejected or interrupted upload leaves nothing (and an earlier object under the key stays).
    """

    name: str

    @abstractmethod
    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, content_type: str = "application/octet-stream"
    ) -> int:
        """Store the concatenated chunks under key with bounded memory; returns the bytes written.
        An exception from the iterator propagates unchanged and nothing is left under key."""

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> int:
        """Small objects (manifests, reports): the same atomic path as a stream of one chunk."""
        return self.put_stream(key, [data], content_type=content_type)

    @abstractmethod
    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream an object's bytes. Raises NotFound at call time, before the first chunk, so an API
        route can answer 404 before it starts a streaming response."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's length in bytes; NotFound if it is missing."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether key holds an object, so repeated steps can skip work already done."""

    @abstractmethod
    def modified_at(self, key: str) -> float:
        """When the object under key was written (unix seconds); NotFound if it is missing. The sweeper
        leaves young objects alone: they may be uploads whose database row is about to be written."""

    def remove_staged(self, older_than: float) -> int:
        """Remove partial writes left by interrupted `put_stream`s (a killed server) that were last
        written before `older_than` (unix seconds); returns how many. A backend whose partial writes
        are invisible and expired by the service itself (S3 multipart uploads, with the bucket's
        AbortIncompleteMultipartUpload rule) has none to remove."""
        return 0

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing object is success, so cleanup steps can be repeated."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with prefix (non-empty); returns how many."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with prefix (a plain string prefix, as in S3)."""

    @abstractmethod
    def total_bytes(self, prefix: str = "") -> int:
        """Bytes stored under prefix: what quotas count."""

    @abstractmethod
    def presigned_get_url(self, key: str, expires_seconds: int) -> str:
        """A URL that lets its holder (a trainer, a client) download key without credentials."""

    @abstractmethod
    def presigned_put_url(self, key: str, expires_seconds: int) -> str:
        """A URL that lets its holder upload key with a plain HTTP PUT, without credentials."""

    @abstractmethod
    def ping(self) -> None:
        """Raise Unavailable if the backend cannot be used right now (for health checks)."""
