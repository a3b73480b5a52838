"""alignd/db.py: engines, and the schema check the server runs at start (migrate empty, refuse the rest)."""

import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, Table, event, inspect, text
from sqlmodel import SQLModel

from alignd import db

TABLES = {
    "projects",
    "api_keys",
    "files",
    "base_models",
    "jobs",
    "job_events",
    "metrics",
    "checkpoints",
    "leases",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "integration_credentials",
    "integration_runs",
    "runs",
    "evals",
    "eval_runs",
    "eval_output_items",
}


def _schema_diff(engine: Engine, metadata: MetaData) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_first_start_migrates_an_empty_database(db_url: str) -> None:
    engine = db.make_engine(db_url)
    assert db.current_revision(engine) is None

    db.check_schema(engine)

    assert db.current_revision(engine) == db.head_revision() == "0004_evals"
    assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    engine.dispose()


def test_check_schema_at_head_changes_nothing(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    db.check_schema(engine)
    db.check_schema(engine)

    assert not [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT"))]
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)

    assert _schema_diff(engine, SQLModel.metadata) == []

    # The comparison does see differences: a column the migration lacks shows up.
    changed = MetaData()
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(changed)
    Table("jobs", changed, Column("not_migrated", Integer), extend_existing=True)
    assert [diff[0] for diff in _schema_diff(engine, changed)] == ["add_column"]  # type: ignore[index]
    engine.dispose()


def test_refuses_an_older_revision_until_upgraded(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    head = db.head_revision()
    # A newer alignd: the same migrations plus a revision 0099 this database has not had.
    newer = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "0099_next.py").write_text(
        f'revision = "0099"\ndown_revision = "{head}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    monkeypatch.setattr(db, "MIGRATIONS_DIR", newer)

    with pytest.raises(
        db.SchemaError, match=rf"revision {head}, older than this alignd's 0099: run `alignd db upgrade`"
    ):
        db.check_schema(engine)

    db.upgrade(engine)
    db.check_schema(engine)
    assert db.current_revision(engine) == "0099"
    engine.dispose()


def test_refuses_a_database_migrated_by_a_newer_alignd(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))

    with pytest.raises(
        db.SchemaError, match=r"migrated by a newer alignd \(revision 0099; .* upgrade alignd"
    ):
        db.check_schema(engine)
    engine.dispose()


def test_refuses_tables_without_a_revision(db_url: str) -> None:
    engine = db.make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))

    with pytest.raises(db.SchemaError, match=r"has tables \(someone_elses\) but no alignd schema revision"):
        db.check_schema(engine)
    assert set(inspect(engine).get_table_names()) == {"someone_elses"}
    engine.dispose()


def test_refuses_alignd_tables_whose_revision_was_lost(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))

    with pytest.raises(
        db.SchemaError, match=r"has tables \(api_keys, .*, \.\.\.\) but no alignd schema revision"
    ):
        db.check_schema(engine)
    engine.dispose()


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'new' / 'dir' / 'alignd.db'}")
    with engine.connect() as connection:
        pragmas = {
            name: connection.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        }
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": db.SQLITE_BUSY_TIMEOUT_MS}
    engine.dispose()


def test_in_memory_sqlite_keeps_one_database(tmp_path: Path) -> None:
    engine = db.make_engine("sqlite://")
    db.check_schema(engine)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
