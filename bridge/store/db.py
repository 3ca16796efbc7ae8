"""Engines: one per process, tuned per backend.

All database work is synchronous SQLAlchemy Core run in worker threads; the ingest path
batches it (see `writer.py`), so the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

P = ParamSpec("P")
T = TypeVar("T")

# Seconds a new PostgreSQL connection may take. Without a limit, a server that
# accepts the connection and then says nothing (overloaded, or a network path that
# drops packets) holds the caller for as long as the operating system's TCP timeout
# (psycopg's fallback is 130 s): a notification would wait instead of being
# answered 503. A `connect_timeout` in the URL or PGCONNECT_TIMEOUT is kept.
CONNECT_TIMEOUT_SECONDS = 5


def create(url: str) -> Engine:
    """An engine for `url`; a SQLite file's folder is created when missing.

    Its errors never quote the statement's parameters (`hide_parameters`): a
    notification's raw body holds its clientState, and errors end up in logs.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No server-side prepared statements. psycopg prepares a statement on
        # its 5th run, and PostgreSQL then settles on one generic plan made
        # from the table's size at that moment: made on a young inbox, the
        # ingest's dedupe lookup kept scanning the whole table as it grew,
        # until autovacuum next analysed it (docs/benchmarks.md). Unprepared,
        # every run is planned for its parameters, as the first four were.
        connect_args: dict[str, Any] = {"prepare_threshold": None}
        if "connect_timeout" not in parsed.query and not os.environ.get(
            "PGCONNECT_TIMEOUT"
        ):
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        return create_engine(
            url,
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args=connect_args,
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


# A checkpoint every 2000 WAL pages (8 MB) rather than SQLite's 1000: each stalls the
# committing writer while the database file is synced, and the pages every commit
# rewrites (the ends of the table and of its indexes) are copied once per checkpoint.
# Ingest +4 %, p99 8.7 -> 12.5 ms (docs/benchmarks.md, session 6).
WAL_CHECKPOINT_PAGES = 2000


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    # Take transaction control from the sqlite3 module so BEGIN is ours (below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed notification survives power loss, not just a crash; group
    # commit keeps the fsync off the per-request path.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the lock up front: two deferred transactions that both upgrade to
    # writing would deadlock, and SQLite answers that with an immediate SQLITE_BUSY.
    mode = "IMMEDIATE" if conn.get_execution_options().get("writing") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def is_deadlock(error: BaseException) -> bool:
    """PostgreSQL rolled the transaction back to break a deadlock (SQLSTATE 40P01):
    nothing of it was written, and it may simply be run again."""
    driver_error = error.orig if isinstance(error, DBAPIError) else error
    return getattr(driver_error, "sqlstate", None) == "40P01"


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: committed on success, rolled back on error."""
    with engine.connect() as conn:
        conn.execution_options(writing=True)
        with conn.begin():
            yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (consistent snapshot, no write lock)."""
    with engine.connect() as conn, conn.begin():
        yield conn


async def write(
    engine: Engine,
    fn: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """`fn(conn, ...)` in a writing transaction, off the event loop."""

    def work() -> T:
        with writing(engine) as conn:
            return fn(conn, *args, **kwargs)

    return await _in_thread(work)


async def read(
    engine: Engine,
    fn: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """`fn(conn, ...)` in a read-only transaction, off the event loop."""

    def work() -> T:
        with reading(engine) as conn:
            return fn(conn, *args, **kwargs)

    return await _in_thread(work)


async def _in_thread(work: Callable[[], T]) -> T:
    """`work()` in a thread; a caller cancelled meanwhile waits for it to end.

    A thread cannot be stopped: a transaction it runs commits or rolls back after
    the cancelled caller has moved on (a worker releasing its leases, say), and
    its pooled connection comes back after the engine may have been disposed,
    never to be closed. So the cancellation takes effect once the thread is done.
    """
    running = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        while not running.done():
            with suppress(asyncio.CancelledError):
                await asyncio.wait([running])
        if not running.cancelled():
            running.exception()  # the caller is gone; so is the result
        raise
