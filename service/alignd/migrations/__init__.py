"""Alembic migrations for alignd's database. Run them with `alignd db upgrade` or `alignd.db.upgrade`.

There is no alembic.ini: `alignd.db.alembic_config()` builds the configuration in code. To add a revision
after changing `alignd/models.py`, autogenerate a draft, then read and edit it (name constraints and
indexes explicitly; SQLite alters tables in batch mode):

    from alembic import command
    from alignd import db
    engine = db.make_engine("sqlite:////tmp/draft.db"); db.upgrade(engine)
    command.revision(db.alembic_config(url="sqlite:////tmp/draft.db"), message="...", autogenerate=True,
                     rev_id="0002")

`tests/db/test_migrations.py` checks that the migrated schema matches the models on SQLite and Postgres.
"""
