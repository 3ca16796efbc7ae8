"""The inbox as the worker's queue: claim per connection with a lease, then settle.

A claim takes every pending item of a few connections at once, so the worker acts
once per connection however many notifications arrived (coalescing). A connection
whose items are leased to a worker is not claimed by another one, so actions on one
connection never overlap. On PostgreSQL the connection rows are locked with
`FOR NO KEY UPDATE SKIP LOCKED` while claiming (see `_lock_candidates`); on SQLite
the claim's `BEGIN IMMEDIATE` makes it the only writer.

Settling (`complete`, `retry`, `bury`, `defer`, `release`) only touches items that
are still leased to the worker that settles them: a worker whose lease ran out has
lost them to another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    func,
    literal,
    null,
    or_,
    select,
)
from sqlalchemy import Connection as Db
from sqlalchemy.dialects import postgresql, sqlite

from bridge.store.inbox import ItemState, Kind
from bridge.store.schema import UTCDateTime, connections, inbox, iso

PENDING, PROCESSING = ItemState.PENDING.value, ItemState.PROCESSING.value

# Items the bridge puts in the inbox itself, next to Graph's change and lifecycle
# items: they go through the same claim, coalescing, retries and dead-lettering.
RENEWAL: Kind = "renewal"  # the scheduler's: renew if due
RECONCILE: Kind = "reconcile"  # a record still to create (connect)
RENEW_NOW: Kind = "renew_now"  # an operator's: renew whatever the expiry
DISCONNECT: Kind = "disconnect"  # delete the subscription and the record


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    kind: str
    subscription_id: str
    connection_id: int
    lifecycle_event: str | None
    subscription_expires_at: datetime | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Claim:
    """All the items of one connection that one action will settle."""

    connection_id: int
    items: tuple[Item, ...]

    @property
    def ids(self) -> list[int]:
        return [item.id for item in self.items]

    @property
    def attempts(self) -> int:
        return max(item.attempts for item in self.items)


@dataclass(frozen=True, slots=True)
class Entry:
    """An inbox item as operators see it."""

    id: int
    state: str
    kind: str
    subscription_id: str
    connection_id: int | None
    received_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "kind": self.kind,
            "subscription_id": self.subscription_id,
            "connection_id": self.connection_id,
            "received_at": iso(self.received_at),
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at),
            "last_error": self.last_error,
        }


_ENTRY = [
    inbox.c.id,
    inbox.c.state,
    inbox.c.kind,
    inbox.c.subscription_id,
    inbox.c.connection_id,
    inbox.c.received_at,
    inbox.c.attempts,
    inbox.c.next_attempt_at,
    inbox.c.last_error,
]


def entries(
    db: Db, state: ItemState | None, limit: int, offset: int
) -> tuple[list[Entry], int | None]:
    """Items by id, `limit` from `offset`; the next offset or None at the end."""
    query = select(*_ENTRY).order_by(inbox.c.id).limit(limit + 1).offset(offset)
    if state is not None:
        query = query.where(inbox.c.state == state.value)
    found = [Entry(*row) for row in db.execute(query)]
    more = len(found) > limit
    return found[:limit], offset + limit if more else None


def entry(db: Db, item_id: int) -> Entry | None:
    row = db.execute(select(*_ENTRY).where(inbox.c.id == item_id)).one_or_none()
    return Entry(*row) if row else None


def revive(db: Db, item_id: int, now: datetime) -> bool:
    """A dead item back to pending with fresh attempts; False if it is not dead."""
    result = db.execute(
        inbox.update()
        .where(inbox.c.id == item_id, inbox.c.state == ItemState.DEAD.value)
        .values(state=PENDING, attempts=0, next_attempt_at=now)
    )
    return result.rowcount > 0


def _claimable(now: datetime) -> ColumnElement[bool]:
    # A processing item whose lease ran out belongs to a worker that died.
    return or_(
        inbox.c.state == PENDING,
        and_(inbox.c.state == PROCESSING, inbox.c.leased_until < now),
    )


# A claim reads the due items in due order, this many per connection it may take at
# first: a backlog of many connections then needs one read of a few rows, not a
# pass over every waiting item (bench/drain, docs/benchmarks.md).
_WINDOW_PER_CONNECTION = 16
_WINDOW_GROWTH = 8


def _candidates(
    db: Db,
    now: datetime,
    connections_max: int,
    busy: Select[tuple[int | None]],
    passed: Sequence[int] = (),
) -> list[int]:
    """Up to `connections_max` connections with due work and no live lease, those
    whose work fell due first first (ties: the lower connection id), leaving out
    `passed`.

    The earliest pending items are read through the (state, next_attempt_at)
    index, a window at a time, until the window shows which connections come
    first: the cost follows `connections_max`, not the length of the backlog.
    """
    if connections_max < 1:
        return []
    mine = and_(inbox.c.connection_id.is_not(None), inbox.c.connection_id.not_in(busy))
    if passed:
        mine = and_(mine, inbox.c.connection_id.not_in(list(passed)))
    # Connections with items of a worker whose lease ran out: few (no more than
    # workers hold), and ordered by all their due items, as the rest are.
    expired = set(
        db.execute(
            select(inbox.c.connection_id).where(
                inbox.c.state == PROCESSING, inbox.c.leased_until < now, mine
            )
        ).scalars()
    )
    first_due: dict[int, datetime | None] = {}
    if expired:
        earliest = db.execute(
            select(inbox.c.connection_id, func.min(inbox.c.next_attempt_at))
            .where(inbox.c.connection_id.in_(expired), _due(now))
            .group_by(inbox.c.connection_id)
        )
        first_due = {connection_id: at for connection_id, at in earliest}
    pending = (
        select(inbox.c.connection_id, inbox.c.next_attempt_at)
        .where(inbox.c.state == PENDING, inbox.c.next_attempt_at <= now, mine)
        .order_by(inbox.c.next_attempt_at)
    )
    window = connections_max * _WINDOW_PER_CONNECTION
    while True:
        rows = db.execute(pending.limit(window)).all()
        due = dict(first_due)
        for connection_id, at in rows:
            due.setdefault(connection_id, at)  # in due order: the first is the min
        ranked = sorted(due, key=lambda c: (_due_order(due[c]), c))[:connections_max]
        if len(rows) < window:
            return ranked  # every pending due item was read
        # Connections not read have nothing due before the window's last item.
        last = _due_order(rows[-1][1])
        if len(ranked) == connections_max and _due_order(due[ranked[-1]]) < last:
            return ranked
        window *= _WINDOW_GROWTH


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(inbox.c.state == PENDING, inbox.c.next_attempt_at <= now),
        and_(inbox.c.state == PROCESSING, inbox.c.leased_until < now),
    )


def _due_order(at: datetime | None) -> tuple[bool, datetime]:
    # NULL first, as SQLite orders it (only a damaged row has no due time).
    return (at is not None, at or datetime.min.replace(tzinfo=UTC))


def claim(
    db: Db,
    worker: str,
    now: datetime,
    lease: timedelta,
    connections_max: int,
    *,
    only: int | None = None,
) -> list[Claim]:
    """Lease every pending item of up to `connections_max` connections with due work.

    With `only`, lease that connection's pending items, due or not (an operator's
    action runs at once): none when another worker holds it.
    """
    busy = select(inbox.c.connection_id).where(
        inbox.c.state == PROCESSING,
        inbox.c.leased_until >= now,
        inbox.c.connection_id.is_not(None),
    )
    if only is None:
        locked = _lock_candidates(db, now, connections_max, busy)
    else:
        locked = sorted(_lock(db, [only]))
    if not locked:
        return []
    rows = db.execute(
        inbox.update()
        # Checked again: a claim that committed after the candidates were chosen
        # (PostgreSQL, READ COMMITTED) owns its connections now.
        .where(
            inbox.c.connection_id.in_(locked),
            inbox.c.connection_id.not_in(busy),
            _claimable(now),
        )
        .values(
            state=PROCESSING,
            leased_until=now + lease,
            claimed_by=worker,
            attempts=inbox.c.attempts + 1,
        )
        .returning(
            inbox.c.id,
            inbox.c.kind,
            inbox.c.subscription_id,
            inbox.c.connection_id,
            inbox.c.lifecycle_event,
            inbox.c.subscription_expires_at,
            inbox.c.attempts,
        )
    )
    grouped: dict[int, list[Item]] = {}
    for row in rows:
        item = Item(*row)
        grouped.setdefault(item.connection_id, []).append(item)
    return [
        Claim(connection_id, tuple(sorted(items, key=lambda item: item.id)))
        for connection_id, items in grouped.items()
    ]


# Rounds of looking past connections that other workers are claiming right now.
_LOCK_ROUNDS = 3


def _lock_candidates(
    db: Db, now: datetime, connections_max: int, busy: Select[tuple[int | None]]
) -> list[int]:
    """The candidates this claim may take, their connection rows locked until it
    commits.

    PostgreSQL: workers claiming at the same moment see the same candidates (a
    claim not yet committed leases nothing they can see), so each locks the rows
    with SKIP LOCKED and looks past those another worker holds, rather than
    waiting for it or coming back empty while other work is due. The lock is FOR
    NO KEY UPDATE: ingest's foreign key checks (FOR KEY SHARE) neither wait for
    it nor make a claim pass a connection over. SQLAlchemy renders no locking
    clause for SQLite, whose claims are serialised by BEGIN IMMEDIATE.
    """
    locked: list[int] = []
    passed: list[int] = []
    for _ in range(_LOCK_ROUNDS):
        wanted = connections_max - len(locked)
        candidates = _candidates(db, now, wanted, busy, [*locked, *passed])
        if not candidates:
            break
        taken = _lock(db, candidates)
        locked += [c for c in candidates if c in taken]
        passed += [c for c in candidates if c not in taken]
        if len(taken) == len(candidates):
            break
    return locked


def _lock(db: Db, candidates: list[int]) -> set[int]:
    """Lock the connection rows no other claim holds (PostgreSQL); those ids."""
    return set(
        db.execute(
            select(connections.c.id)
            .where(connections.c.id.in_(candidates))
            .with_for_update(skip_locked=True, key_share=True)
        ).scalars()
    )


def _leased(worker: str, ids: Sequence[int]) -> ColumnElement[bool]:
    return and_(
        inbox.c.id.in_(list(ids)),
        inbox.c.state == PROCESSING,
        inbox.c.claimed_by == worker,
    )


def _settle(db: Db, worker: str, ids: Sequence[int], **values: Any) -> int:
    result = db.execute(
        inbox.update()
        .where(_leased(worker, ids))
        .values(leased_until=None, claimed_by=None, **values)
    )
    return result.rowcount


def complete(db: Db, worker: str, ids: Sequence[int]) -> int:
    return _settle(db, worker, ids, state=ItemState.DONE.value, last_error=None)


def retry(
    db: Db,
    worker: str,
    ids: Sequence[int],
    *,
    at: datetime,
    error: str,
    max_attempts: int,
) -> int:
    """Back to pending until `at`; items out of attempts go dead. Returns the dead."""
    dead = db.execute(
        select(func.count())
        .select_from(inbox)
        .where(_leased(worker, ids), inbox.c.attempts >= max_attempts)
    ).scalar_one()
    out_of_attempts = inbox.c.attempts >= max_attempts
    _settle(
        db,
        worker,
        ids,
        state=case((out_of_attempts, ItemState.DEAD.value), else_=PENDING),
        next_attempt_at=case(
            (out_of_attempts, null()), else_=literal(at, UTCDateTime())
        ),
        last_error=case(
            (out_of_attempts, f"out of attempts ({max_attempts}): {error}"),
            else_=error,
        ),
    )
    return int(dead)


def bury(db: Db, worker: str, ids: Sequence[int], *, error: str) -> int:
    """Dead at once: retrying cannot help; the reason is kept for the operator."""
    return _settle(
        db,
        worker,
        ids,
        state=ItemState.DEAD.value,
        next_attempt_at=None,
        last_error=error,
    )


def defer(db: Db, worker: str, ids: Sequence[int], *, at: datetime, reason: str) -> int:
    """Back to pending without using up an attempt: the work waits for something
    outside it (configuration, credentials), not for the upstream to recover."""
    return _settle(
        db,
        worker,
        ids,
        state=PENDING,
        next_attempt_at=at,
        attempts=inbox.c.attempts - 1,
        last_error=reason,
    )


def release(db: Db, worker: str, ids: Sequence[int], now: datetime) -> int:
    """Give leased items back (shutdown): pending now, the attempt not counted."""
    return _settle(
        db,
        worker,
        ids,
        state=PENDING,
        next_attempt_at=now,
        attempts=inbox.c.attempts - 1,
    )


def enqueue(
    db: Db,
    *,
    kind: Kind,
    connection_id: int,
    subscription_id: str,
    key: str,
    at: datetime,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> int | None:
    """Add one of the bridge's own items: its id, or None when `key` is already in
    the inbox."""
    raw = json.dumps({"kind": kind, "connectionId": connection_id, **(detail or {})})
    values = {
        "state": PENDING,
        "kind": kind,
        "subscription_id": subscription_id,
        "connection_id": connection_id,
        "received_at": now,
        "attempts": 0,
        "next_attempt_at": at,
        "raw": raw,
        "dedupe_key": key,
    }
    dialect = postgresql if db.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(inbox)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[inbox.c.dedupe_key])
        # The id, not the rowcount, says whether a row went in: an INSERT that
        # returns rows has no rowcount on psycopg (-1).
        .returning(inbox.c.id)
    )
    return db.execute(statement).scalar_one_or_none()


def prune(db: Db, before: datetime) -> int:
    """Forget settled items received before `before`; returns how many.

    Their dedupe keys go too: a copy of one that Graph sends later still is stored
    and acted on, which costs a reconcile that changes nothing.
    """
    result = db.execute(
        inbox.delete().where(
            inbox.c.state.in_([ItemState.DONE.value, ItemState.IGNORED.value]),
            inbox.c.received_at < before,
        )
    )
    return result.rowcount


def next_due(db: Db) -> datetime | None:
    """When the earliest pending item falls due (None: nothing pending)."""
    return db.execute(
        select(func.min(inbox.c.next_attempt_at)).where(inbox.c.state == PENDING)
    ).scalar_one_or_none()
