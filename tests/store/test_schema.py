from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from bridge.store import db, migrate
from bridge.store.schema import metadata
from tests.databases import Databases


def test_migrations_build_exactly_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert compare_metadata(context, metadata) == []


def test_upgrade_is_idempotent(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert migrate.is_up_to_date(engine)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    # About SQLite whichever database the run is for.
    engine = db.create(f"sqlite:///{tmp_path / 'bridge.db'}")
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_migrations_run_up_and_down_from_an_empty_database(
    databases: Databases, tmp_path: Path
) -> None:
    engine = db.create(databases.fresh(tmp_path, migrated=False))
    try:
        assert migrate.current(engine) is None
        migrate.upgrade(engine)
        assert migrate.is_up_to_date(engine)
        command.downgrade(migrate._config(engine), "base")
        assert migrate.current(engine) is None
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()
