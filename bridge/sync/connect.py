"""Connecting a calendar: the Graph subscription, the connection, the Nexudus record.

The three steps run while the caller waits (`bridge connect`, the admin API).
A refusal by an upstream undoes what was done and raises `Refused`, naming the
upstream. When Nexudus is only unavailable (or not configured yet), the connection
stays `pending` and the worker creates the record.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import Connection as Db
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from bridge import nexudus
from bridge.graph import _errors as graph_errors
from bridge.graph.subscriptions import Subscription, new_client_state
from bridge.store import connections as store
from bridge.store import db, queue
from bridge.store.connections import Connection, State
from bridge.store.schema import MAX_ID, utcnow
from bridge.sync.actions import record_fields
from bridge.sync.upstreams import Unconfigured, Upstreams

log = logging.getLogger(__name__)


class Refused(Exception):
    """An upstream refused the connection; nothing of it was kept."""

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(f"{upstream} refused: {message}")
        self.upstream = upstream
        self.message = message


@dataclass(frozen=True)
class Connected:
    connection: Connection
    # False when the same calendar was already connected to the same resource.
    created: bool


class ConnectRequest(BaseModel):
    """What to connect; checked here once for the admin API and the CLI alike."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    resource_id: int = Field(gt=0, le=MAX_ID)
    user_id: str = Field(min_length=1, max_length=255, pattern=r"^\S+$")
    calendar_id: str | None = Field(None, min_length=1, max_length=512)
    name: str | None = Field(None, min_length=1, max_length=255, pattern=r"\S")
    coworker_id: int | None = Field(None, gt=0, le=MAX_ID)

    @field_validator("user_id", "calendar_id", "name")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        # Refused before the subscription is made: PostgreSQL cannot store U+0000,
        # and no mailbox, calendar id or display name holds a control character.
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise PydanticCustomError(
                "control_characters", "must not contain control characters"
            )
        return value


def first_problem(error: ValidationError) -> tuple[str, str]:
    """The field and message of the first thing wrong with a request."""
    first = error.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"])
    return field, first["msg"]


async def connect(
    engine: Engine,
    upstreams: Upstreams,
    request: ConnectRequest,
    *,
    lifetime: timedelta,
    clock: Callable[[], datetime] = utcnow,
) -> Connected:
    graph = upstreams.graph
    notification_url, lifecycle_url = upstreams.subscription_urls()
    try:
        if request.calendar_id is None:
            calendar = await graph.get_default_calendar(request.user_id)
        else:
            calendar = await graph.get_calendar(request.user_id, request.calendar_id)
    except graph_errors.GiveUp as error:
        raise Refused("Graph", error.message) from None
    existing = await db.read(
        engine, store.find_live, request.user_id, calendar.id, request.resource_id
    )
    if existing is not None:
        return Connected(existing, created=False)
    try:
        secret = new_client_state()
        resource = f"users/{request.user_id}/calendars/{calendar.id}/events"
        subscription = await graph.create_subscription(
            resource, notification_url, lifecycle_url, clock() + lifetime, secret
        )
    except graph_errors.GiveUp as error:
        raise Refused("Graph", error.message) from None
    try:
        connection = await db.write(
            engine,
            store.insert,
            state=State.PENDING,
            resource_id=request.resource_id,
            coworker_id=request.coworker_id,
            user_id=request.user_id,
            calendar_id=calendar.id,
            name=request.name or calendar.name,
            subscription_id=subscription.id,
            subscription_expires_at=subscription.expires_at.replace(microsecond=0),
            client_state=secret,
            now=clock(),
        )
    except IntegrityError:
        # Connected by another request meanwhile (the index on live connections).
        # Graph keeps one subscription per resource, so ours may have replaced
        # the other request's: the connection takes ours, which Graph surely has.
        existing = await db.read(
            engine, store.find_live, request.user_id, calendar.id, request.resource_id
        )
        if existing is None:
            await graph.delete_subscription(subscription.id)
            raise
        adopted = await db.write(
            engine, _adopt, existing, subscription, secret, clock()
        )
        await graph.delete_subscription(existing.subscription_id)
        return Connected(adopted, created=False)
    except BaseException:
        await graph.delete_subscription(subscription.id)
        raise
    log.info(
        "calendar connected",
        extra={"connection_id": connection.id, "subscription_id": subscription.id},
    )
    return Connected(
        await _create_record(engine, upstreams, connection, clock), created=True
    )


def _adopt(
    conn: Db,
    existing: Connection,
    subscription: Subscription,
    secret: str,
    now: datetime,
) -> Connection:
    """The live connection, moved to `subscription`; the worker then brings its
    record up to date."""
    store.replace_subscription(
        conn,
        existing,
        subscription_id=subscription.id,
        client_state=secret,
        expires_at=subscription.expires_at,
        now=now,
    )
    queue.enqueue(
        conn,
        kind=queue.RECONCILE,
        connection_id=existing.id,
        subscription_id=subscription.id,
        key=f"adopt\x1f{subscription.id}",
        at=now,
        now=now,
    )
    fresh = store.get(conn, existing.id)
    assert fresh is not None
    return fresh


async def _create_record(
    engine: Engine,
    upstreams: Upstreams,
    connection: Connection,
    clock: Callable[[], datetime],
) -> Connection:
    try:
        record_id = await upstreams.nexudus.create_calendar(record_fields(connection))
    except nexudus.GiveUp as error:
        if isinstance(error, nexudus.Unauthorized):
            return await _leave_to_worker(engine, connection, str(error), clock)
        await upstreams.graph.delete_subscription(connection.subscription_id)
        await db.write(engine, store.delete, connection.id)
        raise Refused("Nexudus", error.message) from None
    except (nexudus.RetryLater, Unconfigured) as error:
        # A timed-out create may have been applied: the worker searches first.
        return await _leave_to_worker(engine, connection, str(error), clock)

    def stored(conn: Db) -> Connection:
        store.update(
            conn,
            connection.id,
            clock(),
            nexudus_record_id=record_id,
            state=State.ACTIVE,
        )
        fresh = store.get(conn, connection.id)
        assert fresh is not None
        return fresh

    return await db.write(engine, stored)


async def _leave_to_worker(
    engine: Engine, connection: Connection, reason: str, clock: Callable[[], datetime]
) -> Connection:
    log.warning(
        "Nexudus record left to the worker",
        extra={"connection_id": connection.id, "reason": reason},
    )
    now = clock()
    key = hashlib.sha256(f"connect\x1f{connection.id}".encode()).hexdigest()

    def pending(conn: Db) -> Connection:
        store.update(conn, connection.id, now, last_error=reason)
        queue.enqueue(
            conn,
            kind=queue.RECONCILE,
            connection_id=connection.id,
            subscription_id=connection.subscription_id,
            key=key,
            at=now,
            now=now,
        )
        fresh = store.get(conn, connection.id)
        assert fresh is not None
        return fresh

    return await db.write(engine, pending)
