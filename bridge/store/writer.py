"""Group commit for the ingest path.

Requests hand their items to one `InboxWriter`, whose thread writes them: while one
transaction is being committed, the items of every request that arrives meanwhile
gather, and the next transaction takes them all. Each request still waits for the
commit that holds its items, so "202 only after the items are committed" holds, with
one fsync per batch instead of per request.

The thread takes its next batch as soon as a commit ends, without a trip through the
event loop; the loop only hands requests over and hears back once per batch. The
writing itself is a `BatchWriter`'s: a driver connection of its own in autocommit
mode, two calls into the driver per batch (`ingest_autocommit`), and what to do when a
batch fails. After each call into the driver the thread waits for the event loop's
thread to let go of the GIL, which under load is most of a batch's time
(docs/benchmarks.md, session 5).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from bridge.store import db
from bridge.store.inbox import Incoming, Outcome, ingest_autocommit
from bridge.store.schema import utcnow

log = logging.getLogger(__name__)

# One INSERT carries a batch (inbox.py): 64 rows of 15 columns stay far below the
# parameter limits of SQLite (32766) and PostgreSQL (65535).
MAX_BATCH_ITEMS = 64
# Tries of a batch that PostgreSQL rolled back to break a deadlock.
DEADLOCK_ATTEMPTS = 3


def _unreachable(error: Exception, dbapi: Any) -> bool:
    """The database, not the batch, is the problem: writing each request alone
    would only make each wait for the same failure in turn."""
    return isinstance(
        error,
        OperationalError
        | InterfaceError
        | TimeoutError
        | dbapi.OperationalError
        | dbapi.InterfaceError,
    )


class WriterClosed(RuntimeError):
    """The writer is shutting down and takes no more items."""


# What became of one request's items: their outcomes, or the error that kept them
# unwritten.
Result = list[Outcome] | Exception


class BatchWriter:
    """Writes a batch of requests' items as one transaction, on a driver connection of
    its own, in whichever thread calls it (one at a time: `InboxWriter`'s thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Opened when first needed, kept from batch to batch.
        self._connection: Any = None

    def write(self, batch: Sequence[Sequence[Incoming]]) -> list[Result]:
        """Each request's outcomes, in order; a request that could not be written
        gets the error instead, without failing the others if it alone is at fault."""
        items = [item for request in batch for item in request]
        if not items:
            return [[] for _ in batch]  # an empty collection: nothing to write
        try:
            outcomes = self._commit(items)
        except Exception as error:
            # Whatever state the connection was left in, the next batch starts afresh.
            self._disconnect()
            dbapi = self._engine.dialect.loaded_dbapi
            if len(batch) > 1 and not _unreachable(error, dbapi):
                # One bad request must not fail its neighbours: write each alone.
                return [result for one in batch for result in self.write([one])]
            log.error(
                "inbox write failed",
                extra={"items": len(items), "error": repr(error)},
            )
            return [error for _ in batch]
        results: list[Result] = []
        start = 0
        for request in batch:
            end = start + len(request)
            results.append(outcomes[start:end])
            start = end
        return results

    def close(self) -> None:
        self._disconnect()

    def _commit(self, items: list[Incoming]) -> list[Outcome]:
        attempt = 1
        while True:
            # A connection kept from an earlier batch may have died since (a server
            # restart or failover) unnoticed: the pool's pre-ping never sees it.
            kept = self._connection is not None
            driver = self._connect()
            try:
                return ingest_autocommit(driver, self._engine.dialect, items, utcnow())
            except Exception as error:
                if kept and self._disconnected(error, driver):
                    # Once, on a new connection: a server that is really gone fails
                    # the connect itself, and the batch with it.
                    log.info("inbox writer's connection had gone; connecting again")
                    self._disconnect()
                    continue
                # PostgreSQL: web processes storing copies of the same items in
                # different orders wait for each other; the server rolls one back.
                if attempt >= DEADLOCK_ATTEMPTS or not db.is_deadlock(error):
                    raise
                log.info("inbox write met a deadlock; writing again")
                attempt += 1

    def _disconnected(self, error: Exception, driver: Any) -> bool:
        """The driver's connection is gone, by the dialect's own reckoning."""
        dialect = self._engine.dialect
        return isinstance(error, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
            error, driver, None
        )

    def _connect(self) -> Any:
        if self._connection is None:
            connection = self._engine.raw_connection()
            # Out of the pool for good (closing it closes the driver's connection):
            # autocommit must not reach the pool's other users.
            connection.detach()
            if self._engine.dialect.name == "postgresql":
                driver: Any = connection.dbapi_connection
                driver.autocommit = True
            # SQLite's connections already are in autocommit mode (db.py).
            self._connection = connection
        return self._connection.dbapi_connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            with suppress(Exception):
                self._connection.close()
            self._connection = None


@dataclass(slots=True)
class _Request:
    items: Sequence[Incoming]
    done: asyncio.Future[list[Outcome]] = field(repr=False)


class InboxWriter:
    """The group commit: gathers the items of concurrent requests into batches for
    its thread, which writes them with a `BatchWriter`."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_items: int = MAX_BATCH_ITEMS,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self._batches = BatchWriter(engine)
        self._max_batch_items = max_batch_items
        self._on_stored = on_stored
        # None is the signal to stop, queued behind every request already taken.
        self._requests: SimpleQueue[_Request | None] = SimpleQueue()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def write(self, items: Sequence[Incoming]) -> list[Outcome]:
        """Store `items` durably; returns once they are committed (or raises)."""
        if self._closing:
            raise WriterClosed("the inbox writer is shutting down")
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._loop = loop
            # One thread: batches are written one after another, never concurrently.
            self._thread = threading.Thread(
                target=self._serve, name="inbox-writer", daemon=True
            )
            self._thread.start()
        request = _Request(items, loop.create_future())
        self._requests.put(request)
        return await request.done

    async def close(self) -> None:
        """Write what is queued, then stop."""
        if self._closing:
            return
        self._closing = True
        if self._thread is not None:
            self._requests.put(None)
            await asyncio.to_thread(self._thread.join)

    # The writer thread.

    def _serve(self) -> None:
        try:
            carried: _Request | None = None
            while True:
                first = carried or self._requests.get()
                if first is None:
                    return
                batch, carried = self._gather(first)
                results = self._batches.write([request.items for request in batch])
                assert self._loop is not None
                self._loop.call_soon_threadsafe(
                    self._deliver, list(zip(batch, results, strict=True))
                )
        finally:
            self._batches.close()

    def _gather(self, first: _Request) -> tuple[list[_Request], _Request | None]:
        """`first` and whatever else is waiting, up to the cap; what did not fit."""
        batch, count = [first], len(first.items)
        while True:
            try:
                request = self._requests.get_nowait()
            except Empty:
                return batch, None
            if request is None:
                self._requests.put(None)  # stop once this batch is written
                return batch, None
            if count + len(request.items) > self._max_batch_items:
                return batch, request
            batch.append(request)
            count += len(request.items)

    # Back on the event loop.

    def _deliver(self, results: list[tuple[_Request, Result]]) -> None:
        stored = False
        for request, result in results:
            # A request whose client went away was still committed: at-least-once.
            if request.done.done():
                continue
            if isinstance(result, Exception):
                request.done.set_exception(result)
            else:
                request.done.set_result(result)
                stored = stored or Outcome.STORED in result
        if stored and self._on_stored is not None:
            self._on_stored()
