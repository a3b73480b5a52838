"""Disks that fill up or turn read-only under a live server (small tmpfs mounts): uploads answer 507 or
503 with a message naming the setting to look at, /readyz answers 503, and nothing is half-written."""

from collections.abc import Callable
from pathlib import Path

from tests.api.helpers import ADMIN_KEY, bearer
from tests.faults.conftest import (
    Tmpfs,
    assert_insufficient_storage,
    assert_unavailable,
    live_server,
    rows,
)

MIB = 1 << 20
Mount = Callable[[str, int], Tmpfs]


def test_a_full_store_disk_answers_507_and_readyz_503(tmpfs: Mount, tmp_path: Path) -> None:
    disk = tmpfs("data", 8 * MIB)
    with live_server(
        data_dir=disk.path,
        database_url=f"sqlite:///{tmp_path / 'alignd.db'}",
        readyz_min_free_bytes=2 * MIB,
        readyz_cache_seconds=0,
    ) as api:
        assert api.upload(rows()).status_code == 200
        assert api.client.get("/readyz").status_code == 200

        filler = disk.fill()
        full = api.upload(rows(2000))
        assert_insufficient_storage(full, "disk_full")
        assert "ALIGND_STORE_DIR" in full.json()["error"]["message"]
        ready = api.client.get("/readyz")
        assert_unavailable(ready, "disk_full")
        assert "ALIGND_DATA_DIR" in ready.json()["error"]["message"]
        assert list((disk.path / "data" / ".tmp").iterdir()) == [], "no partial upload left behind"

        filler.unlink()
        assert api.client.get("/readyz").status_code == 200
        assert api.upload(rows(2000)).status_code == 200


def test_a_full_sqlite_disk_answers_507(tmpfs: Mount) -> None:
    """SQLite's "database or disk is full": writes fail once its journal can grow no more."""
    disk = tmpfs("data", 8 * MIB)
    with live_server(data_dir=disk.path, readyz_min_free_bytes=0) as api:
        disk.fill()
        admin = bearer(ADMIN_KEY)
        for n in range(100):  # until the journal's last free pages are used
            created = api.client.post("/v1/admin/projects", json={"name": f"p-{n}"}, headers=admin)
            if created.status_code != 200:
                break
        assert_insufficient_storage(created, "database_full")
        assert "ALIGND_DATA_DIR" in created.json()["error"]["message"]
        assert api.client.get("/v1/files").status_code == 200, "reads still work"


def test_a_full_spool_answers_507_rather_than_resetting_the_connection(tmpfs: Mount, tmp_path: Path) -> None:
    spool = tmpfs("spool", 2 * MIB)
    with live_server(
        data_dir=tmp_path / "alignd", upload_spool_dir=spool.path, readyz_min_free_bytes=MIB
    ) as api:
        assert api.upload(rows()).status_code == 200
        spool.fill()
        full = api.upload(rows(60_000))  # about 4 MiB: the spool fills part way through
        assert_insufficient_storage(full, "disk_full")
        assert "ALIGND_UPLOAD_SPOOL_DIR" in full.json()["error"]["message"]
        assert_unavailable(api.client.get("/readyz"), "disk_full")
        assert api.client.get("/healthz").status_code == 200


def test_a_read_only_store_answers_503(tmpfs: Mount, tmp_path: Path) -> None:
    disk = tmpfs("data", 8 * MIB)
    with live_server(
        data_dir=disk.path,
        database_url=f"sqlite:///{tmp_path / 'alignd.db'}",
        readyz_min_free_bytes=0,
        readyz_cache_seconds=0,
    ) as api:
        file_id = api.upload(rows()).json()["id"]
        disk.remount("ro")
        refused = api.upload(rows())
        assert_unavailable(refused, "read_only_storage")
        assert "read-only" in refused.json()["error"]["message"]
        ready = api.client.get("/readyz")
        assert_unavailable(ready, "unavailable")
        assert "read-only file system" in ready.json()["error"]["message"]
        assert api.client.get(f"/v1/files/{file_id}/content").content == rows(), "reads still work"

        disk.remount("rw")
        assert api.client.get("/readyz").status_code == 200
        assert api.upload(rows()).status_code == 200
