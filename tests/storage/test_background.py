"""Writing an object on a background thread (what an upload does while it validates): closed, the
object is there whole; aborted, nothing is stored and an older object under the key survives; a store
error reaches the writing thread."""

import os

import pytest

from alignd.errors import InvalidRequest
from alignd.storage import LocalStore, ObjectStore
from alignd.storage.background import BackgroundWriter

CHUNKS = [os.urandom(300_000) for _ in range(12)]


def test_close_stores_every_chunk_in_order(store: ObjectStore) -> None:
    writer = BackgroundWriter(store, "files/whole", content_type="application/jsonl", depth=2)
    for chunk in CHUNKS:
        writer.write(chunk)
    assert writer.close() == sum(map(len, CHUNKS))
    assert b"".join(store.iter_bytes("files/whole")) == b"".join(CHUNKS)


def test_abort_stores_nothing_and_keeps_an_older_object(store: ObjectStore) -> None:
    store.put_bytes("files/kept", b"old")
    for key in ("files/new", "files/kept"):
        writer = BackgroundWriter(store, key, content_type="application/jsonl", depth=2)
        for chunk in CHUNKS[:5]:
            writer.write(chunk)
        writer.abort()
    assert not store.exists("files/new")
    assert b"".join(store.iter_bytes("files/kept")) == b"old"


def test_a_store_error_is_raised_in_the_writing_thread(local_store: LocalStore) -> None:
    writer = BackgroundWriter(local_store, "../outside", content_type="application/jsonl", depth=1)
    with pytest.raises(InvalidRequest, match="storage key"):
        for chunk in CHUNKS:
            writer.write(chunk)
        writer.close()
