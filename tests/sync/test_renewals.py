"""The renewal scheduler: one renewal item per subscription falling due, spread out."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from bridge.store import connections as store
from bridge.store import db
from bridge.store.schema import connections, inbox
from bridge.sync import renewals
from bridge.sync.renewals import MAX_SPREAD, PER_RENEWAL
from tests.seeds import SUBSCRIPTION_A, SUBSCRIPTION_B, stored_items

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RENEW_BEFORE = timedelta(days=1)


def expire(engine: Engine, subscription_id: str, at: datetime) -> int:
    """Give a seeded connection an expiry; returns its id."""
    with db.writing(engine) as conn:
        connection_id: int = conn.execute(
            update(connections)
            .where(connections.c.subscription_id == subscription_id)
            .values(subscription_expires_at=at)
            .returning(connections.c.id)
        ).scalar_one()
    return connection_id


def add_connections(engine: Engine, count: int, expires_at: datetime) -> None:
    with db.writing(engine) as conn:
        conn.execute(
            connections.insert(),
            [
                {
                    "state": "active",
                    "resource_id": 1000 + n,
                    "user_id": f"user-{n}",
                    "calendar_id": "calendar",
                    "subscription_id": f"bulk-{n}",
                    "subscription_expires_at": expires_at + timedelta(seconds=n),
                    "client_state": "c" * 40,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(count)
            ],
        )


def schedule(engine: Engine, now: datetime = NOW, seed: int = 0) -> int:
    with db.writing(engine) as conn:
        return renewals.schedule(conn, now, RENEW_BEFORE, random.Random(seed))


def settle_all(engine: Engine, state: str) -> None:
    with db.writing(engine) as conn:
        conn.execute(update(inbox).values(state=state, next_attempt_at=None))


def test_one_renewal_per_connection_falling_due(engine: Engine) -> None:
    a = expire(engine, SUBSCRIPTION_A, NOW + timedelta(hours=1))
    b = expire(engine, SUBSCRIPTION_B, NOW + timedelta(hours=2))
    add_connections(engine, 1, NOW + RENEW_BEFORE + timedelta(minutes=1))  # not yet

    assert schedule(engine) == 2

    items = stored_items(engine)
    assert sorted((i["connection_id"], i["subscription_id"]) for i in items) == [
        (a, SUBSCRIPTION_A),
        (b, SUBSCRIPTION_B),
    ]
    for item in items:
        assert item["kind"] == "renewal"
        assert item["state"] == "pending"
        assert item["attempts"] == 0
        assert item["received_at"] == NOW
        # Two renewals are spread over two seconds, not all of MAX_SPREAD.
        assert NOW <= item["next_attempt_at"] <= NOW + 2 * PER_RENEWAL
        assert json.loads(item["raw"])["expired"] is False


def test_disconnected_and_orphaned_connections_are_not_renewed(
    engine: Engine,
) -> None:
    for subscription_id, state in (
        (SUBSCRIPTION_A, "disconnected"),
        (SUBSCRIPTION_B, "orphaned"),
    ):
        connection_id = expire(engine, subscription_id, NOW + timedelta(hours=1))
        with db.writing(engine) as conn:
            store.update(conn, connection_id, NOW, state=state)
    assert schedule(engine) == 0
    assert stored_items(engine) == []


def times(engine: Engine) -> list[datetime]:
    return sorted(item["next_attempt_at"] for item in stored_items(engine))


def test_many_renewals_are_spread_within_max_spread(engine: Engine) -> None:
    count = 700  # more than MAX_SPREAD holds at one per second
    assert PER_RENEWAL * count > MAX_SPREAD
    add_connections(engine, count, NOW + timedelta(hours=3))

    assert schedule(engine) == count

    at = times(engine)
    assert at[0] >= NOW
    assert at[-1] <= NOW + MAX_SPREAD
    # Actually spread: not a burst at one moment.
    assert at[-1] - at[0] > MAX_SPREAD / 2
    assert len(set(at)) > count * 0.9


def test_the_spread_is_deterministic_with_a_seeded_random(engine: Engine) -> None:
    add_connections(engine, 20, NOW + timedelta(hours=3))

    def drawn(seed: int) -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            transaction = conn.begin()
            renewals.schedule(conn, NOW, RENEW_BEFORE, random.Random(seed))
            rows = conn.execute(
                select(inbox.c.connection_id, inbox.c.next_attempt_at).order_by(
                    inbox.c.connection_id
                )
            )
            result = [tuple(row) for row in rows]
            transaction.rollback()
        return result

    assert len(drawn(42)) == 20
    assert drawn(42) == drawn(42)
    assert drawn(42) != drawn(43)


def test_an_expired_subscription_is_scheduled_at_once(engine: Engine) -> None:
    expired_at = NOW - timedelta(hours=1)
    a = expire(engine, SUBSCRIPTION_A, expired_at)
    add_connections(engine, 50, NOW + timedelta(hours=1))

    assert schedule(engine) == 51

    [item] = [i for i in stored_items(engine) if i["connection_id"] == a]
    assert item["next_attempt_at"] == NOW
    assert json.loads(item["raw"]) == {
        "kind": "renewal",
        "connectionId": a,
        "expiresAt": expired_at.isoformat(),
        "expired": True,
    }


def test_expiry_passing_after_a_renewal_is_a_new_item(engine: Engine) -> None:
    """A renewal that did not help (dead, or done without renewing) is not repeated
    for the same expiry; once that expiry passes, the recreation is a new item."""
    expires_at = NOW + timedelta(hours=1)
    expire(engine, SUBSCRIPTION_A, expires_at)
    assert schedule(engine) == 1
    settle_all(engine, "dead")
    assert schedule(engine, NOW + timedelta(minutes=30)) == 0

    later = expires_at + timedelta(seconds=1)
    assert schedule(engine, later) == 1

    first, second = stored_items(engine)
    assert first["dedupe_key"] != second["dedupe_key"]
    assert json.loads(second["raw"])["expired"] is True
    assert second["next_attempt_at"] == later


def test_scheduling_is_idempotent_across_runs(engine: Engine) -> None:
    expire(engine, SUBSCRIPTION_A, NOW + timedelta(hours=1))
    expire(engine, SUBSCRIPTION_B, NOW + timedelta(hours=2))
    assert schedule(engine, seed=1) == 2
    before = stored_items(engine)

    # While the renewals wait, and after they ran with nothing changed.
    assert schedule(engine, NOW + timedelta(seconds=1), seed=2) == 0
    assert stored_items(engine) == before
    settle_all(engine, "done")
    assert schedule(engine, NOW + timedelta(minutes=1), seed=3) == 0
    assert len(stored_items(engine)) == 2


def test_a_renewed_subscription_is_scheduled_again_for_its_new_expiry(
    engine: Engine,
) -> None:
    expire(engine, SUBSCRIPTION_A, NOW + timedelta(hours=1))
    assert schedule(engine) == 1
    settle_all(engine, "done")
    renewed_until = NOW + timedelta(days=2)
    with db.writing(engine) as conn:
        assert store.advance_expiry(conn, SUBSCRIPTION_A, renewed_until, NOW)

    assert schedule(engine) == 0  # not due
    assert schedule(engine, renewed_until - timedelta(hours=2)) == 1
    assert len(stored_items(engine)) == 2
