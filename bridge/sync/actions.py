"""One action on one connection: the subscription step, then the Nexudus reconcile.

Actions own the connection's row (its subscription, record id and state); the worker
owns the inbox items. An action either returns (its items are done) or raises, and
`verdicts.py` says whether that is worth another try. Every step is safe to repeat:
a crash or a retry at any point converges on the same record, never a second one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection as Db
from sqlalchemy import Engine

from bridge import nexudus
from bridge.graph import _errors as graph_errors
from bridge.graph.subscriptions import new_client_state
from bridge.nexudus import CalendarFields
from bridge.store import connections as store
from bridge.store import db
from bridge.store.connections import FINAL, Connection, State
from bridge.store.queue import DISCONNECT, Claim
from bridge.store.schema import utcnow
from bridge.sync.plan import plan
from bridge.sync.upstreams import Upstreams

log = logging.getLogger(__name__)

# Either upstream refusing us for this connection: consent revoked, or app removed.
_REFUSED = (graph_errors.Unauthorized, graph_errors.Forbidden)


def record_fields(connection: Connection) -> CalendarFields:
    """What the connection's Nexudus record must hold (its expiry must be known)."""
    assert connection.subscription_expires_at is not None
    return CalendarFields(
        resource_id=connection.resource_id,
        name=connection.name or connection.calendar_id,
        subscription_id=connection.subscription_id,
        calendar_id=connection.calendar_id,
        subscription_expires_at=connection.subscription_expires_at,
        coworker_id=connection.coworker_id,
    )


class Actions:
    def __init__(
        self,
        engine: Engine,
        upstreams: Upstreams,
        *,
        lifetime: timedelta,
        renew_before: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._up = upstreams
        self._lifetime = lifetime
        self._renew_before = renew_before
        self._now = clock

    async def run(self, claim: Claim) -> None:
        connection = await db.read(self._engine, store.get, claim.connection_id)
        if connection is None:
            return
        if connection.state is State.DISCONNECTED:
            if any(item.kind == DISCONNECT for item in claim.items):
                await self._tear_down(connection)
            return
        if connection.state in FINAL:
            return  # nothing to do for it, and nothing an upstream should hear
        now = self._now()
        steps = plan(connection, claim.items, now, self._renew_before)
        for event in steps.unknown_events:
            log.warning(
                "unknown lifecycle event, ignored",
                extra={"lifecycle_event": event, "connection_id": connection.id},
            )
        if steps.expiry_seen is not None:
            connection = await db.write(
                self._engine, _advance_expiry, connection, steps.expiry_seen, now
            )
        if steps.recreate:
            connection = await self._recreate(connection)
        elif steps.renew:
            connection = await self._renew(connection)
        await self._reconcile(connection)

    # -- the Graph subscription ------------------------------------------------

    async def _renew(self, connection: Connection) -> Connection:
        """One PATCH (it also reauthorizes); a subscription Graph lost is recreated."""
        client = self._up.graph
        try:
            renewed = await client.renew_subscription(
                connection.subscription_id, self._now() + self._lifetime
            )
        except graph_errors.NotFound:
            log.info(
                "subscription gone from Graph; recreating",
                extra={"connection_id": connection.id},
            )
            return await self._recreate(connection)
        except _REFUSED as error:
            await self._refused(connection, error)
            raise
        log.info(
            "subscription renewed",
            extra={"connection_id": connection.id, "expires_at": renewed.expires_at},
        )
        return await db.write(
            self._engine, _renewed, connection, renewed.expires_at, self._now()
        )

    async def _recreate(self, connection: Connection) -> Connection:
        """A new subscription with a new secret; the old id stays as an alias."""
        client = self._up.graph
        notification_url, lifecycle_url = self._up.subscription_urls()
        secret = new_client_state()
        try:
            created = await client.create_subscription(
                connection.resource,
                notification_url,
                lifecycle_url,
                self._now() + self._lifetime,
                secret,
            )
        except _REFUSED as error:
            await self._refused(connection, error)
            raise
        log.info(
            "subscription recreated",
            extra={
                "connection_id": connection.id,
                "old_subscription_id": connection.subscription_id,
                "subscription_id": created.id,
            },
        )
        # If we crash before this commits, Graph holds a subscription we do not
        # know; its notifications are stored `ignored` and it expires by itself.
        return await db.write(
            self._engine,
            _replaced,
            connection,
            created.id,
            secret,
            created.expires_at,
            self._now(),
        )

    async def _refused(self, connection: Connection, error: Exception) -> None:
        if isinstance(error, graph_errors.SubscriptionLimitReached):
            return  # the mailbox is full: not a matter of consent
        await db.write(
            self._engine,
            _set_state,
            connection.id,
            State.UNAUTHORIZED,
            str(error),
            self._now(),
        )

    # -- the Nexudus record ----------------------------------------------------

    async def _reconcile(self, connection: Connection) -> None:
        client = self._up.nexudus
        if connection.subscription_expires_at is None:
            raise graph_errors.RetryLater("the subscription's expiry is not known yet")
        fields = record_fields(connection)
        record_id = connection.nexudus_record_id
        if record_id is None:
            record_id = await self._find_record(connection)
            if record_id is None:
                record_id = await client.create_calendar(fields)
                log.info(
                    "Nexudus record created",
                    extra={"connection_id": connection.id, "record_id": record_id},
                )
                await db.write(
                    self._engine,
                    _set_record,
                    connection.id,
                    record_id,
                    self._now(),
                    in_sync=True,
                )
                return
            # Found, not yet compared: the update below decides the state.
            await db.write(
                self._engine,
                _set_record,
                connection.id,
                record_id,
                self._now(),
                in_sync=False,
            )
        try:
            wrote = await client.update_calendar(record_id, fields)
        except nexudus.NotFound:
            await self._orphan(connection, record_id)
            return
        if wrote:
            log.info(
                "Nexudus record updated",
                extra={"connection_id": connection.id, "record_id": record_id},
            )
        if connection.state is not State.ACTIVE or connection.last_error:
            await db.write(
                self._engine, _set_state, connection.id, State.ACTIVE, None, self._now()
            )

    async def _find_record(self, connection: Connection) -> int | None:
        """A record this connection created before a crash lost its id, if any.

        Searched by every subscription id the connection has had, so a record made
        just before its subscription was replaced is found too.
        """
        former = await db.read(self._engine, store.aliases, connection.id)
        for subscription_id in (connection.subscription_id, *reversed(former)):
            found = await self._up.nexudus.find_by_subscription_id(subscription_id)
            ours = [r.id for r in found if r.resource_id == connection.resource_id]
            if ours:
                return min(ours)
        return None

    async def _orphan(self, connection: Connection, record_id: int) -> None:
        """The record was deleted in Nexudus: stop the subscription and stand still."""
        await self._up.graph.delete_subscription(connection.subscription_id)
        reason = (
            f"the Nexudus record {record_id} was deleted in Nexudus; the Graph "
            "subscription was deleted too (connect the calendar again to resume)"
        )
        log.warning("connection orphaned", extra={"connection_id": connection.id})
        await db.write(
            self._engine, _set_state, connection.id, State.ORPHANED, reason, self._now()
        )

    # -- disconnecting -----------------------------------------------------------

    async def _tear_down(self, connection: Connection) -> None:
        """Delete the subscription, then the record; each step is safe to repeat."""
        try:
            await self._up.graph.delete_subscription(connection.subscription_id)
        except _REFUSED as error:
            # Consent is gone, so Graph will not let us. The subscription sends
            # nothing we act on now, and it expires by itself.
            log.warning(
                "the Graph subscription could not be deleted; it lapses by itself",
                extra={
                    "connection_id": connection.id,
                    "reason": str(error),
                    "expires_at": connection.subscription_expires_at,
                },
            )
        record_id = connection.nexudus_record_id
        if record_id is None:
            record_id = await self._find_record(connection)
        if record_id is not None:
            await self._up.nexudus.delete_calendar(record_id)
        log.info(
            "connection torn down",
            extra={"connection_id": connection.id, "record_id": record_id},
        )
        await db.write(self._engine, _torn_down, connection.id, self._now())


def _torn_down(conn: Db, connection_id: int, now: datetime) -> None:
    store.update(conn, connection_id, now, nexudus_record_id=None, last_error=None)


def _reloaded(conn: Db, connection: Connection) -> Connection:
    fresh = store.get(conn, connection.id)
    assert fresh is not None, "connections are never deleted while leased"
    return fresh


def _advance_expiry(
    conn: Db, connection: Connection, expires_at: datetime, now: datetime
) -> Connection:
    store.advance_expiry(conn, connection.subscription_id, expires_at, now)
    return _reloaded(conn, connection)


def _renewed(
    conn: Db, connection: Connection, expires_at: datetime, now: datetime
) -> Connection:
    store.advance_expiry(conn, connection.subscription_id, expires_at, now)
    store.update(conn, connection.id, now, renewed_at=now)
    return _reloaded(conn, connection)


def _replaced(
    conn: Db,
    connection: Connection,
    subscription_id: str,
    secret: str,
    expires_at: datetime,
    now: datetime,
) -> Connection:
    store.replace_subscription(
        conn,
        connection,
        subscription_id=subscription_id,
        client_state=secret,
        expires_at=expires_at,
        now=now,
    )
    return _reloaded(conn, connection)


def _set_record(
    conn: Db, connection_id: int, record_id: int, now: datetime, *, in_sync: bool
) -> None:
    values: dict[str, object] = {"nexudus_record_id": record_id}
    if in_sync:
        values.update(state=State.ACTIVE, last_error=None)
    store.update(conn, connection_id, now, **values)


def _set_state(
    conn: Db, connection_id: int, state: State, error: str | None, now: datetime
) -> None:
    store.update(conn, connection_id, now, state=state, last_error=error)
