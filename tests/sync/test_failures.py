"""The worker when upstreams fail: retries, waits, dead letters, crash recovery.

Tests that look at backoff schedule retries minutes ahead (`SLOW_RETRIES`) and move
the worker's clock forward instead of waiting, so every retry is observed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from bridge.nexudus import parse_nexudus_datetime
from bridge.store.connections import Connection, State
from bridge.store.queue import Claim
from bridge.sync.worker import Worker
from tests.fakes.nexudus import CALENDARS
from tests.sync.conftest import (
    USER,
    Bridge,
    aliases,
    items_of,
    only_item,
    running_bridge,
    set_connection,
    stored_expiry,
    waiting_after,
)

# Retries minutes apart: nothing is retried until the test moves the clock.
SLOW_RETRIES: dict[str, Any] = {
    "BRIDGE_RETRY_BASE_SECONDS": 30,
    "BRIDGE_RETRY_MAX_SECONDS": 600,
}
# Backoff draws each delay from [0.75, 1.25] times its exponential step.
LOW, HIGH = 0.75, 1.25


def record_path(connection: Connection) -> str:
    assert connection.nexudus_record_id is not None
    return f"{CALENDARS}/{connection.nexudus_record_id}"


def with_calendars(bridge: Bridge, count: int) -> list[str]:
    """Give the test user `count` more calendars (before any connect)."""
    ids = [f"AAMkAD-room-{n}" for n in range(count)]
    bridge.graph.add_mailbox(USER, *((cid, f"Room {n}") for n, cid in enumerate(ids)))
    return ids


# -- Nexudus failing ----------------------------------------------------------------


async def test_an_outage_is_retried_with_backoff_until_it_converges(
    database_url: str,
) -> None:
    async with running_bridge(database_url, **SLOW_RETRIES) as bridge:
        connection = await bridge.connect()
        path = record_path(connection)
        bridge.nexudus.fail_next(3, 503, path=CALENDARS)
        before = bridge.clock()
        await bridge.graph.deliver(connection.subscription_id)
        for attempt in (1, 2, 3):
            await bridge.until(waiting_after(bridge, connection, attempt))
            after = bridge.clock()
            item = only_item(bridge, connection)
            step = timedelta(seconds=30 * 2 ** (attempt - 1))
            assert before + LOW * step <= item["next_attempt_at"] <= after + HIGH * step
            assert "HTTP 503" in item["last_error"]
            failing = bridge.connection(connection.id)
            assert failing.last_error == item["last_error"]
            bridge.clock.advance((HIGH * step).total_seconds() + 1)
            before = bridge.clock()
        await bridge.settled()

        item = only_item(bridge, connection)
        assert (item["state"], item["attempts"], item["last_error"]) == (
            "done",
            4,
            None,
        )
        healed = bridge.connection(connection.id)
        assert (healed.state, healed.last_error) == (State.ACTIVE, None)
        statuses = [call.status for call in bridge.nexudus.calls_to("GET", path)]
        assert statuses == [503, 503, 503, 200]
        assert bridge.writes() == [f"POST {CALENDARS}"]


@pytest.mark.parametrize("status", [409, 429])
async def test_a_throttle_is_retried_no_sooner_than_retry_after(
    database_url: str, status: int
) -> None:
    async with running_bridge(database_url) as bridge:
        [room] = with_calendars(bridge, 1)
        throttled = await bridge.connect(resource_id=7)
        other = await bridge.connect(resource_id=8, calendar_id=room)
        path = record_path(throttled)
        bridge.nexudus.throttle_next(1, retry_after=30, status=status, path=path)
        before = bridge.clock()
        await bridge.graph.deliver(throttled.subscription_id)
        await bridge.until(waiting_after(bridge, throttled, 1))
        after = bridge.clock()
        item = only_item(bridge, throttled)
        assert f"throttled (HTTP {status})" in item["last_error"]
        wait = timedelta(seconds=30)
        assert before + wait <= item["next_attempt_at"] <= after + wait

        # 25 s on, other work goes through while the throttled item still waits.
        bridge.clock.advance(25)
        await bridge.graph.deliver(other.subscription_id)
        await bridge.until(lambda: only_item(bridge, other)["state"] == "done")
        assert only_item(bridge, throttled)["attempts"] == 1

        bridge.clock.advance(6)
        await bridge.settled()
        item = only_item(bridge, throttled)
        assert (item["state"], item["attempts"]) == ("done", 2)
        first, second = bridge.nexudus.calls_to("GET", path)
        assert (first.status, second.status) == (status, 200)
        # Nexudus's own clock: the second call came at least Retry-After later.
        assert second.at - first.at >= 30


async def test_a_short_throttle_is_waited_out_within_the_action(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    path = record_path(connection)
    bridge.nexudus.throttle_next(1, retry_after=1.5, path=path)
    await bridge.graph.deliver(connection.subscription_id)
    await bridge.settled()
    item = only_item(bridge, connection)
    assert (item["state"], item["attempts"], item["last_error"]) == ("done", 1, None)
    first, second = bridge.nexudus.calls_to("GET", path)
    assert (first.status, second.status) == (409, 200)
    assert second.at - first.at >= 1.5


async def test_a_refused_put_is_dead_at_once(bridge: Bridge) -> None:
    connection = await bridge.connect()
    assert connection.nexudus_record_id is not None
    record = bridge.nexudus.records[connection.nexudus_record_id]
    record["Name"] = "Renamed in Nexudus"
    bridge.nexudus.fail_next(1, 400, method="PUT", path=CALENDARS)
    await bridge.graph.deliver(connection.subscription_id)
    await bridge.settled()

    item = only_item(bridge, connection)
    reason = "Nexudus refused the record: Name: is not valid"
    assert (item["state"], item["attempts"], item["last_error"]) == ("dead", 1, reason)
    assert bridge.connection(connection.id).last_error == reason
    assert [call.status for call in bridge.nexudus.calls_to("PUT")] == [400]
    assert record["Name"] == "Renamed in Nexudus"


async def test_a_refused_create_is_dead_at_once(bridge: Bridge) -> None:
    # Connecting finds Nexudus down and leaves the record to the worker, whose
    # create is then refused.
    bridge.nexudus.fail_next(1, 503, method="POST", path=CALENDARS)
    bridge.nexudus.fail_next(1, 400, method="POST", path=CALENDARS)
    connection = await bridge.connect()
    assert connection.state is State.PENDING
    await bridge.settled()

    item = only_item(bridge, connection)
    assert (item["kind"], item["state"], item["attempts"]) == ("reconcile", "dead", 1)
    assert "Name: is not valid" in item["last_error"]
    fresh = bridge.connection(connection.id)
    assert fresh.nexudus_record_id is None
    assert fresh.last_error is not None
    assert "Name: is not valid" in fresh.last_error
    assert [call.status for call in bridge.nexudus.calls_to("POST", CALENDARS)] == [
        503,
        400,
    ]
    assert bridge.nexudus.records == {}


async def test_out_of_attempts_is_dead(database_url: str) -> None:
    async with running_bridge(database_url, BRIDGE_MAX_ATTEMPTS=3) as bridge:
        connection = await bridge.connect()
        bridge.nexudus.fail_next(100, 503, path=CALENDARS)
        await bridge.graph.deliver(connection.subscription_id)
        await bridge.settled()

        item = only_item(bridge, connection)
        assert (item["state"], item["attempts"]) == ("dead", 3)
        assert item["last_error"].startswith("out of attempts (3): Nexudus ")
        assert "HTTP 503" in item["last_error"]
        assert len(bridge.nexudus.calls_to("GET", record_path(connection))) == 3
        last_error = bridge.connection(connection.id).last_error
        assert last_error is not None
        assert "HTTP 503" in last_error


# -- Nexudus not configured or refusing us ------------------------------------------


async def test_missing_configuration_waits_without_using_attempts(
    database_url: str,
) -> None:
    # One attempt only: a wait that counted as a try would kill the item at once.
    async with running_bridge(
        database_url, NEXUDUS_USERNAME=None, BRIDGE_MAX_ATTEMPTS=1
    ) as bridge:
        assert bridge.upstreams.nexudus_client is None
        connection = await bridge.connect()
        assert connection.state is State.PENDING
        assert connection.nexudus_record_id is None

        def waited(since: datetime | None) -> Callable[[], bool]:
            def check() -> bool:
                item = only_item(bridge, connection)
                return (
                    item["state"] == "pending"
                    and item["last_error"] is not None
                    and (since is None or item["next_attempt_at"] > since)
                )

            return check

        await bridge.until(waited(None))
        for _ in range(3):
            item = only_item(bridge, connection)
            assert item["attempts"] == 0
            assert item["last_error"] == (
                "waiting for configuration: NEXUDUS_USERNAME not set"
            )
            assert item["next_attempt_at"] > bridge.clock() + timedelta(seconds=30)
            bridge.clock.advance(61)
            await bridge.until(waited(item["next_attempt_at"]))

        fresh = bridge.connection(connection.id)
        assert fresh.state is State.PENDING
        assert fresh.last_error is not None
        assert "NEXUDUS_USERNAME" in fresh.last_error
        assert "NEXUDUS_PASSWORD" not in fresh.last_error
        assert bridge.nexudus.calls == []


async def test_refused_credentials_wait_without_using_attempts(
    database_url: str,
) -> None:
    async with running_bridge(
        database_url, NEXUDUS_PASSWORD="not the password", BRIDGE_MAX_ATTEMPTS=1
    ) as bridge:
        connection = await bridge.connect()
        assert connection.state is State.PENDING
        await bridge.until(
            lambda: only_item(bridge, connection)["last_error"] is not None
        )
        item = only_item(bridge, connection)
        assert (item["state"], item["attempts"]) == ("pending", 0)
        assert item["last_error"].startswith("Nexudus login refused")
        assert item["next_attempt_at"] > bridge.clock() + timedelta(seconds=30)
        assert bridge.nexudus.records == {}


# -- a record created, its id lost ---------------------------------------------------


async def test_a_record_whose_id_was_lost_is_found_not_duplicated(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    record_id = connection.nexudus_record_id
    assert record_id is not None
    # As if the process died between Nexudus's answer and storing the id.
    set_connection(bridge, connection, nexudus_record_id=None)
    await bridge.graph.deliver(connection.subscription_id)
    await bridge.settled()

    fresh = bridge.connection(connection.id)
    assert (fresh.nexudus_record_id, fresh.state) == (record_id, State.ACTIVE)
    assert list(bridge.nexudus.records) == [record_id]
    assert bridge.writes() == [f"POST {CALENDARS}"]
    assert only_item(bridge, connection)["state"] == "done"


async def test_a_create_whose_answer_was_lost_is_found_not_duplicated(
    bridge: Bridge,
) -> None:
    assert bridge.nexudus_wire is not None
    bridge.nexudus_wire.lose_next(1, method="POST", path=CALENDARS)
    connection = await bridge.connect()
    assert bridge.nexudus_wire.lost == [f"POST {CALENDARS}"]
    assert connection.state is State.PENDING
    assert connection.nexudus_record_id is None
    [record_id] = bridge.nexudus.records
    await bridge.settled()

    fresh = bridge.connection(connection.id)
    assert (fresh.nexudus_record_id, fresh.state) == (record_id, State.ACTIVE)
    assert fresh.last_error is None
    assert list(bridge.nexudus.records) == [record_id]
    assert bridge.writes() == [f"POST {CALENDARS}"]


async def test_the_workers_own_lost_create_is_found_on_the_retry(
    bridge: Bridge,
) -> None:
    assert bridge.nexudus_wire is not None
    bridge.nexudus.fail_next(1, 503, method="POST", path=CALENDARS)
    bridge.nexudus_wire.lose_next(1, method="POST", path=CALENDARS)
    connection = await bridge.connect()
    assert connection.state is State.PENDING
    await bridge.settled()

    item = only_item(bridge, connection)
    assert (item["state"], item["attempts"]) == ("done", 2)
    [record_id] = bridge.nexudus.records
    assert bridge.connection(connection.id).nexudus_record_id == record_id
    statuses = [call.status for call in bridge.nexudus.calls_to("POST", CALENDARS)]
    assert statuses == [503, 200]


async def test_a_lost_record_id_is_found_by_a_former_subscription_id(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    old = connection.subscription_id
    record_id = connection.nexudus_record_id
    assert record_id is not None
    set_connection(bridge, connection, nexudus_record_id=None)
    await bridge.graph.deliver_lifecycle(old, "subscriptionRemoved")
    await bridge.settled()

    fresh = bridge.connection(connection.id)
    assert fresh.subscription_id != old
    assert fresh.nexudus_record_id == record_id
    assert list(bridge.nexudus.records) == [record_id]
    assert bridge.nexudus.records[record_id]["SubscriptionId"] == fresh.subscription_id
    assert bridge.writes() == [f"POST {CALENDARS}", f"PUT {CALENDARS}"]


# -- Graph refusing or forgetting the subscription ----------------------------------


async def test_a_renewal_of_a_lost_subscription_recreates_it(bridge: Bridge) -> None:
    connection = await bridge.connect()
    old = connection.subscription_id
    soon = bridge.clock().replace(microsecond=0) + timedelta(hours=2)
    set_connection(
        bridge,
        connection,
        subscription_expires_at=soon,
        renewed_at=datetime.now(UTC) - timedelta(days=2),
    )
    del bridge.graph.subscriptions[old]  # Graph removed it without telling us
    await bridge.until(lambda: len(items_of(bridge, connection)) == 1)
    bridge.clock.advance(2)  # past the scheduler's spread
    await bridge.settled()

    assert [call.status for call in bridge.graph.calls_to("PATCH")] == [404]
    fresh = bridge.connection(connection.id)
    assert fresh.subscription_id != old
    assert fresh.subscription_id in bridge.graph.subscriptions
    assert fresh.client_state != connection.client_state
    assert aliases(bridge, connection) == [old]
    assert (fresh.state, fresh.last_error) == (State.ACTIVE, None)
    assert stored_expiry(fresh) > soon + timedelta(days=1)
    assert connection.nexudus_record_id is not None
    record = bridge.nexudus.records[connection.nexudus_record_id]
    assert record["SubscriptionId"] == fresh.subscription_id
    assert parse_nexudus_datetime(record["SubscriptionExpireDate"]) == stored_expiry(
        fresh
    )
    assert bridge.writes()[1:] == [f"PUT {CALENDARS}"]
    assert only_item(bridge, connection)["state"] == "done"


async def test_revoked_consent_is_unauthorized_and_retried_until_granted(
    database_url: str,
) -> None:
    async with running_bridge(database_url, **SLOW_RETRIES) as bridge:
        connection = await bridge.connect()
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        set_connection(bridge, connection, renewed_at=an_hour_ago)
        bridge.graph.revoke_consent()
        await bridge.graph.deliver_lifecycle(
            connection.subscription_id, "reauthorizationRequired"
        )
        await bridge.until(waiting_after(bridge, connection, 1))

        refused = bridge.connection(connection.id)
        assert refused.state is State.UNAUTHORIZED
        assert refused.last_error is not None
        assert "403" in refused.last_error
        item = only_item(bridge, connection)
        assert item["next_attempt_at"] > bridge.clock() + LOW * timedelta(seconds=30)
        assert [call.status for call in bridge.graph.calls_to("PATCH")] == [403]
        assert bridge.writes() == [f"POST {CALENDARS}"]

        bridge.graph.consent_revoked = False
        bridge.clock.advance(HIGH * 30 + 1)
        await bridge.settled()
        item = only_item(bridge, connection)
        assert (item["state"], item["attempts"]) == ("done", 2)
        granted = bridge.connection(connection.id)
        assert (granted.state, granted.last_error) == (State.ACTIVE, None)
        assert [call.status for call in bridge.graph.calls_to("PATCH")] == [403, 200]
        assert stored_expiry(granted) > stored_expiry(connection)
        assert bridge.writes() == [f"POST {CALENDARS}", f"PUT {CALENDARS}"]


async def test_an_expired_subscription_is_recreated_not_patched(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    old = connection.subscription_id
    # The bridge was down past the expiry, and Graph dropped the subscription.
    an_hour_ago = bridge.clock().replace(microsecond=0) - timedelta(hours=1)
    set_connection(
        bridge,
        connection,
        subscription_expires_at=an_hour_ago,
        renewed_at=an_hour_ago - timedelta(days=3),
    )
    del bridge.graph.subscriptions[old]
    await bridge.until(lambda: len(items_of(bridge, connection)) == 1)
    await bridge.settled()

    assert only_item(bridge, connection)["kind"] == "renewal"
    assert bridge.graph.calls_to("PATCH") == []
    fresh = bridge.connection(connection.id)
    assert fresh.subscription_id != old
    assert list(bridge.graph.subscriptions) == [fresh.subscription_id]
    assert aliases(bridge, connection) == [old]
    assert stored_expiry(fresh) > datetime.now(UTC) + timedelta(days=2)
    assert connection.nexudus_record_id is not None
    record = bridge.nexudus.records[connection.nexudus_record_id]
    assert record["SubscriptionId"] == fresh.subscription_id
    assert only_item(bridge, connection)["state"] == "done"


async def test_a_renewal_due_within_the_quiet_period_is_not_lost(
    database_url: str,
) -> None:
    # Valid settings: renewals fall due 5 minutes after a subscription is made.
    async with running_bridge(
        database_url,
        BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES=60,
        BRIDGE_RENEW_BEFORE_MINUTES=55,
    ) as bridge:
        connection = await bridge.connect()
        bridge.clock.advance(6 * 60)  # due, but within 10 minutes of the create
        await bridge.until(lambda: len(items_of(bridge, connection)) == 1)
        bridge.clock.advance(1)  # past the scheduler's spread
        await bridge.settled()
        bridge.clock.advance(5 * 60)  # the quiet period is over; 49 minutes left
        await bridge.until(lambda: len(bridge.graph.calls_to("PATCH")) >= 1, 1.0)


# -- two workers ---------------------------------------------------------------------


ROUNDS = 4
ACTION_SECONDS = 0.1


def states(bridge: Bridge) -> set[str]:
    return {item["state"] for item in bridge.items()}


@dataclass(frozen=True)
class Acted:
    worker: str
    connection_id: int
    item_ids: tuple[int, ...]
    started: float
    ended: float


def watch(worker: Worker, log: list[Acted], monkeypatch: pytest.MonkeyPatch) -> None:
    """Record each action of `worker`. Each lasts longer than it would (twice the
    poll interval), so that two actions on one connection, if they could happen,
    would overlap, and so that the other worker polls while this one is busy."""
    actions = worker._runner.actions
    run = actions.run

    async def watched(claim: Claim) -> None:
        started = time.monotonic()
        await asyncio.sleep(ACTION_SECONDS)
        await run(claim)
        log.append(
            Acted(
                worker.id,
                claim.connection_id,
                tuple(claim.ids),
                started,
                time.monotonic(),
            )
        )

    monkeypatch.setattr(actions, "run", watched)


async def test_two_workers_never_act_on_one_connection_at_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer connections than the two workers have slots, so a worker always has
    # room to take a connection that the other one is acting on, if it could.
    async with running_bridge(database_url, BRIDGE_WORKER_CONCURRENCY=4) as bridge:
        rooms = with_calendars(bridge, 6)
        connections = [
            await bridge.connect(resource_id=100 + n, calendar_id=room)
            for n, room in enumerate(rooms)
        ]
        log: list[Acted] = []
        async with bridge.another_worker() as second:
            watch(bridge.worker, log, monkeypatch)
            watch(second, log, monkeypatch)
            for _ in range(ROUNDS):
                await asyncio.gather(
                    *(bridge.graph.deliver(c.subscription_id) for c in connections)
                )
                # The next round arrives while actions on this one are under way.
                await bridge.until(lambda: "processing" in states(bridge))
            await bridge.settled()

        items = bridge.items()
        assert len(items) == ROUNDS * len(connections)
        assert states(bridge) == {"done"}
        assert {acted.worker for acted in log} == {bridge.worker.id, second.id}
        # Every item was acted on exactly once, by one action of its connection.
        acted_on = sorted(i for acted in log for i in acted.item_ids)
        assert acted_on == sorted(item["id"] for item in items)
        for connection in connections:
            mine = sorted(
                (a for a in log if a.connection_id == connection.id),
                key=lambda a: a.started,
            )
            assert 1 <= len(mine) <= ROUNDS
            for earlier, later in pairwise(mine):
                assert earlier.ended <= later.started, (connection.id, earlier, later)
            # One reconcile (one GET of the record) per action, nothing more.
            gets = bridge.nexudus.calls_to("GET", record_path(connection))
            assert len(gets) == len(mine)
        assert bridge.writes() == [f"POST {CALENDARS}"] * len(connections)
