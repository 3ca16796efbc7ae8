"""The worker loop: claim, act per connection, settle; and the housekeeping beside it.

`run()` works until `stop()` is called, then stops claiming, gives the actions in
flight `grace` seconds to finish, cancels the rest and releases their leases, so
another worker (or the next start) takes them over at once.
The upstream clients are the caller's: it closes them after `run()` returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection as Db
from sqlalchemy import Engine

from bridge import logs, metrics
from bridge.settings import Settings
from bridge.store import connections, db, queue
from bridge.store.queue import Claim
from bridge.store.schema import utcnow
from bridge.sync import renewals
from bridge.sync.actions import Actions
from bridge.sync.retry import Backoff
from bridge.sync.upstreams import Upstreams
from bridge.sync.verdicts import Dead, Retry, Verdict, Wait, verdict

log = logging.getLogger(__name__)

# Settled items are kept this long for the operator (and for deduplication).
RETENTION = timedelta(days=3)
PRUNE_EVERY = 3600.0
# The share of the lease an action may take; the rest is slack for settling.
ACTION_SHARE = 0.8


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{random.getrandbits(32):08x}"


class Worker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        upstreams: Upstreams,
        *,
        poll_seconds: float = 1.0,
        housekeeping_seconds: float = 60.0,
        grace_seconds: float = 20.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.id = worker_id()
        self._engine = engine
        self._renew_before = timedelta(minutes=settings.renew_before_minutes)
        self._actions = Actions(
            engine,
            upstreams,
            lifetime=timedelta(minutes=settings.subscription_lifetime_minutes),
            renew_before=self._renew_before,
            clock=clock,
        )
        self._backoff = Backoff(
            settings.retry_base_seconds,
            settings.retry_max_seconds,
            settings.max_attempts,
        )
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._concurrency = settings.worker_concurrency
        self._poll = poll_seconds
        self._housekeeping_every = housekeeping_seconds
        self._grace = grace_seconds
        self._now = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: dict[asyncio.Task[None], Claim] = {}

    def wake(self) -> None:
        """New work was stored: claim now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; `run()` then winds down and returns."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info("worker started", extra={"worker": self.id})
        housekeeping = asyncio.create_task(self._housekeeping(), name="housekeeping")
        try:
            await self._claim_loop()
        finally:
            housekeeping.cancel()
            await asyncio.gather(housekeeping, return_exceptions=True)
            await self._wind_down()
            log.info("worker stopped", extra={"worker": self.id})

    # -- claiming ----------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self._concurrency - len(self._inflight)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = await db.write(
                        self._engine,
                        queue.claim,
                        self.id,
                        self._now(),
                        self._lease,
                        free,
                    )
                except Exception:
                    log.exception("claiming work failed; trying again shortly")
            for claim in claims:
                task = asyncio.create_task(self._act(claim))
                self._inflight[task] = claim
                task.add_done_callback(self._finished)
            if claims and len(claims) == free:
                continue  # there may be more waiting than there were slots
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()  # a slot is free, and its connection may have new items

    async def _wind_down(self) -> None:
        if not self._inflight:
            return
        log.info(
            "finishing actions in flight",
            extra={"actions": len(self._inflight), "grace_seconds": self._grace},
        )
        _done, late = await asyncio.wait(list(self._inflight), timeout=self._grace)
        claims = [self._inflight[task] for task in late]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        ids = [item_id for claim in claims for item_id in claim.ids]
        if ids:
            await db.write(self._engine, queue.release, self.id, ids, self._now())
            metrics.ACTIONS.labels("released").inc(len(claims))
            log.info("released unfinished work", extra={"items": len(ids)})

    # -- acting and settling -------------------------------------------------------

    async def _act(self, claim: Claim) -> None:
        # Each action is a task of its own, so this labels its log lines only.
        logs.bind(connection_id=claim.connection_id, item_ids=claim.ids)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._lease.total_seconds() * ACTION_SHARE):
                await self._actions.run(claim)
        except Exception as error:
            await self._settle_failure(claim, error, verdict(error))
        else:
            try:
                await db.write(self._engine, queue.complete, self.id, claim.ids)
            except Exception:
                # The lease runs out and the items are tried again: no loss.
                log.exception("settling work failed", extra=_about(claim))
                return
            metrics.ACTIONS.labels("done").inc()
        finally:
            metrics.ACTION_SECONDS.observe(time.perf_counter() - started)

    async def _settle_failure(
        self, claim: Claim, error: Exception, outcome: Verdict
    ) -> None:
        now = self._now()
        about = {**_about(claim), "reason": outcome.reason}
        match outcome:
            case Retry(retry_after=retry_after):
                delay = self._backoff.delay(claim.attempts, retry_after)
                settle = _retry(
                    self.id,
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
                settle = _defer(
                    self.id,
                    claim,
                    now,
                    now + timedelta(seconds=seconds),
                    outcome.reason,
                )
                log.warning("action waits", extra=about)
            case Dead():
                settle = _bury(self.id, claim, now, outcome.reason)
                log.error("action gave up; items are dead", extra=about)
        try:
            result = await db.write(self._engine, settle)
        except Exception:
            log.exception("settling work failed", extra=_about(claim))
            return
        metrics.ACTIONS.labels(result).inc()

    # -- housekeeping --------------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_prune = -PRUNE_EVERY
        while True:
            try:
                added = await db.write(
                    self._engine, renewals.schedule, self._now(), self._renew_before
                )
                if added:
                    metrics.RENEWALS_SCHEDULED.inc(added)
                    log.info("renewals scheduled", extra={"renewals": added})
                    self.wake()
                if time.monotonic() - last_prune >= PRUNE_EVERY:
                    last_prune = time.monotonic()
                    pruned = await db.write(
                        self._engine, queue.prune, self._now() - RETENTION
                    )
                    if pruned:
                        log.info("settled items pruned", extra={"items": pruned})
            except Exception:
                log.exception("housekeeping failed; trying again later")
            await asyncio.sleep(self._housekeeping_every)


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
