"""Infrastructure failures as domain errors: a full or read-only disk, a database that is down or
full. Each becomes a 503 (worth retrying as it is, with `Retry-After`) or a 507 (retrying helps once an
operator frees space) whose message says what an operator should look at; anything else is left alone,
so a bug still surfaces as one.
"""

import errno
import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from alignd.errors import AligndError, InsufficientStorage, Unavailable

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = sqlite3.SQLITE_FULL
_SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
}
_POSTGRES_DISK_FULL = "53100"
DATABASE_DOWN = (
    "the database is not answering (it may be restarting); retry shortly. If this persists, an operator "
    "should check the database server that ALIGND_DATABASE_URL names"
)


def disk_error(exc: OSError, *, where: str) -> AligndError | None:
    """A full or read-only file system under `where` (what an operator would look at, such as
    "the local store (ALIGND_STORE_DIR)"); None for any other OSError."""
    if exc.errno in _DISK_FULL:
        return InsufficientStorage(
            f"no space left on the disk of {where}; an operator must free space or grow the volume, "
            "then retry",
            code="disk_full",
        )
    if exc.errno == errno.EROFS:
        return Unavailable(
            f"{where} is on a read-only file system; an operator must remount it read-write, then retry",
            code="read_only_storage",
        )
    return None


def database_error(exc: SQLAlchemyError) -> AligndError | None:
    """A database that is down, restarting, busy or full; None for anything else (a bad query is a bug
    and stays a 500)."""
    original = getattr(exc, "orig", None)
    if isinstance(original, sqlite3.Error):
        return _sqlite_error(original)
    if isinstance(original, OSError):
        return disk_error(original, where="the database (ALIGND_DATA_DIR or ALIGND_DATABASE_URL)")
    if getattr(original, "sqlstate", None) == _POSTGRES_DISK_FULL:
        return _database_full()
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return Unavailable(DATABASE_DOWN, code="database_unavailable")
    return None


def _sqlite_error(original: sqlite3.Error) -> AligndError | None:
    primary = getattr(original, "sqlite_errorcode", -1) & 0xFF  # extended codes keep the primary below
    if primary == _SQLITE_FULL:
        return _database_full()
    if primary in _SQLITE_UNAVAILABLE:
        return Unavailable(
            f"the SQLite database cannot be written right now ({original}); retry shortly. If this "
            "persists, an operator should check the disk under ALIGND_DATA_DIR",
            code="database_unavailable",
        )
    return None


def _database_full() -> InsufficientStorage:
    return InsufficientStorage(
        "the database's disk is full; an operator must free space where the database keeps its files "
        "(ALIGND_DATA_DIR for SQLite), then retry",
        code="database_full",
    )
