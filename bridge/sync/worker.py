"""The worker loop: claim, act per connection, settle; and the housekeeping beside it.

`run()` works until `stop()` is called, then stops claiming, gives the actions in
flight `grace` seconds to finish, cancels the rest and releases their leases, so
another worker (or the next start) takes them over at once.
The upstream clients are the caller's: it closes them after `run()` returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine

from bridge import logs, metrics
from bridge.settings import Settings
from bridge.store import db, queue
from bridge.store.queue import Claim
from bridge.store.schema import utcnow
from bridge.sync import renewals
from bridge.sync.runner import Runner, worker_id
from bridge.sync.upstreams import Upstreams

log = logging.getLogger(__name__)

# Settled items are kept this long for the operator (and for deduplication).
RETENTION = timedelta(days=3)
PRUNE_EVERY = 3600.0


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
        self._runner = Runner(engine, settings, upstreams, clock=clock)
        self._lease = self._runner.lease
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

    # -- acting -------------------------------------------------------------------

    async def _act(self, claim: Claim) -> None:
        # Each action is a task of its own, so this labels its log lines only.
        logs.bind(connection_id=claim.connection_id, item_ids=claim.ids)
        started = time.perf_counter()
        try:
            turn = await self._runner.turn(self.id, claim)
        finally:
            metrics.ACTION_SECONDS.observe(time.perf_counter() - started)
        if turn.result != "unsettled":
            metrics.ACTIONS.labels(turn.result).inc()

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
