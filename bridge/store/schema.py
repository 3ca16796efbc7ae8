"""The database schema: SQLAlchemy Core tables, portable across SQLite and PostgreSQL.

Migrations in `migrations/versions` create these; this module is their single source
for queries, and `tests/store` checks that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    SQLite has no time zones and PostgreSQL's `timestamptz` returns the session's zone;
    storing naive UTC and re-attaching UTC on the way out is the same on both.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is not None:
            # A `timestamptz` (a column altered by hand, or an expression):
            # PostgreSQL answers in the session's zone, so convert, never relabel.
            return value.astimezone(UTC)
        return value.replace(tzinfo=UTC)


# SQLite only makes INTEGER PRIMARY KEY an auto-increment rowid alias.
Id = BigInteger().with_variant(Integer(), "sqlite")
# The largest id or number a BigInteger column (and SQLite's INTEGER) holds: a larger
# one from outside is refused before it reaches the database, which would fail on it.
MAX_ID = 2**63 - 1

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

connections = Table(
    "connections",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("state", String(16), nullable=False),
    Column("resource_id", BigInteger, nullable=False),
    Column("coworker_id", BigInteger),
    Column("user_id", String(255), nullable=False),
    Column("calendar_id", String(512)),
    Column("name", String(255)),
    Column("subscription_id", String(64), unique=True),
    Column("subscription_expires_at", UTCDateTime),
    Column("client_state", String(128)),
    Column("nexudus_record_id", BigInteger),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # When the subscription was last renewed or created: Graph's reauthorization
    # requests are answered with at most one PATCH per ten minutes.
    Column("renewed_at", UTCDateTime),
)
Index("ix_connections_state", connections.c.state)
Index("ix_connections_subscription_expires_at", connections.c.subscription_expires_at)
# One live connection per calendar and resource (migration 0003); the states are
# connections.FINAL's.
_LIVE = text("state NOT IN ('orphaned', 'disconnected')")
Index(
    "ux_connections_live_target",
    connections.c.user_id,
    connections.c.calendar_id,
    connections.c.resource_id,
    unique=True,
    sqlite_where=_LIVE,
    postgresql_where=_LIVE,
)

# Old subscription ids of a connection: late notifications for a replaced subscription
# are recognised (and checked against the secret they were sent with) but not acted on.
subscription_aliases = Table(
    "subscription_aliases",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column(
        "connection_id",
        Id,
        ForeignKey("connections.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("client_state", String(128)),
    Column("created_at", UTCDateTime, nullable=False),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("state", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subscription_id", String(64), nullable=False),
    Column("connection_id", Id, ForeignKey("connections.id", ondelete="SET NULL")),
    Column("change_type", String(64)),
    Column("lifecycle_event", String(64)),
    Column("resource", Text),
    Column("etag", String(255)),
    Column("subscription_expires_at", UTCDateTime),
    Column("tenant_id", String(64)),
    Column("received_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("leased_until", UTCDateTime),
    # The worker holding the lease: only it may settle the item.
    Column("claimed_by", String(64)),
    Column("last_error", Text),
    Column("raw", Text, nullable=False),
    Column("dedupe_key", String(64), nullable=False, unique=True),
)
Index("ix_inbox_state_next_attempt_at", inbox.c.state, inbox.c.next_attempt_at)
Index("ix_inbox_connection_id", inbox.c.connection_id)
Index("ix_inbox_state_received_at", inbox.c.state, inbox.c.received_at)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """A UTC timestamp as the contract shows it: ISO 8601 ending in `Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
