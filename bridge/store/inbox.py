"""The inbox: every notification item the bridge has accepted, and what became of it.

`ingest` is the write side of `POST /graph/notifications`: it decides each item's fate
against the stored connections and inserts the keepers in one statement, inside the
caller's transaction (the group commit in `writer.py` batches many requests into one).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Literal

from sqlalchemy import Connection, Dialect

from bridge.store.schema import inbox

# Graph sends change and lifecycle items; the worker adds its own (store/queue.py).
Kind = Literal["change", "lifecycle", "renewal", "reconcile"]


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


@dataclass(frozen=True, slots=True)
class Incoming:
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
_TIMESTAMPS = frozenset({"subscription_expires_at", "received_at", "next_attempt_at"})


@dataclass(frozen=True, slots=True)
class _Sql:
    """The ingest statements in one dialect's parameter style."""

    mark: str
    insert: str
    to_db: Callable[[datetime | None], object]

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)


@cache
def _sql(dialect: Dialect) -> _Sql:
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    # Only placeholders and our own column names are interpolated (S608 below).
    insert = (
        f"INSERT INTO inbox ({', '.join(_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join([mark] * len(_COLUMNS))}) "
        "ON CONFLICT (dedupe_key) DO NOTHING"
    )
    to_db = inbox.c.received_at.type.bind_processor(dialect) or (lambda value: value)
    return _Sql(mark, insert, to_db)


def _matches(
    conn: Connection, sql: _Sql, subscription_ids: list[str]
) -> dict[str, _Match]:
    found: dict[str, _Match] = {}
    rows = conn.exec_driver_sql(
        "SELECT subscription_id, id, client_state, state FROM connections "  # noqa: S608
        f"WHERE subscription_id IN ({sql.marks(len(subscription_ids))})",
        tuple(subscription_ids),
    )
    for sub_id, conn_id, secret, state in rows:
        found[sub_id] = _Match(conn_id, secret, state not in _INACTIVE)
    rest = [sub_id for sub_id in subscription_ids if sub_id not in found]
    if rest:
        aliases = conn.exec_driver_sql(
            "SELECT subscription_id, connection_id, client_state "  # noqa: S608
            "FROM subscription_aliases "
            f"WHERE subscription_id IN ({sql.marks(len(rest))})",
            tuple(rest),
        )
        for sub_id, conn_id, secret in aliases:
            found[sub_id] = _Match(conn_id, secret, actionable=False)
    return found


def _stored_keys(conn: Connection, sql: _Sql, keys: list[str]) -> set[str]:
    rows = conn.exec_driver_sql(
        f"SELECT dedupe_key FROM inbox WHERE dedupe_key IN ({sql.marks(len(keys))})",  # noqa: S608
        tuple(keys),
    )
    return {key for (key,) in rows}


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


def ingest(conn: Connection, items: Sequence[Incoming], now: datetime) -> list[Outcome]:
    """Store what is to be stored; one outcome per item, in order."""
    sql = _sql(conn.dialect)
    matches = _matches(conn, sql, list({item.subscription_id for item in items}))
    keys = [item.dedupe_key() for item in items]
    verdicts: list[ItemState | None] = []  # None: the secret did not match
    for item in items:
        match = matches.get(item.subscription_id)
        if match and not _secret_matches(match.client_state, item.client_state):
            verdicts.append(None)
        elif match and match.actionable:
            verdicts.append(ItemState.PENDING)
        else:
            verdicts.append(ItemState.IGNORED)
    kept = {key for key, verdict in zip(keys, verdicts, strict=True) if verdict}
    new = kept - _stored_keys(conn, sql, list(kept)) if kept else set()
    db_now = sql.to_db(now)
    rows, outcomes = [], []
    for item, key, verdict in zip(items, keys, verdicts, strict=True):
        if verdict is None:
            outcomes.append(Outcome.BAD_CLIENT_STATE)
        elif key in new:
            new.discard(key)  # later copies in the same batch are duplicates
            match = matches.get(item.subscription_id)
            rows.append(_row(sql, item, key, verdict, match, db_now))
            stored = verdict is ItemState.PENDING
            outcomes.append(Outcome.STORED if stored else Outcome.IGNORED)
        else:
            outcomes.append(Outcome.DUPLICATE)
    if rows:
        # DO NOTHING covers a copy committed by another process since the SELECT.
        conn.exec_driver_sql(sql.insert, rows)
    return outcomes
