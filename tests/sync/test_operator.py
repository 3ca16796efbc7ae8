"""Renew now and disconnect, over the admin API, with the embedded worker running.

An operator's action takes its turn on the connection while the caller waits; what
fails is left to the worker's retries, and never overlaps the worker's own turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bridge.store.connections import Connection, State
from bridge.sync.operator import Operator
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

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLOW_RETRIES: dict[str, Any] = {
    "BRIDGE_ADMIN_TOKEN": TOKEN,
    "BRIDGE_RETRY_BASE_SECONDS": 30,
    "BRIDGE_RETRY_MAX_SECONDS": 600,
}


@pytest.fixture
async def bridge(database_url: str) -> AsyncIterator[Bridge]:
    async with running_bridge(database_url, **SLOW_RETRIES) as running:
        yield running


async def disconnect(bridge: Bridge, connection_id: int) -> httpx.Response:
    return await bridge.web.delete(f"/admin/connections/{connection_id}", headers=AUTH)


async def renew(bridge: Bridge, connection_id: int) -> httpx.Response:
    return await bridge.web.post(
        f"/admin/connections/{connection_id}/renew", headers=AUTH
    )


def record_id(connection: Connection) -> int:
    assert connection.nexudus_record_id is not None
    return connection.nexudus_record_id


# -- disconnect ------------------------------------------------------------------------


async def test_disconnect_deletes_the_subscription_and_the_record(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    record = record_id(connection)

    answer = await disconnect(bridge, connection.id)

    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert (shown["state"], shown["nexudus_record_id"]) == ("disconnected", None)
    assert shown["last_error"] is None
    assert connection.subscription_id not in bridge.graph.subscriptions
    assert record not in bridge.nexudus.records
    assert bridge.writes() == [f"POST {CALENDARS}", f"DELETE {CALENDARS}/{record}"]
    [item] = items_of(bridge, connection)
    assert (item["kind"], item["state"]) == ("disconnect", "done")


async def test_a_disconnected_calendar_is_not_acted_on(bridge: Bridge) -> None:
    connection = await bridge.connect()
    assert (await disconnect(bridge, connection.id)).status_code == 200

    # A notification Graph had already sent when the subscription was deleted.
    answer = await bridge.web.post(
        "/graph/notifications",
        json={
            "value": [
                {
                    "subscriptionId": connection.subscription_id,
                    "clientState": connection.client_state,
                    "changeType": "updated",
                    "resource": f"users/{USER}/events/AAMk1",
                    "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                    "tenantId": "tenant",
                }
            ]
        },
    )

    assert answer.status_code == 202
    kinds = {i["kind"]: i["state"] for i in items_of(bridge, connection)}
    assert kinds == {"disconnect": "done", "change": "ignored"}
    assert bridge.writes()[-1].startswith("DELETE")


async def test_a_failed_delete_is_retried_until_done_and_shown_meanwhile(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    record = record_id(connection)
    bridge.nexudus.fail_next(2, 503, method="DELETE")

    answer = await disconnect(bridge, connection.id)

    assert answer.status_code == 200
    shown = answer.json()
    assert shown["state"] == "disconnected"
    assert "503" in shown["last_error"]
    assert connection.subscription_id not in bridge.graph.subscriptions
    assert record in bridge.nexudus.records
    item = only_item(bridge, connection)
    assert (item["state"], item["attempts"]) == ("pending", 1)

    bridge.clock.advance(3600)
    await bridge.until(waiting_after(bridge, connection, 2))
    bridge.clock.advance(3600)
    await bridge.settled()
    assert only_item(bridge, connection)["state"] == "done"
    assert record not in bridge.nexudus.records
    gone = bridge.connection(connection.id)
    assert (gone.state, gone.nexudus_record_id, gone.last_error) == (
        State.DISCONNECTED,
        None,
        None,
    )


async def test_disconnect_is_idempotent(bridge: Bridge) -> None:
    connection = await bridge.connect()
    first = await disconnect(bridge, connection.id)
    second = await disconnect(bridge, connection.id)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["state"] == "disconnected"
    deletes = [w for w in bridge.writes() if w.startswith("DELETE")]
    assert len(deletes) == 1  # the second found no record to delete
    assert [i["state"] for i in items_of(bridge, connection)] == ["done", "done"]


async def test_disconnect_finds_a_record_whose_id_was_lost(bridge: Bridge) -> None:
    connection = await bridge.connect()
    record = record_id(connection)
    set_connection(bridge, connection, nexudus_record_id=None)

    assert (await disconnect(bridge, connection.id)).status_code == 200
    assert record not in bridge.nexudus.records


async def test_disconnect_without_consent_still_deletes_the_record(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    bridge.graph.revoke_consent()

    answer = await disconnect(bridge, connection.id)

    assert answer.status_code == 200
    assert answer.json()["last_error"] is None
    assert record_id(connection) not in bridge.nexudus.records
    # Graph would not let us: the subscription lapses by itself.
    assert connection.subscription_id in bridge.graph.subscriptions


async def test_disconnecting_an_unknown_connection_is_404(bridge: Bridge) -> None:
    answer = await disconnect(bridge, 999)
    assert answer.status_code == 404
    assert answer.json()["error"] == "no connection 999"


async def test_a_calendar_can_be_connected_again_after_a_disconnect(
    bridge: Bridge,
) -> None:
    first = await bridge.connect()
    await disconnect(bridge, first.id)
    again = await bridge.connect()
    assert again.id != first.id
    assert again.state is State.ACTIVE


# -- renew now -----------------------------------------------------------------------


async def test_renew_patches_the_subscription_and_updates_the_record(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    record = record_id(connection)
    # As if connected a day ago: the stored expiry and the record's, a day earlier.
    earlier = stored_expiry(connection) - timedelta(days=1)
    set_connection(bridge, connection, subscription_expires_at=earlier)
    bridge.nexudus.records[record]["SubscriptionExpireDate"] = (
        f"{earlier:%Y-%m-%dT%H:%M:%SZ}"
    )
    stale = bridge.connection(connection.id)

    answer = await renew(bridge, connection.id)

    assert answer.status_code == 200, answer.text
    renewed = bridge.connection(connection.id)
    assert answer.json() == renewed.to_json()
    assert [call.status for call in bridge.graph.calls_to("PATCH")] == [200]
    assert stored_expiry(renewed) > stored_expiry(stale)
    assert renewed.renewed_at is not None
    assert bridge.writes() == [f"POST {CALENDARS}", f"PUT {CALENDARS}"]
    written = bridge.nexudus.records[record]["SubscriptionExpireDate"]
    assert written.startswith(stored_expiry(renewed).strftime("%Y-%m-%dT%H:%M:%S"))
    [item] = items_of(bridge, connection)
    assert (item["kind"], item["state"]) == ("renew_now", "done")


async def test_renew_recreates_a_subscription_graph_lost(bridge: Bridge) -> None:
    connection = await bridge.connect()
    del bridge.graph.subscriptions[connection.subscription_id]

    answer = await renew(bridge, connection.id)

    assert answer.status_code == 200
    fresh = bridge.connection(connection.id)
    assert answer.json()["subscription_id"] == fresh.subscription_id
    assert fresh.subscription_id != connection.subscription_id
    assert fresh.subscription_id in bridge.graph.subscriptions
    assert aliases(bridge, connection) == [connection.subscription_id]
    record = bridge.nexudus.records[record_id(connection)]
    assert record["SubscriptionId"] == fresh.subscription_id


async def test_a_failed_renewal_is_502_and_left_to_the_worker(bridge: Bridge) -> None:
    connection = await bridge.connect()
    bridge.graph.fail_next(503, method="PATCH")

    answer = await renew(bridge, connection.id)

    assert answer.status_code == 502
    problem = answer.json()
    assert problem["error"].startswith("renewal failed: Graph:")
    assert problem["detail"]["result"] == "retry"
    assert problem["detail"]["connection"]["id"] == connection.id
    assert only_item(bridge, connection)["state"] == "pending"

    bridge.clock.advance(60)  # past the first retry's backoff (30 s, +25 % at most)
    await bridge.settled()
    assert [call.status for call in bridge.graph.calls_to("PATCH")] == [503, 200]
    assert bridge.connection(connection.id).renewed_at is not None


async def test_renewing_without_consent_marks_the_connection_unauthorized(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    bridge.graph.revoke_consent()

    answer = await renew(bridge, connection.id)

    assert answer.status_code == 502
    assert answer.json()["detail"]["connection"]["state"] == "unauthorized"


@pytest.mark.parametrize(
    ("prepare", "status", "says"),
    [
        ("none", 404, "no connection 999"),
        ("disconnected", 409, "is disconnected: connect the calendar again"),
        ("orphaned", 409, "is orphaned: connect the calendar again"),
    ],
)
async def test_renew_refuses_what_cannot_be_renewed(
    bridge: Bridge, prepare: str, status: int, says: str
) -> None:
    connection_id = 999
    if prepare != "none":
        connection = await bridge.connect()
        set_connection(bridge, connection, state=State(prepare))
        connection_id = connection.id
    answer = await renew(bridge, connection_id)
    assert answer.status_code == status
    assert says in answer.json()["error"]
    assert not bridge.graph.calls_to("PATCH")


# -- never alongside the worker ----------------------------------------------------


async def test_a_renewal_waits_for_the_worker_then_takes_its_turn(
    bridge: Bridge,
) -> None:
    connection = await bridge.connect()
    # The worker's reconcile hangs (holding the connection) for half a second.
    bridge.nexudus.hang_next(1, seconds=0.5, method="GET")
    await bridge.graph.deliver(connection.subscription_id)
    await bridge.until(lambda: only_item(bridge, connection)["state"] == "processing")

    outcome = await Operator(
        bridge.engine, bridge.settings, bridge.upstreams, clock=bridge.clock
    ).renew(connection.id)

    assert outcome.result == "done"
    assert [call.status for call in bridge.graph.calls_to("PATCH")] == [200]
    assert {i["state"] for i in items_of(bridge, connection)} == {"done"}


async def test_a_renewal_is_queued_when_the_worker_stays_busy(bridge: Bridge) -> None:
    connection = await bridge.connect()
    bridge.nexudus.hang_next(1, seconds=30, method="GET")
    await bridge.graph.deliver(connection.subscription_id)
    await bridge.until(lambda: only_item(bridge, connection)["state"] == "processing")

    outcome = await Operator(
        bridge.engine,
        bridge.settings,
        bridge.upstreams,
        clock=bridge.clock,
        busy_wait_seconds=0.3,
    ).renew(connection.id)

    assert outcome.result == "queued"
    assert not bridge.graph.calls_to("PATCH")
    bridge.nexudus.release_hangs()
    await bridge.settled()
    assert [call.status for call in bridge.graph.calls_to("PATCH")] == [200]


# -- connect ---------------------------------------------------------------------------


async def test_two_connects_at_once_make_one_connection(bridge: Bridge) -> None:
    # Slow enough that each looks for the connection before the other stores it.
    bridge.graph.request_delay = 0.1
    first, second = await asyncio.gather(bridge.connect(), bridge.connect())

    assert first.id == second.id
    await bridge.settled()
    live = bridge.connection(first.id)
    assert live.state is State.ACTIVE
    # One subscription in Graph, the connection's, and one record that names it.
    assert list(bridge.graph.subscriptions) == [live.subscription_id]
    [record] = bridge.nexudus.records.values()
    assert record["SubscriptionId"] == live.subscription_id
    # Both found nothing and subscribed; the later took over the other's connection.
    assert len(aliases(bridge, first)) == 1


async def test_an_orphaned_calendar_can_be_connected_again(bridge: Bridge) -> None:
    orphan = await bridge.connect()
    set_connection(bridge, orphan, state=State.ORPHANED)

    again = await bridge.connect()

    assert again.id != orphan.id
    assert again.state is State.ACTIVE
    assert bridge.connection(orphan.id).state is State.ORPHANED
