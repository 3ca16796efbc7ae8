from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from bridge.store import connections, db, migrate
from bridge.store.schema import UTCDateTime, metadata
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
            checkpoint = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            assert checkpoint == db.WAL_CHECKPOINT_PAGES
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


def test_utc_columns_convert_an_aware_value_from_the_database(engine: Engine) -> None:
    column = UTCDateTime()
    chatham = datetime(
        2025, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=13, minutes=45))
    )
    read = column.process_result_value(chatham, engine.dialect)
    assert read == chatham
    assert read is not None
    assert read.utcoffset() == timedelta(0)


def test_timestamps_do_not_depend_on_the_session_time_zone(engine: Engine) -> None:
    moment = datetime(2025, 3, 1, 23, 30, 15, 250000, tzinfo=UTC)
    with db.writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'America/St_Johns'")
        connection = connections.insert(
            conn,
            state=connections.State.ACTIVE,
            resource_id=1,
            coworker_id=None,
            user_id="u",
            calendar_id="c",
            name=None,
            subscription_id="s",
            subscription_expires_at=moment.astimezone(
                timezone(timedelta(hours=-3, minutes=-30))
            ),
            client_state="x" * 32,
            now=moment,
        )
    with db.reading(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'Asia/Kolkata'")
        found = connections.get(conn, connection.id)
    assert found is not None
    assert found.subscription_expires_at == moment
    assert found.created_at == moment
    assert found.created_at.tzinfo is UTC
