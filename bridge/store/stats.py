"""What the database says about the service's state, for the metrics.

Read at every scrape, so each query is cheap however large the tables grow: the
inbox is read only through its unsettled states (the `(state, received_at)` index;
settled items, kept three days, are never counted), and connections through their
state and expiry indexes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection as Db
from sqlalchemy import case, func, select

from bridge.store.connections import State
from bridge.store.inbox import ItemState
from bridge.store.schema import connections, inbox

# The inbox states the gauges report; the others are settled and only grow.
UNSETTLED = (ItemState.PENDING, ItemState.PROCESSING, ItemState.DEAD)
# Connections whose subscription the bridge keeps alive.
RENEWED = (State.ACTIVE, State.PENDING)
# A scrape that waits longer than this on PostgreSQL is better answered without it.
STATEMENT_TIMEOUT_MS = 2000


@dataclass(frozen=True, slots=True)
class Snapshot:
    items: dict[ItemState, int] = field(default_factory=dict)
    # When the oldest item not yet acted on (pending or processing) arrived.
    oldest_unfinished: datetime | None = None
    # Pending items that have failed at least once, and the most tries among them.
    retrying: int = 0
    max_attempts: int = 0
    connections: dict[State, int] = field(default_factory=dict)
    soonest_expiry: datetime | None = None


def read(db: Db) -> Snapshot:
    if db.dialect.name == "postgresql":
        db.exec_driver_sql(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
    by_state = db.execute(
        select(
            inbox.c.state,
            func.count(),
            func.min(inbox.c.received_at),
            func.max(inbox.c.attempts),
            func.sum(case((inbox.c.attempts > 0, 1), else_=0)),
        )
        .where(inbox.c.state.in_([state.value for state in UNSETTLED]))
        .group_by(inbox.c.state)
    ).all()
    items = {state: 0 for state in UNSETTLED}
    oldest: datetime | None = None
    retrying = max_attempts = 0
    for state, count, earliest, most, failed in by_state:
        items[ItemState(state)] = count
        if state == ItemState.DEAD:
            continue
        if earliest is not None and (oldest is None or earliest < oldest):
            oldest = earliest
        if state == ItemState.PENDING:
            retrying, max_attempts = int(failed or 0), int(most or 0)
    counted = db.execute(
        select(connections.c.state, func.count()).group_by(connections.c.state)
    ).all()
    by_connection_state = {state: 0 for state in State}
    for state, count in counted:
        by_connection_state[State(state)] = count
    soonest = db.execute(
        select(func.min(connections.c.subscription_expires_at)).where(
            connections.c.state.in_([state.value for state in RENEWED])
        )
    ).scalar_one()
    return Snapshot(
        items=items,
        oldest_unfinished=oldest,
        retrying=retrying,
        max_attempts=max_attempts,
        connections=by_connection_state,
        soonest_expiry=soonest,
    )
