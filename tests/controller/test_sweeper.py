"""The sweeper on a real database and local store: what interrupted uploads and deletes leave is
removed once older than the grace period, young things (an upload being registered right now) and
registered files are kept, and marked deletes are finished."""

import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.engine import Engine
from sqlmodel import Session

from alignd.db import session_factory
from alignd.files import stored_bytes
from alignd.models import FileModel, FileState, new_id
from alignd.storage.local import TMP_DIR, LocalStore
from alignd.storage.signing import UrlSigner
from alignd.sweeper import Sweeper
from tests.db.factories import make_project

GRACE = 3600.0


def _store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", signer=UrlSigner(b"k"), public_url="http://x")


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _object(store: LocalStore, *, age: float) -> str:
    key = f"files/{new_id('file-')}"
    store.put_bytes(key, b"{}\n")
    _age(store.root / key, age)
    return key


def _row(session: Session, project_id: str, key: str, status: FileState = FileState.processed) -> FileModel:
    row = FileModel(
        id=key.removeprefix("files/"),
        project_id=project_id,
        filename="f.jsonl",
        bytes=3,
        sha256="0" * 64,
        storage_key=key,
        status=status.value,
    )
    session.add(row)
    session.commit()
    return row


def test_old_leftovers_go_young_ones_and_registered_files_stay(
    engine: Engine, session: Session, tmp_path: Path
) -> None:
    store = _store(tmp_path)
    project = make_project(session)
    registered = _object(store, age=2 * GRACE)
    _row(session, project.id, registered)
    _object(store, age=2 * GRACE)  # an upload killed before its row was written
    young_orphan = _object(store, age=GRACE / 2)
    old_staged, young_staged = store.root / TMP_DIR / "put-old", store.root / TMP_DIR / "put-young"
    for path, age in ((old_staged, 2 * GRACE), (young_staged, GRACE / 2)):
        path.write_bytes(b"partial")
        _age(path, age)
    deleting = _object(store, age=0)
    _row(session, project.id, deleting, FileState.deleting)
    registry = CollectorRegistry()
    removed = Counter("removed", "test", ["kind"], registry=registry)

    report = Sweeper(session_factory(engine), store, GRACE, removed=removed).sweep()

    assert report.counts() == {"staged": 1, "unregistered": 1, "deleting": 1}
    assert set(store.list("files/")) == {registered, young_orphan}
    assert not old_staged.exists() and young_staged.exists()
    session.expire_all()
    assert session.get(FileModel, deleting.removeprefix("files/")) is None
    assert stored_bytes(session, project.id) == store.size(registered)
    assert registry.get_sample_value("removed_total", {"kind": "staged"}) == 1
    assert registry.get_sample_value("removed_total", {"kind": "unregistered"}) == 1
    assert registry.get_sample_value("removed_total", {"kind": "deleting"}) == 1


def test_a_second_pass_finds_nothing(engine: Engine, session: Session, tmp_path: Path) -> None:
    store = _store(tmp_path)
    _object(store, age=2 * GRACE)
    sweeper = Sweeper(session_factory(engine), store, GRACE)
    assert sweeper.sweep().unregistered == 1
    assert sweeper.sweep().counts() == {"staged": 0, "unregistered": 0, "deleting": 0}
