"""Running database work off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import Connection as Db
from sqlalchemy import Engine, QueuePool, select

from bridge.store import connections, db
from bridge.store.schema import connections as table
from bridge.store.schema import utcnow
from tests.seeds import SUBSCRIPTION_A


def _id_of(conn: Db, subscription_id: str) -> int:
    query = select(table.c.id).where(table.c.subscription_id == subscription_id)
    found: int = conn.execute(query).scalar_one()
    return found


async def test_a_cancelled_caller_returns_once_its_transaction_has_ended(
    engine: Engine,
) -> None:
    a = await db.read(engine, _id_of, SUBSCRIPTION_A)
    started = threading.Event()

    def slow(conn: Db) -> None:
        started.set()
        time.sleep(0.3)
        connections.update(conn, a, utcnow(), last_error="written")

    task = asyncio.create_task(db.write(engine, slow))
    await asyncio.to_thread(started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # The thread could not be stopped: its transaction committed, and before the
    # caller saw the cancellation, so its connection is back in the pool.
    found = await db.read(engine, connections.get, a)
    assert found is not None
    assert found.last_error == "written"
    if isinstance(engine.pool, QueuePool):
        assert engine.pool.checkedout() == 0


async def test_a_cancelled_caller_of_failing_work_sees_the_cancellation(
    engine: Engine,
) -> None:
    started = threading.Event()

    def failing(_conn: Db) -> None:
        started.set()
        time.sleep(0.2)
        raise RuntimeError("the work failed")

    task = asyncio.create_task(db.write(engine, failing))
    await asyncio.to_thread(started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_postgresql_plans_each_statement_for_its_parameters(
    engine: Engine,
) -> None:
    # psycopg would prepare a statement on its 5th run, and PostgreSQL then cache
    # one generic plan for it, made from the table's size at that moment: made on
    # a young inbox, the dedupe lookup kept scanning the whole table as it grew
    # (docs/benchmarks.md, ingest on PostgreSQL).
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL setting")
    lookup = "SELECT id FROM inbox WHERE dedupe_key IN (%s, %s)"
    with engine.connect() as conn:
        for n in range(20):
            conn.exec_driver_sql(lookup, (f"a{n}", f"b{n}")).all()
        plans = conn.exec_driver_sql(
            "SELECT count(*), coalesce(sum(generic_plans), 0) "
            "FROM pg_prepared_statements"
        ).one()
    assert tuple(plans) == (0, 0)
