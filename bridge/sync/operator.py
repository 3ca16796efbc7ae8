"""An operator's actions on one connection, done while the caller waits.

`renew` and `disconnect` put an item in the inbox, then take a turn on the
connection under the caller's own lease, as a worker would (`runner.py`). So they
never overlap the worker on the same connection, and an attempt that fails is
retried by the worker like any other. When a worker holds the connection, the
caller waits a little for it; after that the item stays queued for the worker.
The admin API and the CLI both call this module.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection as Db
from sqlalchemy import Engine

from bridge import logs
from bridge.settings import Settings
from bridge.store import connections as store
from bridge.store import db, queue
from bridge.store.connections import FINAL, Connection, State
from bridge.store.inbox import ItemState, Kind
from bridge.store.schema import utcnow
from bridge.sync.runner import Runner, worker_id
from bridge.sync.upstreams import Upstreams

# How long the caller waits for a worker that holds the connection; its actions
# usually take well under a second.
BUSY_WAIT_SECONDS = 5.0
_BUSY_POLL_SECONDS = 0.1
_SETTLED = (ItemState.DONE.value, ItemState.DEAD.value)


class NoSuchConnection(LookupError):
    def __init__(self, connection_id: int) -> None:
        super().__init__(f"no connection {connection_id}")


class NotAllowed(Exception):
    """The connection's state rules the action out."""


@dataclass(frozen=True, slots=True)
class Outcome:
    connection: Connection
    # The turn's result (`done`, `retry`, `wait`, `dead`, `unsettled`), or
    # `queued` when a worker held the connection all the while.
    result: str
    # Why it is not `done`.
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.result == "done"


class Operator:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        upstreams: Upstreams,
        *,
        clock: Callable[[], datetime] = utcnow,
        busy_wait_seconds: float = BUSY_WAIT_SECONDS,
    ) -> None:
        self.id = worker_id("operator")
        self._engine = engine
        self._runner = Runner(engine, settings, upstreams, clock=clock)
        self._now = clock
        self._busy_wait = busy_wait_seconds

    async def renew(self, connection_id: int) -> Outcome:
        """Renew the subscription now (a new one when Graph no longer has it),
        then bring the record up to date."""
        item_id = await db.write(
            self._engine, _ask, connection_id, queue.RENEW_NOW, self._now()
        )
        return await self._take_turn(connection_id, item_id)

    async def disconnect(self, connection_id: int) -> Outcome:
        """Stop acting on the connection at once; then delete its subscription and
        record (retried by the worker until done)."""
        item_id = await db.write(
            self._engine, _ask, connection_id, queue.DISCONNECT, self._now()
        )
        return await self._take_turn(connection_id, item_id)

    async def _take_turn(self, connection_id: int, item_id: int) -> Outcome:
        # The caller's task (an admin request, a command) is about this connection.
        logs.bind(connection_id=connection_id, item_ids=[item_id])
        deadline = time.monotonic() + self._busy_wait
        while True:
            claims = await db.write(
                self._engine,
                queue.claim,
                self.id,
                self._now(),
                self._runner.lease,
                1,
                only=connection_id,
            )
            if claims:
                turn = await self._runner.turn(self.id, claims[0])
                connection = await self._connection(connection_id)
                return Outcome(connection, turn.result, turn.reason)
            # A worker holds the connection, or has already settled our item.
            entry = await db.read(self._engine, queue.entry, item_id)
            if entry is not None and entry.state in _SETTLED:
                connection = await self._connection(connection_id)
                return Outcome(connection, entry.state, entry.last_error)
            if time.monotonic() >= deadline:
                return Outcome(
                    await self._connection(connection_id),
                    "queued",
                    "a worker is busy with this connection; it will do this next",
                )
            await asyncio.sleep(_BUSY_POLL_SECONDS)

    async def _connection(self, connection_id: int) -> Connection:
        found = await db.read(self._engine, store.get, connection_id)
        if found is None:
            raise NoSuchConnection(connection_id)
        return found


def _ask(db: Db, connection_id: int, kind: Kind, now: datetime) -> int:
    """Check the connection allows `kind`, and queue an item for it."""
    connection = store.get(db, connection_id)
    if connection is None:
        raise NoSuchConnection(connection_id)
    if kind == queue.DISCONNECT:
        if connection.state is not State.DISCONNECTED:
            store.update(db, connection_id, now, state=State.DISCONNECTED)
    elif connection.state in FINAL:
        raise NotAllowed(
            f"connection {connection_id} is {connection.state}: "
            "connect the calendar again instead"
        )
    item_id = queue.enqueue(
        db,
        kind=kind,
        connection_id=connection_id,
        subscription_id=connection.subscription_id,
        # Each request is its own item: asking again after a dead one tries again.
        key=f"{kind}:{connection_id}:{uuid.uuid4().hex}",
        at=now,
        now=now,
    )
    assert item_id is not None, "the key is new"
    return item_id
