"""What the sweeper asks of a store: when an object was written (to spare young ones) and, for the local
store, the removal of temp files that interrupted writes left."""

import os
import time

import pytest

from alignd.errors import NotFound
from alignd.storage import LocalStore, ObjectStore
from alignd.storage.local import TMP_DIR


def test_modified_at_is_when_the_object_was_written(store: ObjectStore) -> None:
    before = time.time()
    store.put_bytes("files/file-a", b"x")
    after = time.time()
    # S3 keeps whole seconds.
    assert before - 1 <= store.modified_at("files/file-a") <= after + 1
    with pytest.raises(NotFound):
        store.modified_at("files/file-missing")


def test_remove_staged_takes_only_old_temp_files(local_store: LocalStore) -> None:
    staging = local_store.root / TMP_DIR
    old, young = staging / "put-old", staging / "put-young"
    for path in (old, young):
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    local_store.put_bytes("files/file-b", b"kept")

    assert local_store.remove_staged(older_than=time.time() - 3600) == 1

    assert sorted(p.name for p in staging.iterdir()) == ["put-young"]
    assert local_store.list("files/") == ["files/file-b"]
