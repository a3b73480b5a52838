"""Local-store specifics: the API's own signed URLs, the temp directory, and directory housekeeping."""

import time
import tracemalloc
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from alignd.errors import Forbidden, Unavailable
from alignd.storage import InvalidKey, LocalStore, UrlSigner
from tests.storage.conftest import PUBLIC_URL
from tests.storage.streams import Boom, MiB, failing, payload

KEY = "jobs/j1/checkpoints/step-10/adapter.safetensors"


def parse(url: str) -> tuple[str, str, int, str]:
    """(method, key, expires, signature) as the /v1/storage route will read them."""
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query, strict_parsing=True).items()}
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
    assert parts.path.startswith("/v1/storage/")
    return query["method"], parts.path.removeprefix("/v1/storage/"), int(query["expires"]), query["signature"]


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_presigned_url_names_the_key_and_verifies(local_store: LocalStore, method: str) -> None:
    make = local_store.presigned_get_url if method == "GET" else local_store.presigned_put_url
    before = int(time.time())
    url_method, key, expires, signature = parse(make(KEY, 600))
    assert (url_method, key) == (method, KEY)
    assert before + 600 <= expires <= int(time.time()) + 600
    local_store.signer.verify(method, key, expires, signature)


def test_presigned_url_tampering_is_forbidden(local_store: LocalStore) -> None:
    method, key, expires, signature = parse(local_store.presigned_get_url(KEY, 600))
    verify = local_store.signer.verify
    verify(method, key, expires, signature)
    for forged in (
        ("PUT", key, expires, signature),
        (method, "jobs/j2/checkpoints/step-10/adapter.safetensors", expires, signature),
        (method, key, expires + 86400, signature),
        (method, key, expires, signature[::-1]),
    ):
        with pytest.raises(Forbidden, match="invalid signature"):
            verify(*forged)
    with pytest.raises(Forbidden, match="expired"):
        verify(method, key, expires, signature, now=expires)


def test_urls_from_another_secret_do_not_verify(local_store: LocalStore, tmp_path: Path) -> None:
    other = LocalStore(tmp_path / "other", signer=UrlSigner(b"another secret"), public_url=PUBLIC_URL + "/")
    method, key, expires, signature = parse(other.presigned_get_url(KEY, 600))
    with pytest.raises(Forbidden, match="invalid signature"):
        local_store.signer.verify(method, key, expires, signature)


def test_streaming_holds_one_chunk_at_a_time(local_store: LocalStore) -> None:
    """40 MiB in and out with a few MiB of peak Python memory. (S3 can't be measured this way: the moto
    server runs in this process and keeps every object in memory.)"""
    tracemalloc.start()
    try:
        local_store.put_stream("big", payload(40))
        assert sum(len(chunk) for chunk in local_store.iter_bytes("big")) == 40 * MiB
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * MiB


def test_failed_put_leaves_no_temp_file(local_store: LocalStore) -> None:
    with pytest.raises(Boom):
        local_store.put_stream("files/f", failing(2))
    assert list((local_store.root / ".tmp").iterdir()) == []
    assert not (local_store.root / "files").exists()


def test_put_leaves_no_temp_file(local_store: LocalStore) -> None:
    local_store.put_bytes(KEY, b"x")
    assert list((local_store.root / ".tmp").iterdir()) == []
    assert (local_store.root / KEY).read_bytes() == b"x"


def test_a_failed_commit_leaves_no_temp_file(local_store: LocalStore) -> None:
    """A file can't also be a directory here (S3 has no such limit); the failure must not leak temps."""
    local_store.put_bytes("a", b"x")
    with pytest.raises(OSError):
        local_store.put_bytes("a/b", b"y")
    assert list((local_store.root / ".tmp").iterdir()) == []
    assert local_store.list() == ["a"]


def test_the_temp_directory_is_reserved(local_store: LocalStore) -> None:
    with pytest.raises(InvalidKey, match="reserved"):
        local_store.put_bytes(".tmp/x", b"x")
    local_store.put_bytes("a/.tmp", b"fine below the top level")
    assert local_store.list() == ["a/.tmp"]


def test_delete_prunes_empty_directories(local_store: LocalStore) -> None:
    local_store.put_bytes("jobs/j1/logs/a.log", b"a")
    local_store.put_bytes("jobs/j2/logs/b.log", b"b")
    local_store.delete_prefix("jobs/j1/")
    assert sorted(p.name for p in (local_store.root / "jobs").iterdir()) == ["j2"]
    local_store.delete("jobs/j2/logs/b.log")
    assert sorted(p.name for p in local_store.root.iterdir()) == [".tmp"]


def test_ping_fails_when_the_directory_is_gone(local_store: LocalStore) -> None:
    (local_store.root / ".tmp").rmdir()
    with pytest.raises(Unavailable, match="not writable"):
        local_store.ping()
