"""Group commit for the ingest path.

Requests hand their items to one `InboxWriter`; while a transaction is being written,
the items of every request that arrives meanwhile gather, and the next transaction takes
them all. Each request still waits for the commit that holds its items, so "202 only
after the items are committed" holds, with one fsync per batch instead of per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from bridge.store import db
from bridge.store.inbox import Incoming, Outcome, ingest
from bridge.store.schema import utcnow

log = logging.getLogger(__name__)


# Measured with bench/ingest (docs/benchmarks.md): a few loop turns before taking a
# batch let requests already being parsed join it; a cap well under the number of
# clients lets one batch commit while the next one's requests are parsed.
LINGER_TURNS = 10
MAX_BATCH_ITEMS = 12
# Tries of a batch that PostgreSQL rolled back to break a deadlock.
DEADLOCK_ATTEMPTS = 3


def _unreachable(error: Exception) -> bool:
    """The database, not the batch, is the problem: writing each request alone
    would only make each wait for the same failure in turn."""
    return isinstance(error, OperationalError | InterfaceError | TimeoutError)


class WriterClosed(RuntimeError):
    """The writer is shutting down and takes no more items."""


@dataclass(slots=True)
class _Request:
    items: Sequence[Incoming]
    done: asyncio.Future[list[Outcome]] = field(repr=False)


class InboxWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_items: int = MAX_BATCH_ITEMS,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._max_batch_items = max_batch_items
        self._on_stored = on_stored
        self._queue: list[_Request] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # One thread: batches are written one after another, never concurrently.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="inbox-writer")

    async def write(self, items: Sequence[Incoming]) -> list[Outcome]:
        """Store `items` durably; returns once they are committed (or raises)."""
        if self._closing:
            raise WriterClosed("the inbox writer is shutting down")
        if not items:
            return []
        if self._task is None:
            # A context of its own: it outlives the request that started it, whose
            # request id must not label every batch after.
            self._task = asyncio.create_task(
                self._run(), name="inbox-writer", context=contextvars.Context()
            )
        request = _Request(items, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._wake.set()
        return await request.done

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                # Let requests that are already being parsed join this batch.
                for _ in range(LINGER_TURNS):
                    await asyncio.sleep(0)
                await self._write(self._take_batch())
            if self._closing:
                return

    async def _write(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for request in batch for item in request.items]
        try:
            outcomes = await loop.run_in_executor(self._thread, self._commit, items)
        except Exception as error:
            if len(batch) > 1 and not _unreachable(error):
                # One bad request must not fail its neighbours: write each alone.
                for request in batch:
                    await self._write([request])
                return
            log.error(
                "inbox write failed",
                extra={"items": len(items), "error": repr(error)},
            )
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(error)
            return
        self._deliver(batch, outcomes)

    def _take_batch(self) -> list[_Request]:
        taken, count = 0, 0
        for request in self._queue:
            if taken and count + len(request.items) > self._max_batch_items:
                break
            taken += 1
            count += len(request.items)
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _commit(self, items: list[Incoming]) -> list[Outcome]:
        attempt = 1
        while True:
            try:
                with db.writing(self._engine) as conn:
                    return ingest(conn, items, utcnow())
            except Exception as error:
                # PostgreSQL: web processes storing copies of the same items in
                # different orders wait for each other; the server rolls one back.
                if attempt >= DEADLOCK_ATTEMPTS or not db.is_deadlock(error):
                    raise
                log.info("inbox write met a deadlock; writing again")
                attempt += 1

    def _deliver(self, batch: list[_Request], outcomes: list[Outcome]) -> None:
        start = 0
        for request in batch:
            end = start + len(request.items)
            # A request whose client went away was still committed: at-least-once.
            if not request.done.done():
                request.done.set_result(outcomes[start:end])
            start = end
        if self._on_stored is not None and Outcome.STORED in outcomes:
            self._on_stored()
