"""The ObjectStore contract, run against both backends (the `store` fixture), plus the key rules."""

import hashlib

import pytest

from alignd.errors import NotFound
from alignd.storage import InvalidKey, ObjectStore, validate_key, validate_prefix
from tests.storage.streams import Boom, MiB, failing, payload

BAD_KEYS = ["../x", "a/../b", "/abs", "a//b", "a/./b", "a/.", "a b", "a/b c", "", "a/", "tab\t", "é", "a\\b"]


def read(store: ObjectStore, key: str) -> bytes:
    return b"".join(store.iter_bytes(key))


def test_round_trip_bytes(store: ObjectStore) -> None:
    assert store.put_bytes("files/file-1", b"hello\nworld\n") == 12
    assert read(store, "files/file-1") == b"hello\nworld\n"
    assert store.size("files/file-1") == 12
    assert store.exists("files/file-1")


def test_empty_object(store: ObjectStore) -> None:
    assert store.put_stream("files/empty", iter([])) == 0
    assert store.exists("files/empty")
    assert store.size("files/empty") == 0
    assert read(store, "files/empty") == b""


def test_overwrite_replaces(store: ObjectStore) -> None:
    store.put_bytes("k", b"first version")
    store.put_bytes("k", b"second")
    assert read(store, "k") == b"second"


def test_iter_bytes_respects_chunk_size(store: ObjectStore) -> None:
    store.put_bytes("k", bytes(range(256)) * 10)
    chunks = list(store.iter_bytes("k", chunk_size=1000))
    assert b"".join(chunks) == bytes(range(256)) * 10
    assert all(len(c) <= 1000 for c in chunks)
    assert len(chunks) >= 3


def test_streaming_put_of_a_multipart_sized_payload(store: ObjectStore) -> None:
    """40 MiB in 1 MiB chunks: three S3 parts of 16 MiB, generated and checked without holding it all."""
    expected = hashlib.sha256()
    for chunk in payload(40):
        expected.update(chunk)
    assert store.put_stream("jobs/j1/adapter/model.safetensors", payload(40)) == 40 * MiB
    assert store.size("jobs/j1/adapter/model.safetensors") == 40 * MiB
    actual = hashlib.sha256()
    for chunk in store.iter_bytes("jobs/j1/adapter/model.safetensors"):
        actual.update(chunk)
    assert actual.hexdigest() == expected.hexdigest()


@pytest.mark.parametrize("fail_after_mib", [0, 3, 20], ids=["at-start", "first-part", "after-a-part"])
def test_failure_mid_stream_leaves_nothing(store: ObjectStore, fail_after_mib: int) -> None:
    """The iterator's own exception comes out, and no object (not even a partial one) appears.
    At 20 MiB, S3 has already uploaded a 16 MiB part of a multipart upload that must be aborted."""
    with pytest.raises(Boom, match="invalid line"):
        store.put_stream("files/file-bad", failing(fail_after_mib))
    assert not store.exists("files/file-bad")
    assert store.list() == []
    assert store.total_bytes() == 0


def test_failed_overwrite_keeps_the_old_object(store: ObjectStore) -> None:
    store.put_bytes("files/f", b"good data")
    with pytest.raises(Boom):
        store.put_stream("files/f", failing(2))
    assert read(store, "files/f") == b"good data"


def test_list_total_bytes_and_delete_prefix(store: ObjectStore) -> None:
    keys = {
        "files/file-a": b"a" * 10,
        "files/file-b": b"b" * 20,
        "jobs/j1/checkpoints/step-10/adapter.safetensors": b"c" * 30,
        "jobs/j1/checkpoints/step-10/state.json": b"{}",
        "jobs/j10/logs/trainer.log": b"log",
    }
    for key, data in keys.items():
        store.put_bytes(key, data)

    assert store.list() == sorted(keys)
    assert store.list("files/") == ["files/file-a", "files/file-b"]
    assert store.list("files/file-a") == ["files/file-a"]
    assert store.list("jobs/j1/") == [
        "jobs/j1/checkpoints/step-10/adapter.safetensors",
        "jobs/j1/checkpoints/step-10/state.json",
    ]
    assert store.list("jobs/j1") == sorted(k for k in keys if k.startswith("jobs/j1"))  # string prefix
    assert store.list("nothing/") == []
    assert store.total_bytes() == 65
    assert store.total_bytes("files/") == 30
    assert store.total_bytes("jobs/j1/") == 32

    assert store.delete_prefix("jobs/j1/") == 2
    assert store.list("jobs/") == ["jobs/j10/logs/trainer.log"]
    assert store.delete_prefix("jobs/j1/") == 0


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes("files/f", b"x")
    store.delete("files/f")
    store.delete("files/f")
    store.delete("never/existed")
    assert not store.exists("files/f")
    assert store.list() == []


def test_missing_key_is_not_found(store: ObjectStore) -> None:
    """iter_bytes raises when called, before iteration, so a route can answer 404 before streaming."""
    with pytest.raises(NotFound):
        store.iter_bytes("files/missing")
    with pytest.raises(NotFound):
        store.size("files/missing")
    assert not store.exists("files/missing")


def test_a_prefix_is_not_an_object(store: ObjectStore) -> None:
    store.put_bytes("jobs/j1/adapter/weights", b"w")
    assert not store.exists("jobs/j1/adapter")
    with pytest.raises(NotFound):
        store.size("jobs/j1/adapter")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_by_every_method(store: ObjectStore, key: str) -> None:
    calls = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_stream(key, iter([b"x"])),
        lambda: store.iter_bytes(key),
        lambda: store.size(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.presigned_get_url(key, 60),
        lambda: store.presigned_put_url(key, 60),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert store.list() == []


@pytest.mark.parametrize("prefix", ["../", "/abs", "a//", "a/./", "a b"])
def test_bad_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    for call in (store.list, store.total_bytes, store.delete_prefix):
        with pytest.raises(InvalidKey):
            call(prefix)


def test_delete_prefix_refuses_the_empty_prefix(store: ObjectStore) -> None:
    store.put_bytes("files/f", b"x")
    with pytest.raises(InvalidKey, match="empty prefix"):
        store.delete_prefix("")
    assert store.exists("files/f")


@pytest.mark.parametrize("seconds", [0, -1, 7 * 24 * 3600 + 1])
def test_presigned_expiry_must_be_within_seven_days(store: ObjectStore, seconds: int) -> None:
    with pytest.raises(ValueError, match="expires_seconds"):
        store.presigned_get_url("files/f", seconds)


def test_ping(store: ObjectStore) -> None:
    store.ping()


@pytest.mark.parametrize(
    "key",
    ["files/file-abc123", "jobs/j_1/checkpoints/step-10/adapter.safetensors", "a", "..a/b..", "x" * 512],
)
def test_good_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", [*BAD_KEYS, "x" * 513, "a/" * 256 + "b"])
def test_validate_key_rejects(key: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        validate_key(key)
    assert isinstance(caught.value, ValueError)
    assert caught.value.status_code == 400


def test_validate_prefix() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("jobs/j1/") == "jobs/j1/"
    assert validate_prefix("jobs/j1/step-") == "jobs/j1/step-"
    with pytest.raises(InvalidKey):
        validate_prefix("jobs//")
