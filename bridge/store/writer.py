"""Group commit for the ingest path: the items of many requests in one transaction.

The ingest process (web/ingest.py) gathers the requests that arrive while a batch is
being written and hands the next batch to a `BatchWriter`: one fsync per batch instead
of per request, and each request still answered only once the batch that holds its
items is committed. The writer keeps a driver connection of its own in autocommit
mode and writes a batch of up to 64 items in two calls into the driver
(`ingest_autocommit`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from bridge.store import db
from bridge.store.inbox import Incoming, Outcome, ingest_autocommit
from bridge.store.schema import utcnow

log = logging.getLogger(__name__)

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


# What became of one request's items: their outcomes, or the error that kept them
# unwritten.
Result = list[Outcome] | Exception


class BatchWriter:
    """Writes a batch of requests' items as one transaction, on a driver connection of
    its own, one batch at a time."""

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
