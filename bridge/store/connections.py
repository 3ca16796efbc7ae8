"""Connections: a customer's calendar, its Graph subscription and its Nexudus record.

Every function runs inside the caller's transaction (`db.writing` / `db.reading`), so
a caller can combine several steps atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection as Db
from sqlalchemy import and_, exists, or_, select

from bridge.store.schema import connections, inbox, iso, subscription_aliases


class State(StrEnum):
    ACTIVE = "active"
    PENDING = "pending"
    UNAUTHORIZED = "unauthorized"
    ORPHANED = "orphaned"
    DISCONNECTED = "disconnected"


# No upstream call is made for these: an operator decided, or must decide.
FINAL = frozenset({State.ORPHANED, State.DISCONNECTED})


@dataclass(frozen=True, slots=True)
class Connection:
    id: int
    state: State
    resource_id: int
    coworker_id: int | None
    user_id: str
    calendar_id: str
    name: str | None
    subscription_id: str
    # None only until the first renewal or notification tells it.
    subscription_expires_at: datetime | None
    # A secret: kept out of repr so that it cannot reach a log line by accident.
    client_state: str = field(repr=False)
    nexudus_record_id: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    renewed_at: datetime | None

    @property
    def resource(self) -> str:
        """The Graph resource its subscription watches."""
        return f"users/{self.user_id}/calendars/{self.calendar_id}/events"

    def to_json(self) -> dict[str, Any]:
        """The contract's shape for the admin API and `--json`."""

        return {
            "id": self.id,
            "state": self.state.value,
            "resource_id": self.resource_id,
            "coworker_id": self.coworker_id,
            "user_id": self.user_id,
            "calendar_id": self.calendar_id,
            "name": self.name,
            "subscription_id": self.subscription_id,
            "subscription_expires_at": iso(self.subscription_expires_at),
            "nexudus_record_id": self.nexudus_record_id,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


_COLUMNS = [connections.c[f.name] for f in fields(Connection)]


def _from_row(row: Any) -> Connection:
    values = dict(row._mapping)
    values["state"] = State(values["state"])
    return Connection(**values)


def get(db: Db, connection_id: int) -> Connection | None:
    row = db.execute(
        select(*_COLUMNS).where(connections.c.id == connection_id)
    ).one_or_none()
    return _from_row(row) if row else None


def page(
    db: Db, state: State | None, limit: int, offset: int
) -> tuple[list[Connection], int | None]:
    """Connections by id, `limit` from `offset`; the next offset or None at the end."""
    query = select(*_COLUMNS).order_by(connections.c.id).limit(limit + 1).offset(offset)
    if state is not None:
        query = query.where(connections.c.state == state.value)
    found = [_from_row(row) for row in db.execute(query)]
    more = len(found) > limit
    return found[:limit], offset + limit if more else None


def find_live(
    db: Db, user_id: str, calendar_id: str, resource_id: int
) -> Connection | None:
    """The live connection for this calendar and resource, if any (one at most:
    an orphaned or disconnected one is history, and the calendar may connect again)."""
    row = db.execute(
        select(*_COLUMNS)
        .where(
            connections.c.user_id == user_id,
            connections.c.calendar_id == calendar_id,
            connections.c.resource_id == resource_id,
            connections.c.state.not_in([state.value for state in FINAL]),
        )
        .order_by(connections.c.id)
        .limit(1)
    ).one_or_none()
    return _from_row(row) if row else None


def insert(
    db: Db,
    *,
    state: State,
    resource_id: int,
    coworker_id: int | None,
    user_id: str,
    calendar_id: str,
    name: str | None,
    subscription_id: str,
    subscription_expires_at: datetime,
    client_state: str,
    now: datetime,
) -> Connection:
    row = db.execute(
        connections.insert()
        .values(
            state=state.value,
            resource_id=resource_id,
            coworker_id=coworker_id,
            user_id=user_id,
            calendar_id=calendar_id,
            name=name,
            subscription_id=subscription_id,
            subscription_expires_at=subscription_expires_at,
            client_state=client_state,
            created_at=now,
            updated_at=now,
            renewed_at=now,
        )
        .returning(*_COLUMNS)
    ).one()
    return _from_row(row)


def update(db: Db, connection_id: int, now: datetime, **values: Any) -> None:
    """Set columns of one connection (states given as `State`)."""
    values = {k: v.value if isinstance(v, State) else v for k, v in values.items()}
    db.execute(
        connections.update()
        .where(connections.c.id == connection_id)
        .values(updated_at=now, **values)
    )


def delete(db: Db, connection_id: int) -> None:
    db.execute(connections.delete().where(connections.c.id == connection_id))


def advance_expiry(
    db: Db, subscription_id: str, expires_at: datetime, now: datetime
) -> bool:
    """Move the stored expiry of `subscription_id` forward, never back.

    Expiry values are compared to the second (the contract), so a later copy that
    differs only in its fractions changes nothing.
    """
    expires_at = expires_at.replace(microsecond=0)
    result = db.execute(
        connections.update()
        .where(
            connections.c.subscription_id == subscription_id,
            or_(
                connections.c.subscription_expires_at.is_(None),
                connections.c.subscription_expires_at < expires_at,
            ),
        )
        .values(subscription_expires_at=expires_at, updated_at=now)
    )
    return result.rowcount > 0


def replace_subscription(
    db: Db,
    old: Connection,
    *,
    subscription_id: str,
    client_state: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    """Point the connection at a new subscription; the old id becomes an alias.

    Late notifications for the old id are then still recognised (and checked
    against the secret they were sent with) but not acted on.
    """
    db.execute(
        subscription_aliases.insert().values(
            subscription_id=old.subscription_id,
            connection_id=old.id,
            client_state=old.client_state,
            created_at=now,
        )
    )
    update(
        db,
        old.id,
        now,
        subscription_id=subscription_id,
        client_state=client_state,
        subscription_expires_at=expires_at.replace(microsecond=0),
        renewed_at=now,
    )


def aliases(db: Db, connection_id: int) -> list[str]:
    """The connection's former subscription ids, oldest first."""
    rows = db.execute(
        select(subscription_aliases.c.subscription_id)
        .where(subscription_aliases.c.connection_id == connection_id)
        .order_by(subscription_aliases.c.created_at)
    )
    return [sub_id for (sub_id,) in rows]


@dataclass(frozen=True, slots=True)
class Due:
    connection_id: int
    subscription_id: str
    expires_at: datetime


def due_for_renewal(db: Db, before: datetime, limit: int) -> list[Due]:
    """Live connections whose subscription expires before `before` and that have no
    renewal waiting in the inbox yet, soonest first."""
    live = [s.value for s in State if s not in FINAL]
    waiting = exists().where(
        inbox.c.connection_id == connections.c.id,
        inbox.c.kind == "renewal",
        inbox.c.state.in_(["pending", "processing"]),
    )
    rows = db.execute(
        select(
            connections.c.id,
            connections.c.subscription_id,
            connections.c.subscription_expires_at,
        )
        .where(
            and_(
                connections.c.state.in_(live),
                connections.c.subscription_expires_at < before,
                ~waiting,
            )
        )
        .order_by(connections.c.subscription_expires_at)
        .limit(limit)
    )
    return [Due(*row) for row in rows]
