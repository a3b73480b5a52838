"""The SQLite file holds webhook secrets and key hashes: it, its -wal and -shm, and the data directory are
the owner's alone, whether alignd creates them or finds them left open by an older version."""

import stat
from pathlib import Path

from sqlalchemy import text

from alignd import db


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_wal_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "alignd.db"
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:  # WAL mode: SQLite makes -wal and -shm beside the file
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
        files = [path, path.with_name("alignd.db-wal"), path.with_name("alignd.db-shm")]
        assert [_mode(file) for file in files] == [0o600] * 3
        assert _mode(path.parent) == 0o700
    finally:
        engine.dispose()


def test_existing_files_are_tightened_and_never_loosened(tmp_path: Path) -> None:
    path = tmp_path / "alignd.db"
    wal = path.with_name("alignd.db-wal")
    path.touch(mode=0o644)
    wal.touch()
    wal.chmod(0o400)
    db.private_sqlite_file(path)
    assert (_mode(path), _mode(wal)) == (0o600, 0o400)

    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    db.make_private_dir(data_dir)
    assert _mode(data_dir) == 0o700
