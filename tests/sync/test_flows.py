"""The worker's flows in-process: connect, notifications, lifecycle events, renewals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.nexudus import format_nexudus_datetime, parse_nexudus_datetime
from bridge.store import connections as store
from bridge.store import db
from bridge.store.connections import State
from tests.sync.conftest import Bridge


async def test_connect_creates_the_record(bridge: Bridge) -> None:
    connection = await bridge.connect(name="Room 1")
    assert connection.state is State.ACTIVE
    assert connection.nexudus_record_id is not None
    record = bridge.nexudus.records[connection.nexudus_record_id]
    assert record["SubscriptionId"] == connection.subscription_id
    assert record["Name"] == "Room 1"
    assert record["ResourceId"] == 7
    assert connection.subscription_expires_at is not None
    assert (
        parse_nexudus_datetime(record["SubscriptionExpireDate"])
        == connection.subscription_expires_at
    )


async def test_a_notification_burst_is_one_get_and_no_write(bridge: Bridge) -> None:
    connection = await bridge.connect()
    before = len(bridge.nexudus.api_calls)
    for _ in range(5):
        answer = await bridge.graph.deliver(connection.subscription_id)
        assert answer.status_code == 202
    await bridge.settled()
    calls = bridge.nexudus.api_calls[before:]
    assert [c.method for c in calls if c.method != "GET"] == []
    assert 1 <= len(calls) <= 5
    assert all(item["state"] == "done" for item in bridge.items())


async def test_subscription_removed_recreates_and_updates_the_record(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    old = connection.subscription_id
    answer = await bridge.graph.deliver_lifecycle(old, "subscriptionRemoved")
    assert answer.status_code == 202
    await bridge.settled()
    fresh = bridge.connection(connection.id)
    assert fresh.subscription_id != old
    assert fresh.client_state != connection.client_state
    assert fresh.state is State.ACTIVE
    assert connection.nexudus_record_id is not None
    record = bridge.nexudus.records[connection.nexudus_record_id]
    assert record["SubscriptionId"] == fresh.subscription_id
    with db.reading(bridge.engine) as conn:
        assert store.aliases(conn, connection.id) == [old]


async def test_no_patch_within_ten_minutes_of_a_renewal(bridge: Bridge) -> None:
    connection = await bridge.connect()  # creating counts as renewing
    await bridge.graph.deliver_lifecycle(
        connection.subscription_id, "reauthorizationRequired"
    )
    await bridge.settled()
    assert bridge.graph.calls_to("PATCH") == []
    assert [item["state"] for item in bridge.items()] == ["done"]


async def test_reauthorization_is_one_patch(bridge: Bridge) -> None:
    connection = await bridge.connect()
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with db.writing(bridge.engine) as conn:
        store.update(conn, connection.id, an_hour_ago, renewed_at=an_hour_ago)
    for _ in range(3):
        # The renewal moves the expiry, so later copies are new items, which
        # the quiet period then holds back.
        await bridge.graph.deliver_lifecycle(
            connection.subscription_id, "reauthorizationRequired"
        )
        await bridge.settled()
    assert len(bridge.graph.calls_to("PATCH")) == 1
    assert bridge.graph.calls_to("POST", "/v1.0/subscriptions/") == []


async def test_a_deleted_record_orphans_the_connection(bridge: Bridge) -> None:
    connection = await bridge.connect()
    assert connection.nexudus_record_id is not None
    del bridge.nexudus.records[connection.nexudus_record_id]
    await bridge.graph.deliver(connection.subscription_id)
    await bridge.settled()
    fresh = bridge.connection(connection.id)
    assert fresh.state is State.ORPHANED
    assert connection.subscription_id not in bridge.graph.subscriptions
    assert bridge.writes() == ["POST /api/spaces/coworkermsofficecalendars"]


async def test_a_renewal_that_falls_due_patches_then_puts(bridge: Bridge) -> None:
    connection = await bridge.connect()
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    with db.writing(bridge.engine) as conn:
        store.update(
            conn,
            connection.id,
            datetime.now(UTC),
            subscription_expires_at=soon,
            renewed_at=datetime.now(UTC) - timedelta(days=2),
        )
    # Nexudus agrees (else a PATCH within the second of the connect would give
    # back the very expiry the record already has, and rightly no PUT).
    assert connection.nexudus_record_id is not None
    record = bridge.nexudus.records[connection.nexudus_record_id]
    record["SubscriptionExpireDate"] = format_nexudus_datetime(soon)
    await bridge.until(lambda: len(bridge.graph.calls_to("PATCH")) == 1)
    await bridge.until(lambda: len(bridge.writes()) == 2)
    await bridge.settled()
    fresh = bridge.connection(connection.id)
    assert fresh.subscription_expires_at is not None
    assert fresh.subscription_expires_at > soon + timedelta(hours=24)
    assert bridge.writes()[-1] == "PUT /api/spaces/coworkermsofficecalendars"
