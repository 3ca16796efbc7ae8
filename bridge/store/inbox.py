"""The inbox: every notification item the bridge has accepted, and what became of it.

`ingest` is the write side of `POST /graph/notifications`: it decides each item's fate
against the stored connections and inserts the keepers, one statement for up to 64 items
(the group commit in `writer.py` batches many requests into one, with
`ingest_autocommit`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any, Literal, NamedTuple

from sqlalchemy import Connection, Dialect

from bridge.store.schema import inbox

# Graph sends change and lifecycle items; the bridge adds its own (store/queue.py).
Kind = Literal["change", "lifecycle", "renewal", "reconcile", "renew_now", "disconnect"]


class ItemState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    DEAD = "dead"
    IGNORED = "ignored"


class Outcome(StrEnum):
    """What ingest did with one item (the metrics' `outcome` label)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    BAD_CLIENT_STATE = "bad_client_state"


# Connections in these states take no action from notifications.
_INACTIVE = frozenset({"disconnected", "orphaned"})


class Incoming(NamedTuple):
    """One notification item as the endpoint hands it to the inbox.

    A named tuple: one is made per item on the ingest hot path, at well under half
    the cost of a frozen dataclass."""

    subscription_id: str
    client_state: str | None
    kind: Kind
    change_type: str | None
    lifecycle_event: str | None
    resource: str | None
    resource_id: str | None
    etag: str | None
    expires_at: datetime | None
    tenant_id: str | None
    raw: str

    def __repr__(self) -> str:
        # The clientState is a secret, and the raw item carries it too.
        return (
            f"Incoming(subscription_id={self.subscription_id!r}, kind={self.kind!r}, "
            f"resource_id={self.resource_id!r}, etag={self.etag!r})"
        )

    def dedupe_key(self) -> str:
        """Equal for items equal in meaning: Graph sends 2-4 copies of one change."""
        expiry = self.expires_at
        parts = (
            self.subscription_id,
            self.kind,
            self.change_type or self.lifecycle_event or "",
            self.resource_id or "",
            self.etag or "",
            # Expiry values are compared to the second (the contract).
            expiry.replace(microsecond=0).isoformat() if expiry else "",
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Match:
    connection_id: int
    client_state: str | None
    actionable: bool


def _secret_matches(expected: str | None, given: str | None) -> bool:
    if expected is None or given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# The ingest path runs once per batch of every notification POST, so it speaks SQL to
# the driver directly: SQLAlchemy's per-row parameter processing cost more than the
# rest of the request (see docs/benchmarks.md). The SQL is plain and portable.
_COLUMNS = (
    "state",
    "kind",
    "subscription_id",
    "connection_id",
    "change_type",
    "lifecycle_event",
    "resource",
    "etag",
    "subscription_expires_at",
    "tenant_id",
    "received_at",
    "attempts",
    "next_attempt_at",
    "raw",
    "dedupe_key",
)


@dataclass(frozen=True, slots=True)
class _Sql:
    """The ingest statements in one dialect's parameter style."""

    mark: str
    to_db: Callable[[datetime | None], object]
    # SQLite's writer takes the lock up front: a deferred transaction that read
    # first could not upgrade past another process's write (store/db.py).
    begin: str

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)

    def insert(self, rows: int) -> str:
        """One statement for `rows` rows: the driver steps it once, where
        executemany would step once per row."""
        row = f"({self.marks(len(_COLUMNS))})"
        return (
            f"INSERT INTO inbox ({', '.join(_COLUMNS)}) "  # noqa: S608
            f"VALUES {', '.join([row] * rows)} "
            "ON CONFLICT (dedupe_key) DO NOTHING"
        )


@cache
def _sql(dialect: Dialect) -> _Sql:
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    # The dialect's own conversion, as SQLAlchemy binds the column: on SQLite the
    # text SQLAlchemy writes and compares (the sqlite3 module's default adapter,
    # used before, writes another form and is deprecated from Python 3.12).
    column_type = inbox.c.received_at.type.dialect_impl(dialect)
    to_db = column_type.bind_processor(dialect) or (lambda value: value)
    begin = "BEGIN IMMEDIATE" if dialect.name == "sqlite" else "BEGIN"
    return _Sql(mark, to_db, begin)


# A statement's rows, or nothing for a statement that returns none.
Run = Callable[[str, Sequence[object]], list[Any]]

# Items written by one INSERT (64 rows of 15 columns; the lookup before it takes at
# most 128 values): far below the parameter limits of SQLite (32,766 by default) and
# PostgreSQL (65,535) however many items one body carries. Graph's collections have
# no item limit of their own, and a body that could never be stored would be refused
# at every retry.
ITEMS_PER_STATEMENT = 64


def _lookup(
    run: Run, sql: _Sql, subscription_ids: list[str], keys: list[str]
) -> tuple[dict[str, _Match], set[str]]:
    """The connections of `subscription_ids` and which of `keys` are stored, in one
    statement (one round trip fewer on PostgreSQL)."""
    found: dict[str, _Match] = {}
    stored: set[str] = set()
    rows = run(
        "SELECT 'c', subscription_id, id, client_state, state FROM connections "  # noqa: S608
        f"WHERE subscription_id IN ({sql.marks(len(subscription_ids))}) "
        "UNION ALL SELECT 'k', dedupe_key, NULL, NULL, NULL FROM inbox "
        f"WHERE dedupe_key IN ({sql.marks(len(keys))})",
        (*subscription_ids, *keys),
    )
    for tag, key, conn_id, secret, state in rows:
        if tag == "c":
            found[key] = _Match(conn_id, secret, state not in _INACTIVE)
        else:
            stored.add(key)
    rest = [sub_id for sub_id in subscription_ids if sub_id not in found]
    if rest:
        aliases = run(
            "SELECT subscription_id, connection_id, client_state "  # noqa: S608
            "FROM subscription_aliases "
            f"WHERE subscription_id IN ({sql.marks(len(rest))})",
            tuple(rest),
        )
        for sub_id, conn_id, secret in aliases:
            found[sub_id] = _Match(conn_id, secret, actionable=False)
    return found, stored


def _row(
    sql: _Sql,
    item: Incoming,
    key: str,
    state: ItemState,
    match: _Match | None,
    now: object,
) -> tuple[object, ...]:
    return (
        state.value,
        item.kind,
        item.subscription_id,
        match.connection_id if match else None,
        item.change_type,
        item.lifecycle_event,
        item.resource,
        item.etag,
        sql.to_db(item.expires_at),
        item.tenant_id,
        now,
        0,
        now if state is ItemState.PENDING else None,
        item.raw,
        key,
    )


def _ingest(
    run: Run, sql: _Sql, items: Sequence[Incoming], now: datetime
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for start in range(0, len(items), ITEMS_PER_STATEMENT):
        # A later part's lookup sees the earlier parts' rows: copies across parts
        # are duplicates too.
        part = items[start : start + ITEMS_PER_STATEMENT]
        outcomes += _ingest_part(run, sql, part, now)
    return outcomes


def _ingest_part(
    run: Run, sql: _Sql, items: Sequence[Incoming], now: datetime
) -> list[Outcome]:
    """The lookup, then one INSERT."""
    keys = [item.dedupe_key() for item in items]
    subscription_ids = list({item.subscription_id for item in items})
    matches, stored = _lookup(run, sql, subscription_ids, keys)
    db_now = sql.to_db(now)
    rows, outcomes = [], []
    for item, key in zip(items, keys, strict=True):
        match = matches.get(item.subscription_id)
        if match and not _secret_matches(match.client_state, item.client_state):
            outcomes.append(Outcome.BAD_CLIENT_STATE)
        elif key in stored:
            outcomes.append(Outcome.DUPLICATE)
        else:
            stored.add(key)  # later copies in the same batch are duplicates
            actionable = match is not None and match.actionable
            state = ItemState.PENDING if actionable else ItemState.IGNORED
            rows.append(_row(sql, item, key, state, match, db_now))
            outcomes.append(
                Outcome.STORED if state is ItemState.PENDING else Outcome.IGNORED
            )
    if rows:
        # DO NOTHING covers a copy stored by another process since the lookup.
        flat = tuple(value for row in rows for value in row)
        run(sql.insert(len(rows)), flat)
    return outcomes


def ingest(conn: Connection, items: Sequence[Incoming], now: datetime) -> list[Outcome]:
    """Store what is to be stored, in the caller's transaction; one outcome per item,
    in order."""

    def run(statement: str, parameters: Sequence[object]) -> list[Any]:
        result = conn.exec_driver_sql(statement, tuple(parameters))
        return list(result.all()) if result.returns_rows else []

    return _ingest(run, _sql(conn.dialect), items, now)


def ingest_autocommit(
    dbapi_connection: Any, dialect: Dialect, items: Sequence[Incoming], now: datetime
) -> list[Outcome]:
    """`ingest` on a driver connection in autocommit mode: the lookup, then one INSERT
    that commits itself. Two calls into the driver in all (two round trips on
    PostgreSQL), where a transaction around them would take four.

    Items too many for one INSERT are written in parts, in one transaction: stored
    all together or not at all, with one commit."""

    def run(statement: str, parameters: Sequence[object]) -> list[Any]:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement, parameters)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    sql = _sql(dialect)
    if len(items) <= ITEMS_PER_STATEMENT:
        return _ingest(run, sql, items, now)
    run(sql.begin, ())
    try:
        outcomes = _ingest(run, sql, items, now)
    except BaseException:
        with suppress(Exception):  # a connection that broke fails the rollback too
            run("ROLLBACK", ())
        raise
    run("COMMIT", ())
    return outcomes
