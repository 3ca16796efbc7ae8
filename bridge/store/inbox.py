"""The inbox: every notification item the bridge has accepted, and what became of it.

`ingest` is the write side of `POST /graph/notifications`: it decides each item's fate
against the stored connections and inserts the keepers in one statement, inside the
caller's transaction (the group commit in `writer.py` batches many requests into one).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from sqlalchemy import Connection, Insert, select
from sqlalchemy.dialects import postgresql, sqlite

from bridge.store.schema import connections, inbox, subscription_aliases

Kind = Literal["change", "lifecycle"]


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


def _matches(conn: Connection, subscription_ids: set[str]) -> dict[str, _Match]:
    found: dict[str, _Match] = {}
    rows = conn.execute(
        select(connections.c.subscription_id, connections.c.id)
        .add_columns(connections.c.client_state, connections.c.state)
        .where(connections.c.subscription_id.in_(subscription_ids))
    )
    for sub_id, conn_id, secret, state in rows:
        found[sub_id] = _Match(conn_id, secret, state not in _INACTIVE)
    rest = subscription_ids - found.keys()
    if rest:
        aliases = conn.execute(
            select(
                subscription_aliases.c.subscription_id,
                subscription_aliases.c.connection_id,
                subscription_aliases.c.client_state,
            ).where(subscription_aliases.c.subscription_id.in_(rest))
        )
        for sub_id, conn_id, secret in aliases:
            found[sub_id] = _Match(conn_id, secret, actionable=False)
    return found


def _insert(conn: Connection) -> Insert:
    """An INSERT that skips rows whose dedupe key is taken; returns keys written."""
    insert: Insert
    if conn.dialect.name == "postgresql":
        insert = postgresql.insert(inbox).on_conflict_do_nothing(
            index_elements=[inbox.c.dedupe_key]
        )
    else:
        insert = sqlite.insert(inbox).on_conflict_do_nothing(
            index_elements=[inbox.c.dedupe_key]
        )
    return insert.returning(inbox.c.dedupe_key)


def _row(
    item: Incoming, key: str, state: ItemState, match: _Match | None, now: datetime
) -> dict[str, object]:
    return {
        "state": state,
        "kind": item.kind,
        "subscription_id": item.subscription_id,
        "connection_id": match.connection_id if match else None,
        "change_type": item.change_type,
        "lifecycle_event": item.lifecycle_event,
        "resource": item.resource,
        "etag": item.etag,
        "subscription_expires_at": item.expires_at,
        "tenant_id": item.tenant_id,
        "received_at": now,
        "attempts": 0,
        "next_attempt_at": now if state is ItemState.PENDING else None,
        "raw": item.raw,
        "dedupe_key": key,
    }


def ingest(conn: Connection, items: Sequence[Incoming], now: datetime) -> list[Outcome]:
    """Store what is to be stored; one outcome per item, in order."""
    matches = _matches(conn, {item.subscription_id for item in items})
    keys = [item.dedupe_key() for item in items]
    verdicts: list[ItemState | None] = []  # None: the secret did not match
    rows: dict[str, dict[str, object]] = {}
    for item, key in zip(items, keys, strict=True):
        match = matches.get(item.subscription_id)
        if match and not _secret_matches(match.client_state, item.client_state):
            verdicts.append(None)
            continue
        state = ItemState.PENDING if match and match.actionable else ItemState.IGNORED
        verdicts.append(state)
        rows.setdefault(key, _row(item, key, state, match, now))
    inserted = set(conn.scalars(_insert(conn), list(rows.values()))) if rows else set()
    outcomes = []
    for key, verdict in zip(keys, verdicts, strict=True):
        if verdict is None:
            outcomes.append(Outcome.BAD_CLIENT_STATE)
        elif key in inserted:
            inserted.discard(key)  # later copies in the same batch are duplicates
            stored = verdict is ItemState.PENDING
            outcomes.append(Outcome.STORED if stored else Outcome.IGNORED)
        else:
            outcomes.append(Outcome.DUPLICATE)
    return outcomes
