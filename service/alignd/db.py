"""The database: engines, sessions, and the schema's migrations.

SQLite (the embedded default) and Postgres behave the same to callers. The schema belongs to Alembic
(`alignd/migrations/`): on start the server migrates an empty database and refuses any other schema it
does not recognise as current (older, newer, or not made by alignd) rather than guessing.

A SQLite file holds secrets (webhook signing secrets, key hashes), so it and its `-wal`/`-shm` are the
owner's alone (0600), in a data directory that is too (0700); both are tightened at every start, for
files an older alignd left readable.
"""

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Update,
    create_engine,
    event,
    inspect,
    make_url,
    text,
    update,
)
from sqlalchemy.orm import configure_mappers, make_transient_to_detached, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, col

log = logging.getLogger("alignd.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another writer's transaction before failing."""
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5
"""How long opening a Postgres connection may take (libpq waits forever by default), so a request to a
database host that is gone fails with a 503 instead of holding its thread. A `connect_timeout` in the
URL's query wins."""
MIGRATION_LOCK_KEY = 0x616C69676E64
"""Postgres advisory lock held while checking or migrating, so two servers starting on one empty
database do not both create the tables."""
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database; it creates them with the database file's own mode."""


class SchemaError(RuntimeError):
    """The database's schema is not the one this alignd expects; the message says what to do."""


def guarded_update(model: Any, row_id: str, lock_token: str, *conditions: ColumnElement[bool]) -> Update:
    """An UPDATE of one row of `model` that applies only while its `lock_token` is still the one the
    caller read (compare-and-set); the result's rowcount says whether it did. Claims, results and
    status moves all go through it, so whoever changed the row since wins."""
    return (
        update(model)
        .where(col(model.id) == row_id, col(model.lock_token) == lock_token, *conditions)
        .execution_options(synchronize_session=False)
    )


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for a SQLAlchemy URL (`sqlite:///path`, `postgresql+psycopg://...`).

    SQLite: usable from several threads, WAL journal (readers don't block the writer), a busy timeout
    instead of instant "database is locked", foreign keys enforced; the file's directory is created.
    Postgres: connections are pinged before use, so a restarted server doesn't fail the first request,
    and connecting gives up after POSTGRES_CONNECT_TIMEOUT_SECONDS.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}
        )
        return create_engine(url, echo=echo, pool_pre_ping=True, connect_args=connect_args)

    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        kwargs["poolclass"] = StaticPool  # one connection, or every connection sees its own empty DB
    elif not database.startswith("file:"):
        private_sqlite_file(Path(database).expanduser())
    engine = create_engine(url, echo=echo, **kwargs)
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def make_private_dir(path: Path) -> None:
    """Create the directory, owner-only; an existing one loses its group and other permissions."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR_MODE)


def private_sqlite_file(path: Path) -> None:
    """Create the database file owner-only before SQLite opens it (SQLite would make it 0644), and
    tighten an existing one and its companion files."""
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        if file.exists():
            _tighten(file, PRIVATE_FILE_MODE)


def _tighten(path: Path, allowed: int) -> None:
    """Drop the permission bits outside `allowed`; never adds any. A file this process may not chmod
    (a volume owned by someone else) is left as it is, with a warning."""
    mode = path.stat().st_mode & 0o7777
    if mode & ~allowed:
        try:
            path.chmod(mode & allowed)
        except PermissionError:
            log.warning(
                "cannot restrict %s to mode %o (it is %o); make it private to alignd's user",
                path,
                allowed,
                mode,
            )


def loop_read_engine(url: str) -> Engine | None:
    """An engine for reads made on the event loop itself, without a trip to the thread pool.

    One SQLite connection that only the loop's thread uses (StaticPool), so a read never waits for a
    pooled connection; read-only; and with no busy wait, so a locked database fails the read at once and
    the caller takes its ordinary path instead of stalling the loop. None for Postgres (a read there is
    a network round trip, which must not block the loop) and for in-memory SQLite (a second connection
    would see another, empty database).
    """
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or "mode=memory" in database:
        return None
    engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_reader_on_connect)
    return engine


def _sqlite_reader_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.execute("PRAGMA query_only=ON")
    finally:
        cursor.close()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (domain functions return committed rows)."""
    return sessionmaker(bind=engine, class_=Session, expire_on_commit=False)


Row = TypeVar("Row", bound=SQLModel)


def detached_row(model: type[Row], values: dict[str, Any]) -> Row:
    """A detached instance of a table model with these attribute values, for rows read without a session
    (hot paths, caches). Built the way SQLAlchemy builds a loaded row, at a fifth of the constructor's
    cost: it reads like a loaded row, and adding it to a session updates the existing row rather than
    inserting a new one."""
    configure_mappers()  # a no-op once the first query has run
    row: Row = inspect(model).class_manager.new_instance()
    row.__dict__.update(values)
    make_transient_to_detached(row)
    return row


# ---- migrations ----------------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None, *, url: str | None = None) -> Config:
    """Alembic's configuration, built in code (no alembic.ini). With `connection`, migrations run on it
    inside the caller's transaction; with `url`, env.py opens its own; with neither, the settings' URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    if head is None:
        raise SchemaError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in _script().walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision; None when it was never migrated."""
    with engine.connect() as connection:
        return _current(connection)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _lock(connection: Connection) -> None:
    """Serialise schema checks and migrations across processes (Postgres; SQLite's writer lock suffices)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to `revision` (what `alignd db upgrade` runs)."""
    with engine.begin() as connection:
        _lock(connection)
        command.upgrade(alembic_config(connection), revision)


def check_schema(engine: Engine) -> None:
    """Called at server start: migrate an empty database; accept one at head; refuse anything else.

    Raises SchemaError for a database at an older revision (run `alignd db upgrade`), at a revision this
    alignd does not know (migrated by a newer alignd), or with tables but no Alembic revision.
    """
    head = head_revision()
    with engine.begin() as connection:
        _lock(connection)
        current = _current(connection)
        if current == head:
            return
        if current is None:
            tables = sorted(set(inspect(connection).get_table_names()) - {VERSION_TABLE})
            if tables:
                shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
                raise SchemaError(
                    f"the database at {_safe_url(engine)} has tables ({shown}) but no alignd schema "
                    "revision; it was not created by alignd. Point ALIGND_DATABASE_URL at an empty "
                    "database or at an alignd database."
                )
            command.upgrade(alembic_config(connection), "head")
            return
        if current in known_revisions():
            raise SchemaError(
                f"the database schema is at revision {current}, older than this alignd's {head}: "
                "run `alignd db upgrade` (back up the database first), then start the server again."
            )
        raise SchemaError(
            f"this database was migrated by a newer alignd (revision {current}; this alignd knows up to "
            f"{head}); upgrade alignd."
        )


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
