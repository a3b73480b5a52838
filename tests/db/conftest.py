"""Database fixtures: every DB test runs on SQLite and on Postgres.

- `db_url`: a fresh, empty database for one test (migration tests).
- `engine` / `session`: one migrated database per backend for the whole run; tests create their own rows
  (random ids and names), so they do not need a clean database each.

Postgres is the server on 127.0.0.1:5432 (trust auth, database `test`, user postgres or root; override
with ALIGND_TEST_POSTGRES_URL). Each database is `alignd_test_<random hex>`, dropped at teardown.
"""

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from alignd import db

POSTGRES_ADMIN_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


class PostgresDatabases:
    """Creates throwaway databases on a Postgres server and drops them all at the end."""

    def __init__(self, admin: Engine) -> None:
        self.admin = admin
        self.created: list[str] = []

    def create(self) -> str:
        name = f"alignd_test_{secrets.token_hex(6)}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return make_url(self.admin.url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.remove(str(name))

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(make_url(self.admin.url).set(database=name).render_as_string(hide_password=False))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    override = os.environ.get("ALIGND_TEST_POSTGRES_URL")
    errors = []
    for url in [override] if override else POSTGRES_ADMIN_URLS:
        admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        try:
            with admin.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError as exc:
            admin.dispose()
            errors.append(f"{make_url(url).render_as_string()}: {str(exc.orig).strip().splitlines()[0]}")
            continue
        databases = PostgresDatabases(admin)
        yield databases
        databases.drop_all()
        admin.dispose()
        return
    pytest.skip("PostgreSQL is not reachable; tried " + "; ".join(errors))


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _new_database(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{directory / 'alignd.db'}"
    databases: PostgresDatabases = request.getfixturevalue("postgres")
    return databases.create()


def _drop_database(backend: str, request: pytest.FixtureRequest, url: str) -> None:
    if backend == "postgres":
        databases: PostgresDatabases = request.getfixturevalue("postgres")
        databases.drop(url)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the current backend."""
    url = _new_database(backend, request, tmp_path)
    yield url
    _drop_database(backend, request, url)


@pytest.fixture(scope="session")
def engine(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One migrated database per backend, shared by the run."""
    url = _new_database(backend, request, tmp_path_factory.mktemp(f"db_{backend}"))
    engine = db.make_engine(url)
    db.upgrade(engine)
    yield engine
    engine.dispose()
    _drop_database(backend, request, url)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with db.session_factory(engine)() as session:
        yield session
