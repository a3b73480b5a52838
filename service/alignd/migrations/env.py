"""Alembic's environment for alignd: the target metadata is every SQLModel table in `alignd.models`.

`alignd.db` passes an open connection in `config.attributes["connection"]` (so it can hold a migration
lock around the upgrade); without one, the URL comes from the `sqlalchemy.url` option or the settings.
SQLite cannot ALTER most things, so migrations render in batch mode there.
"""

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

import alignd.models  # noqa: F401  (registers every table on SQLModel.metadata)
from alignd.config import get_settings
from alignd.db import make_engine

target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    """`--sql` mode: render the DDL for a URL without connecting."""
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url()
    engine = make_engine(url)
    try:
        with engine.begin() as own_connection:
            run_with(own_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
