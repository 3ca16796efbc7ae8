"""Whatever arrives, the answer is never a 5xx, and group commit mixes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator

import httpx
import hypothesis
import pytest
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from bridge.app import create_app
from bridge.settings import Settings
from bridge.store.inbox import Incoming, Outcome
from bridge.store.inbox import ingest as ingest_items
from bridge.store.schema import utcnow
from bridge.store.writer import BatchWriter, Result
from bridge.web.ingest import (
    BATCH_ITEMS,
    IngestFailed,
    IngestProcess,
    Rejected,
    Stored,
    _Answer,
    _judge,
)
from tests.databases import Databases
from tests.seeds import SECRET_A, SUBSCRIPTION_A, inserts_failing, stored_items

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            SUBSCRIPTION_A,
            SECRET_A,
            "created",
            "updated",
            "missed",
            "2026-11-23T09:12:45.9696658+00:00",
            "2026-11-23T09:12:45Z",
            "Users/x/Events/y",
        ]
    ),
)
notification_like = st.fixed_dictionaries(
    {},
    optional={
        name: field_values
        for name in (
            "subscriptionId",
            "subscriptionExpirationDateTime",
            "changeType",
            "lifecycleEvent",
            "resource",
            "resourceData",
            "clientState",
            "tenantId",
            "id",
        )
    },
)
bodies = st.one_of(
    json_values.map(json.dumps),
    st.lists(notification_like, max_size=5).map(lambda v: json.dumps({"value": v})),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


def test_no_body_yields_a_server_error(settings: Settings, engine: Engine) -> None:
    app = create_app(settings, engine)
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://bridge")

    # Hypothesis drives sync functions: the app gets a loop of its own.
    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(body=bodies)
    def check(body: str) -> None:
        answer = runner.run(client.post("/graph/notifications", content=body.encode()))
        assert answer.status_code in (202, 400), answer.text

    with asyncio.Runner() as runner:
        lifespan = app.router.lifespan_context(app)
        runner.run(lifespan.__aenter__())
        try:
            check()
        finally:
            runner.run(client.aclose())
            runner.run(lifespan.__aexit__(None, None, None))


def item(subscription: str, secret: str | None, etag: str) -> Incoming:
    return Incoming(
        subscription_id=subscription,
        client_state=secret,
        kind="change",
        change_type="updated",
        lifecycle_event=None,
        resource="Users/u/Events/e",
        resource_id="e",
        etag=etag,
        expires_at=None,
        tenant_id=None,
        raw=json.dumps({"etag": etag}),
    )


def body(*items: Incoming) -> bytes:
    """A collection of `items` as Graph would POST it."""
    return json.dumps(
        {
            "value": [
                {
                    "subscriptionId": i.subscription_id,
                    "clientState": i.client_state,
                    "changeType": i.change_type,
                    "resource": i.resource,
                    "resourceData": {"id": i.resource_id, "@odata.etag": i.etag},
                }
                for i in items
            ]
        }
    ).encode()


@pytest.fixture
async def ingest(settings: Settings, database_url: str) -> AsyncIterator[IngestProcess]:
    process = IngestProcess.for_settings(settings, database_url, on_stored=None)
    try:
        yield process
    finally:
        await process.close()


async def test_concurrent_posts_are_batched_and_each_gets_its_own_outcomes(
    ingest: IngestProcess, engine: Engine
) -> None:
    batches_before = REGISTRY.get_sample_value("bridge_ingest_batches_total") or 0
    requests = 300
    # Request i: a new item, a copy of its own item, a forged secret, and every
    # third request an item for an unknown subscription.
    bodies = [
        body(
            item(SUBSCRIPTION_A, SECRET_A, f"etag-{i}"),
            item(SUBSCRIPTION_A, SECRET_A, f"etag-{i}"),
            item(SUBSCRIPTION_A, "forged", f"etag-forged-{i}"),
            *([item("unknown", None, f"etag-u-{i}")] if i % 3 == 0 else []),
        )
        for i in range(requests)
    ]
    verdicts = await asyncio.gather(*(ingest.ingest(b) for b in bodies))

    for i, verdict in enumerate(verdicts):
        assert isinstance(verdict, Stored)
        expected = [Outcome.STORED, Outcome.DUPLICATE, Outcome.BAD_CLIENT_STATE]
        if i % 3 == 0:
            expected.append(Outcome.IGNORED)
        assert verdict.outcomes == expected
        assert verdict.kinds == ["change"] * len(expected)
        # Each item not stored for action comes back with what its log line shows.
        assert [(n, summary.subscription_id) for n, summary in verdict.notable] == [
            (1, SUBSCRIPTION_A),
            (2, SUBSCRIPTION_A),
        ] + ([(3, "unknown")] if i % 3 == 0 else [])
    rows = stored_items(engine)
    assert len(rows) == requests + requests // 3
    assert {row["etag"] for row in rows} == {f"etag-{i}" for i in range(requests)} | {
        f"etag-u-{i}" for i in range(0, requests, 3)
    }
    batches = (REGISTRY.get_sample_value("bridge_ingest_batches_total") or 0) - (
        batches_before
    )
    assert batches < requests / 4, "items of concurrent requests share batches"


async def test_a_body_with_more_items_than_one_statement_takes_is_stored_whole(
    ingest: IngestProcess, engine: Engine
) -> None:
    # PostgreSQL takes at most 65,535 parameters in a statement: 4,369 rows of the
    # inbox's 15 columns. Graph's collections have no item limit of their own, and a
    # body refused at every retry would be lost.
    items = [item(SUBSCRIPTION_A, SECRET_A, f"etag-{i}") for i in range(4500)]
    verdict = await ingest.ingest(body(*items, items[0]))
    assert isinstance(verdict, Stored)
    assert verdict.outcomes == [Outcome.STORED] * 4500 + [Outcome.DUPLICATE]
    assert len(stored_items(engine)) == 4500


async def test_a_body_too_large_for_one_insert_is_stored_whole_or_not_at_all(
    ingest: IngestProcess, engine: Engine
) -> None:
    items = [item(SUBSCRIPTION_A, SECRET_A, f"etag-{i}") for i in range(100)]
    # The last item fails in the second INSERT, after the first has gone in.
    with (
        inserts_failing(engine, etag="etag-99"),
        pytest.raises(IngestFailed, match="insert refused"),
    ):
        await ingest.ingest(body(*items))
    assert stored_items(engine) == []
    verdict = await ingest.ingest(body(*items))
    assert isinstance(verdict, Stored)
    assert verdict.outcomes == [Outcome.STORED] * 100


def test_each_batch_is_answered_as_soon_as_it_is_committed() -> None:
    events: list[str] = []

    def write(batch: list[list[Incoming]]) -> list[Result]:
        events.append(f"write {[len(items) for items in batch]}")
        return [[Outcome.STORED] * len(items) for items in batch]

    def answer(verdicts: list[tuple[int, _Answer]]) -> None:
        events.append(f"answer {[number for number, _ in verdicts]}")

    one = body(item(SUBSCRIPTION_A, SECRET_A, "etag"))
    many = body(*[item(SUBSCRIPTION_A, SECRET_A, "etag")] * (BATCH_ITEMS + 1))
    requests = [(n, one) for n in range(BATCH_ITEMS)] + [(16, b"["), (17, many)]
    _judge(requests, write, answer)
    assert events == [
        "answer [16]",  # a body that is not a collection waits for no write
        f"write {[1] * BATCH_ITEMS}",
        f"answer {list(range(BATCH_ITEMS))}",
        f"write [{BATCH_ITEMS + 1}]",  # one request larger than a batch goes alone
        "answer [17]",
    ]


async def test_a_body_that_is_not_a_collection_is_rejected_alone(
    ingest: IngestProcess, engine: Engine
) -> None:
    good = body(item(SUBSCRIPTION_A, SECRET_A, "etag-1"))
    verdicts = await asyncio.gather(
        ingest.ingest(good), ingest.ingest(b'{"value": 1}'), ingest.ingest(b"[")
    )
    assert isinstance(verdicts[0], Stored)
    assert verdicts[1] == Rejected(
        "not a notification collection: value: Input should be a valid list"
    )
    assert verdicts[2] == Rejected("body is not valid JSON")
    assert len(stored_items(engine)) == 1


async def test_a_failing_request_does_not_fail_its_neighbours(
    ingest: IngestProcess, engine: Engine
) -> None:
    good = [body(item(SUBSCRIPTION_A, SECRET_A, f"etag-{i}")) for i in range(20)]
    bad = body(item(SUBSCRIPTION_A, SECRET_A, "etag-poison"))
    with inserts_failing(engine, etag="etag-poison"):
        results = await asyncio.gather(
            *(ingest.ingest(b) for b in [*good[:10], bad, *good[10:]]),
            return_exceptions=True,
        )
    assert isinstance(results[10], IngestFailed)
    assert "insert refused" in str(results[10])
    others = results[:10] + results[11:]
    assert all(isinstance(r, Stored) and r.outcomes == [Outcome.STORED] for r in others)
    assert len(stored_items(engine)) == 20


async def test_a_dead_ingest_process_fails_what_waits_and_the_next_post_restarts_it(
    ingest: IngestProcess, engine: Engine
) -> None:
    first = await ingest.ingest(body(item(SUBSCRIPTION_A, SECRET_A, "etag-1")))
    assert isinstance(first, Stored)
    child = ingest.pid
    assert child is not None
    # Held where it stands while a POST waits for it; then gone, as the OOM killer
    # would have it.
    os.kill(child, signal.SIGSTOP)
    waiting = asyncio.create_task(
        ingest.ingest(body(item(SUBSCRIPTION_A, SECRET_A, "etag-lost")))
    )
    await asyncio.sleep(0.1)
    assert not waiting.done()
    os.kill(child, signal.SIGKILL)
    with pytest.raises(IngestFailed, match="stopped"):
        await asyncio.wait_for(waiting, 10)
    second = await ingest.ingest(body(item(SUBSCRIPTION_A, SECRET_A, "etag-2")))
    assert isinstance(second, Stored)
    assert ingest.pid not in (None, child)
    assert {row["etag"] for row in stored_items(engine)} == {"etag-1", "etag-2"}


async def test_a_deadlock_with_another_process_is_written_again(
    engine: Engine, databases: Databases
) -> None:
    if databases.backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite writers never wait for each other")
    first, second = item("unknown", None, "etag-1"), item("unknown", None, "etag-2")
    writer = BatchWriter(engine)
    other = engine.connect()
    try:
        # Another web process, with a copy of the second item, not committed yet.
        other.begin()
        ingest_items(other, [second], utcnow())
        # The writer stores the first, then waits for the other's second...
        writing = asyncio.create_task(
            asyncio.to_thread(writer.write, [[first, second]])
        )
        await asyncio.sleep(0.2)
        # ...which goes on to store a copy of the first: each waits for the
        # other. PostgreSQL breaks the cycle after deadlock_timeout (1 s) in the
        # writer's transaction, whose wait began first.
        await asyncio.to_thread(ingest_items, other, [first], utcnow())
        await asyncio.sleep(0.3)  # the writer, writing again, waits once more
        other.commit()
        [outcomes] = await asyncio.wait_for(writing, 10)
    finally:
        other.close()
        writer.close()
    assert isinstance(outcomes, list)
    assert len(outcomes) == 2
    keys = [row["dedupe_key"] for row in stored_items(engine)]
    assert sorted(keys) == sorted([first.dedupe_key(), second.dedupe_key()])


async def test_a_connection_the_server_ended_between_batches_is_replaced(
    engine: Engine, databases: Databases
) -> None:
    if databases.backend != "postgresql":
        pytest.skip("PostgreSQL only: a SQLite file does not go away")
    others = text(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    writer = BatchWriter(engine)
    try:
        first = writer.write([[item(SUBSCRIPTION_A, SECRET_A, "etag-1")]])
        # A restart or failover: the server ends the writer's session (and every
        # other one on this database) while nothing is being written.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for pid in conn.execute(others).scalars():
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            for _ in range(100):  # each statement sees the sessions anew (autocommit)
                if not conn.execute(others).first():
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the server did not end the other sessions")
        second = writer.write([[item(SUBSCRIPTION_A, SECRET_A, "etag-2")]])
    finally:
        writer.close()
    assert (first, second) == ([[Outcome.STORED]], [[Outcome.STORED]])
    assert len(stored_items(engine)) == 2


def test_an_item_shown_in_a_log_or_traceback_keeps_its_secret() -> None:
    shown = repr(item(SUBSCRIPTION_A, SECRET_A, "etag-1"))
    assert SUBSCRIPTION_A in shown
    assert SECRET_A not in shown
