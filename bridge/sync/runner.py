"""One turn on one claim: run the action, then settle its items by the outcome.

The worker takes turns on the claims it finds; an operator's "renew now" or
"disconnect" takes a turn on its own claim while the caller waits (`operator.py`).
Both settle the same way, so an operator's failed attempt is retried by the worker
like any other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection as Db
from sqlalchemy import Engine

from bridge.settings import Settings
from bridge.store import connections, db, queue
from bridge.store.queue import Claim
from bridge.store.schema import utcnow
from bridge.sync.actions import Actions
from bridge.sync.retry import Backoff
from bridge.sync.upstreams import Upstreams
from bridge.sync.verdicts import Dead, Retry, Wait, verdict

log = logging.getLogger(__name__)

# The share of the lease an action may take; the rest is slack for settling.
ACTION_SHARE = 0.8


def worker_id(role: str = "worker") -> str:
    """Who holds a lease: unique per process and start, readable in the inbox."""
    host = socket.gethostname()[:32]  # the whole id fits in 64
    return f"{role}:{host}:{os.getpid()}:{random.getrandbits(32):08x}"


@dataclass(frozen=True, slots=True)
class Turn:
    """How a turn ended: `done`, `retry`, `wait` or `dead` (the metrics' label), or
    `unsettled` when the outcome could not be written (the lease then runs out and
    the items are tried again). `reason` says why it did not end `done`."""

    result: str
    reason: str | None = None


class Runner:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        upstreams: Upstreams,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.actions = Actions(
            engine,
            upstreams,
            lifetime=timedelta(minutes=settings.subscription_lifetime_minutes),
            renew_before=timedelta(minutes=settings.renew_before_minutes),
            clock=clock,
        )
        self._backoff = Backoff(
            settings.retry_base_seconds,
            settings.retry_max_seconds,
            settings.max_attempts,
        )
        self._now = clock

    async def turn(self, worker: str, claim: Claim) -> Turn:
        try:
            async with asyncio.timeout(self.lease.total_seconds() * ACTION_SHARE):
                await self.actions.run(claim)
        except Exception as error:
            return await self._failed(worker, claim, error)
        try:
            await db.write(self._engine, queue.complete, worker, claim.ids)
        except Exception:
            log.exception("settling work failed", extra=_about(claim))
            return Turn("unsettled", "settling work failed")
        return Turn("done")

    async def _failed(self, worker: str, claim: Claim, error: Exception) -> Turn:
        now = self._now()
        outcome = verdict(error)
        about = {**_about(claim), "reason": outcome.reason}
        settle: Callable[[Db], str]
        match outcome:
            case Retry(retry_after=retry_after):
                delay = self._backoff.delay(claim.attempts, retry_after)
                settle = _retry(
                    worker,
                    claim,
                    now,
                    now + timedelta(seconds=delay),
                    outcome.reason,
                    self._backoff.max_attempts,
                )
                log_error = outcome.reason.startswith("unexpected")
                (log.error if log_error else log.warning)(
                    "action failed; will retry",
                    extra={**about, "retry_in_seconds": round(delay, 1)},
                    exc_info=error if log_error else None,
                )
            case Wait(seconds=seconds):
                at = now + timedelta(seconds=seconds)
                settle = _defer(worker, claim, now, at, outcome.reason)
                log.warning("action waits", extra=about)
            case Dead():
                settle = _bury(worker, claim, now, outcome.reason)
                log.error("action gave up; items are dead", extra=about)
        try:
            result = await db.write(self._engine, settle)
        except Exception:
            log.exception("settling work failed", extra=_about(claim))
            return Turn("unsettled", outcome.reason)
        return Turn(result, outcome.reason)


def _about(claim: Claim) -> dict[str, object]:
    return {
        "connection_id": claim.connection_id,
        "items": len(claim.items),
        "attempts": claim.attempts,
    }


# Each settles a failed claim and records the reason on the connection, in one
# transaction; each returns the result label for the metrics.


def _retry(
    worker: str,
    claim: Claim,
    now: datetime,
    at: datetime,
    reason: str,
    max_attempts: int,
) -> Callable[[Db], str]:
    def settle(conn: Db) -> str:
        dead = queue.retry(
            conn, worker, claim.ids, at=at, error=reason, max_attempts=max_attempts
        )
        _note(conn, claim, reason, now)
        return "dead" if dead else "retry"

    return settle


def _defer(
    worker: str, claim: Claim, now: datetime, at: datetime, reason: str
) -> Callable[[Db], str]:
    def settle(conn: Db) -> str:
        queue.defer(conn, worker, claim.ids, at=at, reason=reason)
        _note(conn, claim, reason, now)
        return "wait"

    return settle


def _bury(worker: str, claim: Claim, now: datetime, reason: str) -> Callable[[Db], str]:
    def settle(conn: Db) -> str:
        queue.bury(conn, worker, claim.ids, error=reason)
        _note(conn, claim, reason, now)
        return "dead"

    return settle


def _note(conn: Db, claim: Claim, reason: str, now: datetime) -> None:
    connections.update(conn, claim.connection_id, now, last_error=reason)
