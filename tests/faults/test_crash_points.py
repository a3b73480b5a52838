"""A live `alignd serve` SIGKILLed at each step of an upload and of a delete: after a restart and one
sweeper pass nothing is left behind (no staged temp file, no object without a row, no half-deleted
row) and the bytes the database counts are the bytes in the store.

The kill while storing is a real one from outside, timed by the staged temp file appearing; the kills
between two writes use the server's test-only crash points (`alignd.crash_points`). The sweeper pass
runs in the test, on the server's database and store, with its clock past the grace period.
"""

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import select

from alignd.config import Settings
from alignd.crash_points import ENV as CRASH_AT
from alignd.db import make_engine, session_factory
from alignd.models import FileModel, FileState
from alignd.server import free_port, start_serve
from alignd.storage import store_from_settings
from alignd.storage.local import TMP_DIR
from alignd.sweeper import Sweeper, SweepReport

ADMIN_KEY = "sk-alignd-admin-crash-test"
ROW = b'{"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}\n'
BIG_ROWS = 1_000_000
"""About 70 MB: the server takes a while to validate and store it, long enough to be killed at it."""


class Server:
    """`alignd serve` children, one at a time, on a data directory that outlives them (SQLite and the
    local store), started with or without a crash point."""

    def __init__(self, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.settings = Settings(data_dir=data_dir)
        self._monkeypatch = monkeypatch
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, crash_at: str | None = None) -> None:
        if crash_at is None:
            self._monkeypatch.delenv(CRASH_AT, raising=False)
        else:
            self._monkeypatch.setenv(CRASH_AT, crash_at)
        port = free_port()
        self._process = start_serve(self.settings.data_dir, admin_key=ADMIN_KEY, port=port)
        self.url = f"http://127.0.0.1:{port}"

    def killed(self) -> bool:
        """Whether the server died of SIGKILL (waiting for it to be gone)."""
        return self.process.wait(timeout=30) == -signal.SIGKILL

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=30)

    @property
    def process(self) -> "subprocess.Popen[bytes]":
        assert self._process is not None, "start() the server first"
        return self._process


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    running = Server(tmp_path / "alignd", monkeypatch)
    yield running
    running.stop()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _project_key(url: str) -> str:
    admin = _bearer(ADMIN_KEY)
    project = httpx.post(f"{url}/v1/admin/projects", json={"name": "crash"}, headers=admin).json()
    key = httpx.post(f"{url}/v1/admin/projects/{project['id']}/api_keys", json={}, headers=admin)
    value: str = key.json()["value"]
    return value


def _upload(url: str, key: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/files",
        files={"file": ("prefs.jsonl", body)},
        data={"purpose": "fine-tune"},
        headers=_bearer(key),
        timeout=120,
    )


def _sweep(settings: Settings) -> SweepReport:
    """One sweeper pass on the server's database and store, its clock past the grace period."""
    engine = make_engine(settings.resolved_database_url())
    try:
        grace = settings.sweeper_grace_seconds
        late = time.time() + grace + 1
        store = store_from_settings(settings)
        return Sweeper(session_factory(engine), store, grace, clock=lambda: late).sweep()
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Leftovers:
    staged: list[str]
    """Temp files in the local store's staging directory."""
    unregistered: list[str]
    """Objects under files/ with no row."""
    deleting: list[str]
    """Rows marked deleting."""
    counted_bytes: int
    """What the database counts: the bytes of every file row."""
    stored_bytes: int
    """What the store holds under files/."""


def _leftovers(settings: Settings) -> Leftovers:
    store = store_from_settings(settings)
    engine = make_engine(settings.resolved_database_url())
    try:
        with session_factory(engine)() as session:
            rows = list(session.exec(select(FileModel)))
            counted = session.exec(select(func.coalesce(func.sum(FileModel.bytes), 0))).one()
    finally:
        engine.dispose()
    keys = {row.storage_key for row in rows}
    return Leftovers(
        staged=sorted(p.name for p in (settings.resolved_store_dir() / TMP_DIR).iterdir()),
        unregistered=[key for key in store.list("files/") if key not in keys],
        deleting=[row.id for row in rows if row.status == FileState.deleting.value],
        counted_bytes=int(counted),
        stored_bytes=store.total_bytes("files/"),
    )


CLEAN = Leftovers(staged=[], unregistered=[], deleting=[], counted_bytes=0, stored_bytes=0)


def _wait_for_staged(staging: Path, deadline: float) -> None:
    while not any(staging.glob("put-*")):
        assert time.monotonic() < deadline, "the server never started storing the upload"
        time.sleep(0.002)


def test_killed_while_storing_an_upload(server: Server) -> None:
    server.start()
    key = _project_key(server.url)
    uploading = threading.Thread(target=_upload_ignoring_the_kill, args=(server.url, key, ROW * BIG_ROWS))
    uploading.start()

    _wait_for_staged(server.settings.resolved_store_dir() / TMP_DIR, time.monotonic() + 120)
    server.kill()
    uploading.join(timeout=60)

    assert _leftovers(server.settings).staged != []
    server.start()
    assert httpx.get(f"{server.url}/v1/files", headers=_bearer(key)).json()["data"] == []
    assert _sweep(server.settings).staged == 1
    assert _leftovers(server.settings) == CLEAN


def _upload_ignoring_the_kill(url: str, key: str, body: bytes) -> None:
    with contextlib.suppress(httpx.TransportError):
        _upload(url, key, body)


def test_killed_after_storing_an_upload_before_registering_it(server: Server) -> None:
    server.start(crash_at="upload.stored")
    key = _project_key(server.url)

    with pytest.raises(httpx.TransportError):
        _upload(server.url, key, ROW)

    assert server.killed()
    assert len(_leftovers(server.settings).unregistered) == 1
    server.start()
    assert httpx.get(f"{server.url}/v1/files", headers=_bearer(key)).json()["data"] == []
    assert _sweep(server.settings).unregistered == 1
    assert _leftovers(server.settings) == CLEAN


@pytest.mark.parametrize(("step", "object_left"), [("delete.marked", True), ("delete.object_removed", False)])
def test_killed_in_the_middle_of_a_delete(server: Server, step: str, object_left: bool) -> None:
    server.start(crash_at=step)
    key = _project_key(server.url)
    file_id = _upload(server.url, key, ROW).json()["id"]

    with pytest.raises(httpx.TransportError):
        httpx.delete(f"{server.url}/v1/files/{file_id}", headers=_bearer(key))

    assert server.killed()
    server.start()
    # Hidden at once: not readable, not listed; its bytes counted until the object is gone.
    assert httpx.get(f"{server.url}/v1/files/{file_id}", headers=_bearer(key)).status_code == 404
    assert httpx.get(f"{server.url}/v1/files", headers=_bearer(key)).json()["data"] == []
    left = _leftovers(server.settings)
    assert left.deleting == [file_id] and left.counted_bytes == len(ROW)
    assert left.stored_bytes == (len(ROW) if object_left else 0)
    assert _sweep(server.settings).deleting == 1
    assert _leftovers(server.settings) == CLEAN
