"""The inbox as the worker's queue: claiming with leases, coalescing, settling."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection as Db
from sqlalchemy import Engine, select

from bridge.store import connections as store
from bridge.store import db, queue
from bridge.store.schema import connections, inbox, utcnow
from tests.databases import Databases
from tests.seeds import SUBSCRIPTION_A, SUBSCRIPTION_B, stored_items

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


@pytest.fixture
def ids(engine: Engine) -> dict[str, int]:
    """The seeded connections' ids, by their subscription id."""
    with db.reading(engine) as conn:
        rows = conn.execute(select(connections.c.subscription_id, connections.c.id))
        return {sub_id: conn_id for sub_id, conn_id in rows}


@pytest.fixture
def a(ids: dict[str, int]) -> int:
    return ids[SUBSCRIPTION_A]


@pytest.fixture
def b(ids: dict[str, int]) -> int:
    return ids[SUBSCRIPTION_B]


_keys = iter(range(1_000_000))


def add(
    conn: Db,
    connection_id: int | None,
    *,
    at: datetime | None = NOW,
    state: str = "pending",
    kind: str = "change",
    received_at: datetime = NOW,
    attempts: int = 0,
    leased_until: datetime | None = None,
    claimed_by: str | None = None,
) -> int:
    """Insert one inbox item as it would be after ingest (or a settle)."""
    item_id: int = conn.execute(
        inbox.insert()
        .values(
            state=state,
            kind=kind,
            subscription_id=SUBSCRIPTION_A,
            connection_id=connection_id,
            received_at=received_at,
            attempts=attempts,
            next_attempt_at=at,
            leased_until=leased_until,
            claimed_by=claimed_by,
            raw="{}",
            dedupe_key=f"key-{next(_keys)}",
        )
        .returning(inbox.c.id)
    ).scalar_one()
    return item_id


def rows(engine: Engine) -> dict[int, dict[str, Any]]:
    return {item["id"]: item for item in stored_items(engine)}


def claim(engine: Engine, worker: str, now: datetime = NOW, most: int = 10) -> Any:
    with db.writing(engine) as conn:
        return queue.claim(conn, worker, now, LEASE, most)


# -- claiming ----------------------------------------------------------------------


def test_claim_leases_every_pending_item_of_the_connection(
    engine: Engine, a: int
) -> None:
    with db.writing(engine) as conn:
        due = add(conn, a, at=NOW - timedelta(seconds=1))
        later = add(conn, a, at=NOW + timedelta(hours=1))  # backing off
        earlier_attempts = add(conn, a, at=NOW, attempts=2)

    claims = claim(engine, "w1")

    assert len(claims) == 1
    assert claims[0].connection_id == a
    assert claims[0].ids == [due, later, earlier_attempts]
    assert [item.attempts for item in claims[0].items] == [1, 1, 3]
    assert claims[0].attempts == 3
    for item in rows(engine).values():
        assert item["state"] == "processing"
        assert item["claimed_by"] == "w1"
        assert item["leased_until"] == NOW + LEASE


def test_claim_returns_what_the_items_carry(engine: Engine, a: int) -> None:
    expiry = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
    with db.writing(engine) as conn:
        item_id = conn.execute(
            inbox.insert()
            .values(
                state="pending",
                kind="lifecycle",
                subscription_id=SUBSCRIPTION_A,
                connection_id=a,
                lifecycle_event="reauthorizationRequired",
                subscription_expires_at=expiry,
                received_at=NOW,
                attempts=0,
                next_attempt_at=NOW,
                raw="{}",
                dedupe_key="lifecycle-1",
            )
            .returning(inbox.c.id)
        ).scalar_one()

    [only] = claim(engine, "w1")

    assert only.items == (
        queue.Item(
            id=item_id,
            kind="lifecycle",
            subscription_id=SUBSCRIPTION_A,
            connection_id=a,
            lifecycle_event="reauthorizationRequired",
            subscription_expires_at=expiry,
            attempts=1,
        ),
    )


def test_a_connection_with_nothing_due_is_not_claimed(engine: Engine, a: int) -> None:
    with db.writing(engine) as conn:
        add(conn, a, at=NOW + timedelta(seconds=1))
    assert claim(engine, "w1") == []
    assert [item["state"] for item in rows(engine).values()] == ["pending"]


def test_claim_leaves_other_connections_alone(engine: Engine, a: int, b: int) -> None:
    with db.writing(engine) as conn:
        add(conn, a)
        not_due = add(conn, b, at=NOW + timedelta(minutes=1))

    claims = claim(engine, "w1")

    assert [c.connection_id for c in claims] == [a]
    untouched = rows(engine)[not_due]
    assert untouched["state"] == "pending"
    assert untouched["attempts"] == 0
    assert untouched["claimed_by"] is None


def test_settled_and_unmatched_items_are_never_claimed(engine: Engine, a: int) -> None:
    with db.writing(engine) as conn:
        for state in ("done", "dead", "ignored"):
            add(conn, a, state=state)
        add(conn, None)  # its connection is gone
    assert claim(engine, "w1") == []


def test_a_live_lease_keeps_the_connection_from_other_workers(
    engine: Engine, a: int
) -> None:
    with db.writing(engine) as conn:
        first = add(conn, a)
    claim(engine, "w1")
    with db.writing(engine) as conn:
        arrived = add(conn, a, at=NOW + timedelta(minutes=1))

    # Up to the last moment of w1's lease, nobody else acts on the connection.
    for moment in (NOW + timedelta(minutes=1), NOW + LEASE):
        assert claim(engine, "w2", moment) == []

    items = rows(engine)
    assert items[first]["claimed_by"] == "w1"
    assert items[arrived]["state"] == "pending"
    assert items[arrived]["attempts"] == 0


def test_items_of_a_crashed_worker_are_claimed_again_after_the_lease(
    engine: Engine, a: int
) -> None:
    with db.writing(engine) as conn:
        first = add(conn, a)
    claim(engine, "w1")  # ... and w1 dies
    with db.writing(engine) as conn:
        arrived = add(conn, a, at=NOW + LEASE)
    later = NOW + LEASE + timedelta(seconds=1)

    [taken] = claim(engine, "w2", later)

    assert taken.ids == [first, arrived]
    assert [item.attempts for item in taken.items] == [2, 1]
    items = rows(engine)
    assert items[first]["claimed_by"] == "w2"
    assert items[first]["leased_until"] == later + LEASE
    # The lease is w2's now: w1 coming back to life cannot settle it.
    with db.writing(engine) as conn:
        assert queue.complete(conn, "w1", [first]) == 0
    assert rows(engine)[first]["state"] == "processing"


def test_connections_max_limits_connections_not_items(
    engine: Engine, a: int, b: int
) -> None:
    with db.writing(engine) as conn:
        of_b = [add(conn, b, at=NOW - timedelta(minutes=1)) for _ in range(2)]
        of_a = [add(conn, a, at=NOW - timedelta(minutes=10 - n)) for n in range(3)]

    [first] = claim(engine, "w1", most=1)
    assert first.connection_id == a  # the one waiting longest
    assert first.ids == of_a

    [second] = claim(engine, "w1", most=1)
    assert second.connection_id == b
    assert second.ids == of_b

    assert claim(engine, "w1", most=1) == []


# -- settling ----------------------------------------------------------------------


def claimed(engine: Engine, connection_id: int, count: int = 1) -> list[int]:
    """`count` items of the connection, claimed by w1 at NOW."""
    with db.writing(engine) as conn:
        for _ in range(count):
            add(conn, connection_id)
    [taken] = claim(engine, "w1")
    assert len(taken.ids) == count
    ids: list[int] = taken.ids
    return ids


def test_complete(engine: Engine, a: int) -> None:
    ids = claimed(engine, a, 2)
    with db.writing(engine) as conn:
        assert queue.complete(conn, "w1", ids) == 2
    for item in rows(engine).values():
        assert item["state"] == "done"
        assert item["leased_until"] is None
        assert item["claimed_by"] is None
        assert item["last_error"] is None


def test_retry_backs_off_until_the_given_time(engine: Engine, a: int) -> None:
    [item_id] = claimed(engine, a)
    at = NOW + timedelta(seconds=42)
    with db.writing(engine) as conn:
        dead = queue.retry(
            conn, "w1", [item_id], at=at, error="Nexudus: 503", max_attempts=3
        )
    assert dead == 0
    item = rows(engine)[item_id]
    assert item["state"] == "pending"
    assert item["next_attempt_at"] == at
    assert item["last_error"] == "Nexudus: 503"
    assert item["attempts"] == 1
    assert item["leased_until"] is None
    assert item["claimed_by"] is None
    # Not due before `at`; due from then on.
    assert claim(engine, "w1", at - timedelta(seconds=1)) == []
    [again] = claim(engine, "w1", at)
    assert again.ids == [item_id]
    assert again.attempts == 2


def test_retry_buries_items_out_of_attempts(engine: Engine, a: int) -> None:
    with db.writing(engine) as conn:
        worn = add(conn, a, attempts=2)
        fresh = add(conn, a)
    [taken] = claim(engine, "w1")
    assert taken.ids == [worn, fresh]

    with db.writing(engine) as conn:
        dead = queue.retry(
            conn,
            "w1",
            taken.ids,
            at=NOW + timedelta(minutes=1),
            error="Graph: 503",
            max_attempts=3,
        )

    assert dead == 1
    items = rows(engine)
    assert items[worn]["state"] == "dead"
    assert items[worn]["next_attempt_at"] is None
    assert "out of attempts" in items[worn]["last_error"]
    assert "Graph: 503" in items[worn]["last_error"]
    assert items[worn]["claimed_by"] is None
    assert items[fresh]["state"] == "pending"
    assert items[fresh]["last_error"] == "Graph: 503"
    assert items[fresh]["next_attempt_at"] == NOW + timedelta(minutes=1)


def test_bury(engine: Engine, a: int) -> None:
    [item_id] = claimed(engine, a)
    with db.writing(engine) as conn:
        assert queue.bury(conn, "w1", [item_id], error="Nexudus refused") == 1
    item = rows(engine)[item_id]
    assert item["state"] == "dead"
    assert item["last_error"] == "Nexudus refused"
    assert item["next_attempt_at"] is None
    assert item["claimed_by"] is None
    assert claim(engine, "w1", NOW + timedelta(days=1)) == []


def test_defer_does_not_use_up_an_attempt(engine: Engine, a: int) -> None:
    [item_id] = claimed(engine, a)
    at = NOW + timedelta(minutes=1)
    with db.writing(engine) as conn:
        count = queue.defer(conn, "w1", [item_id], at=at, reason="waiting for config")
    assert count == 1
    item = rows(engine)[item_id]
    assert item["state"] == "pending"
    assert item["attempts"] == 0
    assert item["next_attempt_at"] == at
    assert item["last_error"] == "waiting for config"
    assert item["claimed_by"] is None
    [again] = claim(engine, "w1", at)
    assert again.attempts == 1


def test_release_gives_items_back_at_once_without_counting(
    engine: Engine, a: int
) -> None:
    [item_id] = claimed(engine, a)
    stopping = NOW + timedelta(seconds=20)
    with db.writing(engine) as conn:
        assert queue.release(conn, "w1", [item_id], stopping) == 1
    item = rows(engine)[item_id]
    assert item["state"] == "pending"
    assert item["attempts"] == 0
    assert item["next_attempt_at"] == stopping
    assert item["leased_until"] is None
    # Another worker takes it over at once, well before w1's lease would end.
    [taken] = claim(engine, "w2", stopping)
    assert taken.ids == [item_id]
    assert taken.attempts == 1


SETTLES: dict[str, Callable[[Db, str, list[int]], int]] = {
    "complete": queue.complete,
    "retry": lambda conn, worker, ids: queue.retry(
        conn, worker, ids, at=NOW, error="e", max_attempts=1
    ),
    "bury": lambda conn, worker, ids: queue.bury(conn, worker, ids, error="e"),
    "defer": lambda conn, worker, ids: queue.defer(
        conn, worker, ids, at=NOW, reason="r"
    ),
    "release": lambda conn, worker, ids: queue.release(conn, worker, ids, NOW),
}


@pytest.mark.parametrize("settle", SETTLES.values(), ids=SETTLES.keys())
def test_settling_only_touches_items_leased_to_the_worker(
    engine: Engine, a: int, b: int, settle: Callable[[Db, str, list[int]], int]
) -> None:
    with db.writing(engine) as conn:
        pending = add(conn, b, at=NOW + timedelta(hours=1))
        done = add(conn, b, state="done")
    leased = claimed(engine, a)
    before = rows(engine)

    with db.writing(engine) as conn:
        assert settle(conn, "w2", [*leased, pending, done]) == 0
        assert settle(conn, "w1", [pending, done]) == 0

    assert rows(engine) == before
    with db.writing(engine) as conn:
        settle(conn, "w1", leased)
    assert rows(engine)[leased[0]]["state"] != "processing"


# -- the worker's own items, pruning, the next due time ------------------------------


def test_enqueue_is_idempotent_by_key(engine: Engine, a: int) -> None:
    at = NOW + timedelta(seconds=30)
    with db.writing(engine) as conn:
        first = queue.enqueue(
            conn,
            kind=queue.RENEWAL,
            connection_id=a,
            subscription_id=SUBSCRIPTION_A,
            key="renewal-1",
            at=at,
            now=NOW,
            detail={"expired": False},
        )
    with db.writing(engine) as conn:
        second = queue.enqueue(
            conn,
            kind=queue.RECONCILE,
            connection_id=a,
            subscription_id=SUBSCRIPTION_A,
            key="renewal-1",
            at=NOW,
            now=NOW,
        )

    [item] = stored_items(engine)
    assert (first, second) == (item["id"], None)
    assert item["kind"] == "renewal"
    assert item["state"] == "pending"
    assert item["connection_id"] == a
    assert item["subscription_id"] == SUBSCRIPTION_A
    assert item["attempts"] == 0
    assert item["next_attempt_at"] == at
    assert item["received_at"] == NOW
    assert item["dedupe_key"] == "renewal-1"
    assert json.loads(item["raw"]) == {
        "kind": "renewal",
        "connectionId": a,
        "expired": False,
    }


def test_prune_forgets_only_old_settled_items(engine: Engine, a: int) -> None:
    cutoff = NOW - timedelta(days=3)
    old = cutoff - timedelta(seconds=1)
    with db.writing(engine) as conn:
        forgotten = {
            add(conn, a, state="done", received_at=old),
            add(conn, None, state="ignored", received_at=old),
        }
        kept = {
            add(conn, a, state="dead", received_at=old),
            add(conn, a, state="pending", received_at=old),
            add(
                conn,
                a,
                state="processing",
                received_at=old,
                leased_until=NOW,
                claimed_by="w1",
            ),
            add(conn, a, state="done", received_at=cutoff),
            add(conn, None, state="ignored", received_at=NOW),
        }

    with db.writing(engine) as conn:
        assert queue.prune(conn, cutoff) == 2

    assert set(rows(engine)) == kept
    assert not forgotten & set(rows(engine))


def test_next_due_is_the_earliest_pending_item(engine: Engine, a: int) -> None:
    with db.reading(engine) as conn:
        assert queue.next_due(conn) is None
    with db.writing(engine) as conn:
        add(conn, a, state="dead", at=None)
        add(conn, a, state="done", at=NOW - timedelta(hours=2))
        add(
            conn,
            a,
            state="processing",
            at=NOW - timedelta(hours=1),
            leased_until=NOW,
            claimed_by="w1",
        )
        add(conn, a, at=NOW + timedelta(minutes=5))
        add(conn, a, at=NOW + timedelta(minutes=1))
    with db.reading(engine) as conn:
        due = queue.next_due(conn)
    assert due == NOW + timedelta(minutes=1)
    assert due is not None
    assert due.tzinfo is not None


def test_revive_puts_only_a_dead_item_back_with_fresh_attempts(
    engine: Engine, a: int
) -> None:
    with db.writing(engine) as conn:
        dead = add(conn, a, state="dead", at=None, attempts=140)
        done = add(conn, a, state="done", attempts=1)
    later = NOW + timedelta(hours=1)
    with db.writing(engine) as conn:
        assert queue.revive(conn, dead, later)
        assert not queue.revive(conn, done, later)
        assert not queue.revive(conn, dead, later)  # pending now
    [taken] = claim(engine, "w1", later)
    assert taken.ids == [dead]
    assert taken.attempts == 1


# -- claims at the same time (several workers on one database) ---------------------


def test_a_claim_in_progress_hides_its_connection_and_the_next_is_taken(
    engine: Engine, a: int, b: int
) -> None:
    with db.writing(engine) as conn:
        of_a = add(conn, a, at=NOW - timedelta(minutes=2))
        of_b = add(conn, b, at=NOW - timedelta(minutes=1))
    other: list[Any] = []
    with db.writing(engine) as first:
        [taken] = queue.claim(first, "w1", NOW, LEASE, 1)
        assert taken.ids == [of_a]
        # PostgreSQL: w2 looks past the connection row w1 has locked, at once.
        # SQLite: w2 waits for w1's write lock, then sees w1's lease.
        racing = threading.Thread(
            target=lambda: other.extend(claim(engine, "w2", most=1))
        )
        racing.start()
        racing.join(0.3)
    racing.join(10)
    assert not racing.is_alive()
    assert [c.ids for c in other] == [[of_b]]


def test_an_item_stored_during_a_claim_is_not_taken_by_another_claim(
    engine: Engine, databases: Databases, a: int
) -> None:
    if databases.backend != "postgresql":
        pytest.skip("PostgreSQL only: on SQLite a claim is the only writer")
    with db.writing(engine) as conn:
        old = add(conn, a, at=NOW - timedelta(minutes=1))
    other: list[Any] = []
    with db.writing(engine) as first:
        [taken] = queue.claim(first, "w1", NOW, LEASE, 5)
        assert taken.ids == [old]
        with db.writing(engine) as conn:
            # Ingest checks the foreign key (FOR KEY SHARE): the claim's lock on
            # the connection row must not hold it up (2 s would fail the test).
            conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            new = add(conn, a, at=NOW - timedelta(minutes=1))
        # w2 cannot see w1's lease yet; the connection row's lock keeps it off
        # the new item, which only w1's next action may take.
        racing = threading.Thread(target=lambda: other.extend(claim(engine, "w2")))
        racing.start()
        racing.join(0.3)
    racing.join(10)
    assert not racing.is_alive()
    assert other == []
    [later] = claim(engine, "w1", now=NOW + LEASE + timedelta(seconds=1))
    assert later.ids == [old, new]


def test_workers_claiming_at_once_take_each_item_once_and_never_share_a_connection(
    engine: Engine,
) -> None:
    count, per_connection, workers = 24, 3, 4
    now = utcnow()
    with db.writing(engine) as conn:
        owners = [
            store.insert(
                conn,
                state=store.State.ACTIVE,
                resource_id=n,
                coworker_id=None,
                user_id=f"user-{n}",
                calendar_id=f"calendar-{n}",
                name=None,
                subscription_id=f"subscription-{n}",
                subscription_expires_at=now + timedelta(days=2),
                client_state="s" * 32,
                now=now,
            ).id
            for n in range(count)
        ]
        expected = {
            add(conn, owner, at=now - timedelta(seconds=n))
            for owner in owners
            for n in range(per_connection)
        }
    held: set[int] = set()
    guard = threading.Lock()
    overlaps: list[int] = []
    claimed: list[int] = []
    start = threading.Barrier(workers + 1)
    arriving = threading.Event()
    arriving.set()

    def arrive() -> None:
        # New items while claims run: a claim must not take a connection's new
        # item while another worker, not yet committed, takes its older ones.
        start.wait()
        for n in range(60):
            with db.writing(engine) as conn:
                item = add(conn, owners[n * 7 % count], at=utcnow())
            with guard:
                expected.add(item)
            time.sleep(0.002)
        arriving.clear()

    def work(name: str) -> None:
        start.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with db.writing(engine) as conn:
                claims = queue.claim(conn, name, utcnow(), LEASE, 2)
            if not claims:
                with db.reading(engine) as conn:
                    if queue.next_due(conn) is None and not arriving.is_set():
                        return
                continue
            with guard:
                for c in claims:
                    if c.connection_id in held:
                        overlaps.append(c.connection_id)
                    held.add(c.connection_id)
                    claimed.extend(c.ids)
            time.sleep(0.005)  # acting
            with guard:
                held.difference_update(c.connection_id for c in claims)
            with db.writing(engine) as conn:
                for c in claims:
                    queue.complete(conn, name, c.ids)

    threads = [threading.Thread(target=arrive)] + [
        threading.Thread(target=work, args=(f"w{n}",)) for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert overlaps == []
    assert sorted(claimed) == sorted(expected)
    assert {row["state"] for row in rows(engine).values()} == {"done"}
