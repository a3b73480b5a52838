"""Any S3 endpoint (MinIO, AWS S3, Ceph) through the `minio` client.

Streams are uploaded as S3 multipart uploads of 16 MiB parts, one part in memory at a time: an
S3 multipart upload is invisible until completed, and minio aborts it when reading the stream
fails, so a rejected upload leaves nothing behind. Parts go up one after another, not in
parallel, so that an abort never races a part still in flight.
"""

import contextlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO, cast

import certifi
import urllib3
from minio import Minio
from minio.credentials import Provider
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError

from alignd.errors import Forbidden, NotFound, Unavailable
from alignd.storage.base import ObjectStore, require_prefix, validate_expiry, validate_key, validate_prefix

PART_SIZE = 16 * 1024 * 1024
_MISSING_OBJECT = {"NoSuchKey", "NoSuchObject"}
_REFUSED = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    """Changes whenever the object's bytes do (for caches keyed on content)."""


SEND_BLOCK = 64 * 1024
"""Request bodies go out in blocks of this size, each with its own socket timeout."""


def default_http_client(
    *, connect_timeout: float = 5.0, read_timeout: float = 30.0, retries: int = 2
) -> urllib3.PoolManager:
    """An HTTP client whose every wait is short and bounded, so a hung endpoint fails a store call within
    about (retries + 1) × (connect_timeout + read_timeout) instead of hanging the threads that wait on it.

    minio's own default waits 5 minutes and retries 5 times. Both timeouts bound one socket operation,
    not a request: the read timeout each wait for response bytes, the connect timeout the connection and
    each block of a request body sent (`BlockwisePoolManager`), so a large part on a slow link still
    goes up. Retry-After headers are not obeyed (an S3 503 may ask for an hour). CA certificates come
    from the same place minio's default looks (SSL_CERT_FILE, else certifi).
    """
    return BlockwisePoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        retries=urllib3.Retry(
            total=retries,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
            respect_retry_after_header=False,
        ),
        maxsize=10,
        blocksize=SEND_BLOCK,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


class BlockwisePoolManager(urllib3.PoolManager):
    """Sends a bytes body as a file, in blocks. Given bytes, urllib3 sends the whole body in one
    `sendall`, whose socket timeout bounds the entire send: a 16 MiB part would have to go up within the
    connect timeout. A file goes block by block, each with its own timeout, and urllib3 rewinds it for a
    retry."""

    def urlopen(  # type: ignore[override]  # the signature of PoolManager.urlopen
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        body = kw.get("body")
        if isinstance(body, bytes | bytearray) and len(body) > SEND_BLOCK:
            kw["body"] = io.BytesIO(body)
        return super().urlopen(method, url, redirect=redirect, **kw)


class IterReader:
    """A read()-able file over an iterator of chunks, holding at most one read's worth of data.

    minio asks for a part at a time; each read pulls just enough chunks to answer it.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        parts, have = [self._pending], len(self._pending)
        while size < 0 or have < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(bytes(chunk))
            have += len(chunk)
        data = b"".join(parts)
        if 0 <= size < len(data):
            data, self._pending = data[:size], data[size:]
        else:
            self._pending = b""
        self.bytes_read += len(data)
        return data


class S3Store(ObjectStore):
    name = "s3"

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str | None,
        secret_key: str | None,
        *,
        credentials: Provider | None = None,
        region: str | None = None,
        secure: bool = True,
        http_client: urllib3.PoolManager | None = None,
        create_bucket: bool = True,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            credentials=credentials,
            region=region,
            secure=secure,
            http_client=http_client or default_http_client(),
        )
        if create_bucket:
            self.ensure_bucket()

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists, so a fresh MinIO works with no manual step."""
        with _translated(bucket=self.bucket):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # another replica won the race: fine
                    raise

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, content_type: str = "application/octet-stream"
    ) -> int:
        reader = IterReader(chunks)
        with _translated(key=validate_key(key)):
            self._client.put_object(
                self.bucket,
                key,
                cast(BinaryIO, reader),
                length=-1,
                part_size=PART_SIZE,
                content_type=content_type,
                num_parallel_uploads=1,
            )
        return reader.bytes_read

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with _translated(key=validate_key(key)):
            response = self._client.get_object(self.bucket, key)
        return _stream(response, key, chunk_size)

    def size(self, key: str) -> int:
        with _translated(key=validate_key(key)):
            return self._client.stat_object(self.bucket, key).size or 0

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def modified_at(self, key: str) -> float:
        with _translated(key=validate_key(key)):
            modified = self._client.stat_object(self.bucket, key).last_modified
        return modified.timestamp() if modified is not None else 0.0

    def delete(self, key: str) -> None:
        with _translated(key=validate_key(key)):
            self._client.remove_object(self.bucket, key)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(require_prefix(prefix))
        with _translated(bucket=self.bucket):
            failures = list(self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if failures:
            first = failures[0].message
            raise Unavailable(f"could not delete {len(failures)} objects under {prefix}: {first}")
        return len(keys)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(name for name, _ in self._objects(prefix))

    def total_bytes(self, prefix: str = "") -> int:
        return sum(size for _, size in self._objects(prefix))

    def presigned_get_url(self, key: str, expires_seconds: int) -> str:
        expires = timedelta(seconds=validate_expiry(expires_seconds))
        with _translated(key=validate_key(key)):
            return self._client.presigned_get_object(self.bucket, key, expires=expires)

    def presigned_put_url(self, key: str, expires_seconds: int) -> str:
        expires = timedelta(seconds=validate_expiry(expires_seconds))
        with _translated(key=validate_key(key)):
            return self._client.presigned_put_object(self.bucket, key, expires=expires)

    # ---- other buckets: base models registered as s3:// sources ---------------------------------------
    # The store's own methods stay within its bucket; these read objects the same credentials may
    # read elsewhere, so an admin can register a model kept in another bucket without copying it.

    def list_bucket(self, bucket: str, prefix: str) -> Sequence[ObjectInfo]:
        """Every object under prefix in `bucket`, sorted by key. NotFound for a missing bucket, Forbidden
        when these credentials may not list it."""
        validate_prefix(prefix)
        try:
            objects = self._client.list_objects(bucket, prefix=prefix, recursive=True)
            found = [
                ObjectInfo(obj.object_name or "", obj.size or 0, (obj.etag or "").strip('"'))
                for obj in objects
                if not obj.is_dir
            ]
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                raise NotFound(f"bucket {bucket} does not exist") from exc
            if exc.code in _REFUSED:
                raise Forbidden(f"the configured S3 credentials may not list bucket {bucket}") from exc
            raise
        except (urllib3.exceptions.HTTPError, ServerError) as exc:
            raise _unreachable(exc) from exc
        return sorted(found, key=lambda info: info.key)

    def presigned_bucket_get_url(self, bucket: str, key: str, expires_seconds: int) -> str:
        """A download URL for an object of `bucket` (see `list_bucket`)."""
        expires = timedelta(seconds=validate_expiry(expires_seconds))
        with _translated(key=validate_key(key), bucket=bucket):
            return self._client.presigned_get_object(bucket, key, expires=expires)

    def ping(self) -> None:
        with _translated(bucket=self.bucket):
            exists = self._client.bucket_exists(self.bucket)
        if not exists:
            raise Unavailable(f"object store bucket {self.bucket} does not exist")

    def _objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) pairs; minio pages through the listing lazily, a thousand keys per request."""
        with _translated(bucket=self.bucket):
            for obj in self._client.list_objects(self.bucket, prefix=validate_prefix(prefix), recursive=True):
                if not obj.is_dir:
                    yield obj.object_name or "", obj.size or 0


def _stream(response: urllib3.BaseHTTPResponse, key: str, chunk_size: int) -> Iterator[bytes]:
    """Yield the body and always give the connection back to the pool, even if the reader stops early."""
    try:
        with _translated(key=key):
            yield from response.stream(chunk_size)
    finally:
        response.close()
        response.release_conn()


@contextlib.contextmanager
def _translated(*, key: str | None = None, bucket: str | None = None) -> Iterator[None]:
    """Turn minio and urllib3 failures into domain errors: a missing key is NotFound, anything that
    means the endpoint cannot serve us (unreachable, 5xx, missing bucket) is Unavailable."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING_OBJECT and key is not None:
            raise NotFound(f"object {key} not found") from exc
        if exc.code == "NoSuchBucket":
            raise Unavailable(f"object store bucket {bucket or exc.bucket_name} does not exist") from exc
        raise
    except (urllib3.exceptions.HTTPError, ServerError) as exc:
        raise _unreachable(exc) from exc


def _unreachable(exc: Exception) -> Unavailable:
    """What went wrong, without urllib3's wrapping: the last try's error (a timeout, a refused
    connection, a 5xx)."""
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc
    return Unavailable(
        f"the object store (ALIGND_S3_ENDPOINT) is unreachable: {reason}; retry shortly. If this persists, "
        "an operator should check the S3 endpoint",
        code="store_unavailable",
    )
