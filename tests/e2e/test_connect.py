"""`bridge connect` in its own process while `bridge serve` runs."""

from __future__ import annotations

import json
from datetime import datetime

from tests.e2e.harness import RESOURCE_ID, USER, Bridge, nexudus_date


async def test_connect_from_the_cli_reaches_the_serving_bridge(bridge: Bridge) -> None:
    await bridge.start()
    shown = await bridge.connect_with_cli()

    graph, nexudus = bridge.fakes.graph, bridge.fakes.nexudus
    assert [(h.url, h.ok) for h in graph.handshakes] == [
        (f"{bridge.url}/graph/notifications", True),
        (f"{bridge.url}/graph/lifecycle", True),
    ]
    assert set(shown) == {
        "id", "state", "resource_id", "coworker_id", "user_id", "calendar_id",
        "name", "subscription_id", "subscription_expires_at", "nexudus_record_id",
        "last_error", "created_at", "updated_at",
    }  # fmt: skip
    assert shown["state"] == "active"
    assert shown["resource_id"] == RESOURCE_ID
    assert shown["user_id"] == USER
    subscription = graph.subscriptions[shown["subscription_id"]]
    assert subscription.notification_url == f"{bridge.url}/graph/notifications"
    assert subscription.lifecycle_url == f"{bridge.url}/graph/lifecycle"
    calendar = graph.mailboxes[USER].default
    assert shown["calendar_id"] == calendar.id
    assert shown["name"] == calendar.name

    assert list(nexudus.records) == [shown["nexudus_record_id"]]
    record = nexudus.records[shown["nexudus_record_id"]]
    expires = datetime.fromisoformat(shown["subscription_expires_at"])
    assert expires == subscription.expires_at.replace(microsecond=0)
    assert {
        key: record[key]
        for key in (
            "SubscriptionId",
            "ResourceId",
            "CalendarId",
            "Name",
            "SubscriptionExpireDate",
        )
    } == {
        "SubscriptionId": subscription.id,
        "ResourceId": RESOURCE_ID,
        "CalendarId": calendar.id,
        "Name": calendar.name,
        "SubscriptionExpireDate": nexudus_date(expires),
    }
    assert bridge.fakes.nexudus_writes() == [
        "POST /api/spaces/coworkermsofficecalendars"
    ]
    # The serving bridge knows the connection the other process stored.
    stored = await bridge.connection(shown["id"])
    assert stored.subscription_id == subscription.id
    assert stored.client_state == subscription.client_state


async def test_renew_and_disconnect_from_the_cli(bridge: Bridge) -> None:
    await bridge.start()
    shown = await bridge.connect_with_cli()
    graph, nexudus = bridge.fakes.graph, bridge.fakes.nexudus
    del graph.subscriptions[shown["subscription_id"]]  # Graph lost it

    renewed = await bridge.cli("connections", "renew", str(shown["id"]), "--json")

    assert renewed.status == 0, renewed.stderr
    after = json.loads(renewed.stdout)
    assert after["state"] == "active"
    assert after["subscription_id"] != shown["subscription_id"]
    assert after["subscription_id"] in graph.subscriptions
    record = nexudus.records[shown["nexudus_record_id"]]
    assert record["SubscriptionId"] == after["subscription_id"]

    gone = await bridge.cli("connections", "disconnect", str(shown["id"]))

    assert gone.status == 0, gone.stderr
    assert "disconnected" in gone.stdout
    assert after["subscription_id"] not in graph.subscriptions
    assert not nexudus.records
    again = await bridge.cli("connections", "renew", str(shown["id"]))
    assert again.status == 1
    assert again.stderr.strip() == (
        f"bridge: connection {shown['id']} is disconnected: "
        "connect the calendar again instead"
    )


async def test_a_failed_disconnect_says_what_is_left(bridge: Bridge) -> None:
    await bridge.start()
    shown = await bridge.connect_with_cli()
    bridge.fakes.nexudus.fail_next(1, 503, method="DELETE")

    result = await bridge.cli("connections", "disconnect", str(shown["id"]))

    assert result.status == 1
    line = result.stderr.splitlines()[-1]  # after the worker's warning log line
    assert line.startswith("bridge: disconnected, but deleting upstream failed:")
    assert line.endswith("(the worker tries again)")
    # The serving bridge's worker finishes the job.
    await bridge.settled()
    assert not bridge.fakes.nexudus.records
