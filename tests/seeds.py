"""The two connections that the replay fixtures (tests/fixtures/graph) belong to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from bridge.store import db
from bridge.store.schema import connections, inbox, utcnow

FIXTURES = Path(__file__).parent / "fixtures" / "graph"

SUBSCRIPTION_A = "8f2c6a1e-3b7d-4c59-9e41-2d6f0b7a9c13"
SUBSCRIPTION_B = "c41d9e07-6a2b-48f3-b1c5-7e9a3d2f6b84"
SECRET_A = "kQ7v2XbR9sLm4TzWc8YpN3dF6hJ1gA5e"
SECRET_B = "Zr3pT8wL1nV6bK9xQ4mC7sH2jD5fG0aY"
USER_A = "0d7e4b9c-2f61-4a83-b5d0-9c1e7f3a6b28"
USER_B = "6a3c8f1d-7b29-4e05-a4c6-1f8d9b2e7c30"


def seed_fixture_connections(engine: Engine) -> dict[str, int]:
    """Insert connections A and B; returns their ids by subscription id."""
    now = utcnow()
    ids = {}
    with db.writing(engine) as conn:
        for resource_id, user, subscription, secret in (
            (101, USER_A, SUBSCRIPTION_A, SECRET_A),
            (102, USER_B, SUBSCRIPTION_B, SECRET_B),
        ):
            ids[subscription] = conn.execute(
                connections.insert()
                .values(
                    state="active",
                    resource_id=resource_id,
                    user_id=user,
                    calendar_id=f"calendar-of-{user}",
                    name="Meeting room",
                    subscription_id=subscription,
                    client_state=secret,
                    created_at=now,
                    updated_at=now,
                )
                .returning(connections.c.id)
            ).scalar_one()
    return ids


def stored_items(engine: Engine) -> list[dict[str, Any]]:
    with db.reading(engine) as conn:
        rows = conn.execute(select(inbox).order_by(inbox.c.id)).mappings()
        return [dict(row) for row in rows]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# A connection as the admin API and `--json` show it (product.md).
CONNECTION_KEYS = frozenset(
    {
        "id",
        "state",
        "resource_id",
        "coworker_id",
        "user_id",
        "calendar_id",
        "name",
        "subscription_id",
        "subscription_expires_at",
        "nexudus_record_id",
        "last_error",
        "created_at",
        "updated_at",
    }
)


@contextmanager
def inserts_failing(engine: Engine, etag: str | None = None) -> Iterator[None]:
    """Inserts into the inbox fail in the database itself, by trigger: all of them,
    or only rows with `etag`. A real failure on the driver's own path, whichever
    way the caller reaches the database."""
    only = f" AND NEW.etag = '{etag}'" if etag else ""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER inbox_fails BEFORE INSERT ON inbox "
                f"WHEN 1{only} BEGIN SELECT RAISE(ABORT, 'insert refused'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION inbox_fails() RETURNS trigger AS $$ BEGIN "
                f"IF TRUE{only} THEN RAISE EXCEPTION 'insert refused'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER inbox_fails BEFORE INSERT ON inbox "
                "FOR EACH ROW EXECUTE FUNCTION inbox_fails()"
            )
    try:
        yield
    finally:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER inbox_fails")
            else:
                conn.exec_driver_sql("DROP TRIGGER inbox_fails ON inbox")
                conn.exec_driver_sql("DROP FUNCTION inbox_fails()")
