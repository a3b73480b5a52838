"""S3-only behaviour: multipart uploads and their abort, presigned URLs over plain HTTP, unreachable
endpoints. moto accepts any signature and never expires a URL, so these tests show that the URLs are
well-formed and reach the right object, not that S3 would enforce them."""

import time
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest

from alignd.errors import NotFound, Unavailable
from alignd.storage import S3Store
from alignd.storage.s3 import PART_SIZE, IterReader
from tests.storage.conftest import REGION, s3_store
from tests.storage.streams import Boom, failing, payload


def s3_client(endpoint: str) -> Any:
    """boto3, an S3 client independent of ours, to see the bucket the way S3 reports it."""
    return boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_large_stream_is_a_multipart_upload(s3: S3Store, s3_endpoint: str) -> None:
    """An S3 multipart ETag ends in -<part count>: 40 MiB in 16 MiB parts is 3 parts."""
    s3.put_stream("jobs/j1/adapter/weights", payload(40))
    head = s3_client(s3_endpoint).head_object(Bucket=s3.bucket, Key="jobs/j1/adapter/weights")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == 40 * 1024 * 1024


def test_failed_multipart_upload_is_aborted(s3: S3Store, s3_endpoint: str) -> None:
    with pytest.raises(Boom):
        s3.put_stream("files/file-bad", failing(20))
    uploads = s3_client(s3_endpoint).list_multipart_uploads(Bucket=s3.bucket)
    assert uploads.get("Uploads", []) == []


def test_content_type_is_kept(s3: S3Store, s3_endpoint: str) -> None:
    s3.put_bytes("files/f.jsonl", b"{}\n", content_type="application/jsonl")
    head = s3_client(s3_endpoint).head_object(Bucket=s3.bucket, Key="files/f.jsonl")
    assert head["ContentType"] == "application/jsonl"


def test_presigned_get_url_downloads_with_plain_http(s3: S3Store) -> None:
    s3.put_bytes("jobs/j1/dataset", b"row 1\nrow 2\n")
    url = s3.presigned_get_url("jobs/j1/dataset", 600)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"row 1\nrow 2\n"


def test_presigned_put_url_uploads_with_plain_http(s3: S3Store) -> None:
    url = s3.presigned_put_url("jobs/j1/checkpoints/step-10/adapter.safetensors", 600)
    response = httpx.put(url, content=b"weights")
    assert response.status_code == 200
    assert b"".join(s3.iter_bytes("jobs/j1/checkpoints/step-10/adapter.safetensors")) == b"weights"


def test_construction_creates_the_bucket_and_is_repeatable(s3_endpoint: str) -> None:
    first = s3_store(s3_endpoint, bucket="alignd-created-here")
    first.put_bytes("k", b"v")
    second = s3_store(s3_endpoint, bucket="alignd-created-here")
    second.ensure_bucket()
    assert second.list() == ["k"]


def test_missing_bucket_is_unavailable(s3_endpoint: str) -> None:
    """Only calls with an S3 error body can tell a missing bucket from a missing key: a HEAD (size,
    exists) answers a bare 404 either way."""
    store = s3_store(s3_endpoint, create_bucket=False)
    with pytest.raises(Unavailable, match="does not exist"):
        store.ping()
    with pytest.raises(Unavailable, match="does not exist"):
        store.iter_bytes("k")
    with pytest.raises(Unavailable, match="does not exist"):
        store.list()


def test_ping_on_a_dead_endpoint_is_unavailable_quickly(dead_endpoint: str) -> None:
    store = s3_store(dead_endpoint, create_bucket=False)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="unreachable"):
        store.ping()
    assert time.monotonic() - started < 3


def test_every_call_on_a_dead_endpoint_is_unavailable(dead_endpoint: str) -> None:
    store = s3_store(dead_endpoint, create_bucket=False)
    for call in (
        lambda: store.put_bytes("k", b"x"),
        lambda: store.iter_bytes("k"),
        lambda: store.size("k"),
        lambda: store.exists("k"),
        lambda: store.delete("k"),
        lambda: store.list(),
        lambda: store.delete_prefix("k"),
    ):
        with pytest.raises(Unavailable):
            call()
    with pytest.raises(Unavailable):
        s3_store(dead_endpoint)  # ensure_bucket at construction


def test_missing_key_raises_before_streaming(s3: S3Store) -> None:
    with pytest.raises(NotFound, match="files/nope"):
        s3.iter_bytes("files/nope")


def test_stopping_a_read_early_releases_the_connection(s3: S3Store) -> None:
    s3.put_stream("big", payload(4))
    for _ in range(20):  # more than the pool's 10 connections if any leaked
        stream = s3.iter_bytes("big", chunk_size=1024)
        next(stream)
        stream.close()  # type: ignore[attr-defined]
    assert s3.size("big") == 4 * 1024 * 1024


def counted(chunks: Iterator[bytes], pulled: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        pulled.append(len(chunk))
        yield chunk


def test_iter_reader_pulls_only_what_a_read_needs() -> None:
    """Bounded memory: reading one part pulls about one part's worth of chunks, not the whole stream."""
    pulled: list[int] = []
    reader = IterReader(counted(payload(100), pulled))
    first = reader.read(PART_SIZE + 1)
    assert len(first) == PART_SIZE + 1
    assert len(pulled) == 17  # 16 MiB + 1 byte needs 17 chunks of 1 MiB
    second = reader.read(PART_SIZE)
    assert len(second) == PART_SIZE
    assert len(pulled) == 33
    assert reader.bytes_read == 2 * PART_SIZE + 1


def test_iter_reader_concatenates_exactly() -> None:
    reader = IterReader([b"ab", b"", b"cde", b"f"])
    assert [reader.read(4), reader.read(4), reader.read(4)] == [b"abcd", b"ef", b""]
    assert IterReader([b"ab", b"cd"]).read() == b"abcd"
