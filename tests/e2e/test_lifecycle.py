"""Lifecycle notifications and renewals, through a real `bridge serve`."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta

from tests.e2e.harness import (
    Bridge,
    eventually,
    next_second,
    nexudus_date,
    record_problems,
)
from tests.fakes.nexudus import CALENDARS


async def test_reauthorization_required_is_one_patch_then_a_reconcile(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    graph = bridge.fakes.graph
    subscription = bridge.subscription(shown["subscription_id"])
    old_expiry = subscription.expires_at.replace(microsecond=0)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await bridge.update_connection(shown["id"], renewed_at=an_hour_ago)
    await next_second()  # so the renewal asks for a later expiry than the create
    graph_since, since = len(graph.calls), len(bridge.fakes.nexudus.calls)

    body = bridge.lifecycle(subscription, "reauthorizationRequired")
    answer = await bridge.post(body, "/graph/lifecycle")
    assert answer.status_code == 202
    await bridge.settled()
    # Graph asks again (the expiry moved, so this is a new item): the quiet
    # period after a renewal holds the second PATCH back.
    again = bridge.lifecycle(subscription, "reauthorizationRequired")
    assert (await bridge.post(again, "/graph/lifecycle")).status_code == 202
    items = await bridge.settled()

    assert [(item["kind"], item["state"]) for item in items] == [
        ("lifecycle", "done"),
        ("lifecycle", "done"),
    ]
    assert [(c.method, c.path) for c in graph.calls[graph_since:]] == [
        ("PATCH", f"/v1.0/subscriptions/{subscription.id}")
    ]
    connection = await bridge.connection(shown["id"])
    assert connection.subscription_id == subscription.id
    assert connection.subscription_expires_at == subscription.expires_at.replace(
        microsecond=0
    )
    assert connection.subscription_expires_at > old_expiry
    assert bridge.fakes.nexudus_writes(since) == [f"PUT {CALENDARS}"]
    record = bridge.fakes.nexudus.records[shown["nexudus_record_id"]]
    assert record_problems(connection, record) == []


async def test_subscription_removed_recreates_it_and_tells_nexudus(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    graph = bridge.fakes.graph
    old = bridge.subscription(shown["subscription_id"])
    removed = bridge.lifecycle(old, "subscriptionRemoved")
    del graph.subscriptions[old.id]  # Graph removed it before telling us
    since = len(bridge.fakes.nexudus.calls)

    answer = await bridge.post(removed, "/graph/lifecycle")
    assert answer.status_code == 202
    await bridge.settled()

    connection = await bridge.connection(shown["id"])
    assert connection.subscription_id != old.id
    new = graph.subscriptions[connection.subscription_id]
    assert list(graph.subscriptions) == [new.id]
    assert new.client_state == connection.client_state
    assert new.client_state != old.client_state
    assert new.notification_url == f"{bridge.url}/graph/notifications"
    assert [h.ok for h in graph.handshakes] == [True] * 4
    assert await bridge.aliases(shown["id"]) == [old.id]
    assert bridge.fakes.nexudus_writes(since) == [f"PUT {CALENDARS}"]
    record = bridge.fakes.nexudus.records[shown["nexudus_record_id"]]
    assert record["SubscriptionId"] == new.id
    assert record_problems(connection, record) == []
    assert len(bridge.fakes.nexudus.records) == 1

    # A late notification for the old subscription, with its old secret.
    since = len(bridge.fakes.nexudus.calls)
    assert (await bridge.post(bridge.change(old))).status_code == 202
    late = (await bridge.items())[-1]
    assert (late["subscription_id"], late["state"]) == (old.id, "ignored")
    # One for the new subscription is acted on; the late one was not.
    assert (await bridge.post(bridge.change(new))).status_code == 202
    items = await bridge.settled()
    assert [item["state"] for item in items] == ["done", "ignored", "done"]
    assert bridge.fakes.nexudus_reads(since) == [
        f"GET {CALENDARS}/{shown['nexudus_record_id']}"
    ]
    assert bridge.fakes.nexudus_writes(since) == []


async def test_missed_notifications_are_answered_with_a_reconcile(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    graph = bridge.fakes.graph
    record = bridge.fakes.nexudus.records[shown["nexudus_record_id"]]
    record["Name"] = "Changed while notifications were missed"
    graph_since, since = len(graph.calls), len(bridge.fakes.nexudus.calls)

    missed = bridge.lifecycle(bridge.subscription(shown["subscription_id"]), "missed")
    assert (await bridge.post(missed, "/graph/lifecycle")).status_code == 202
    items = await bridge.settled()

    assert [item["state"] for item in items] == ["done"]
    assert graph.calls[graph_since:] == []
    assert bridge.fakes.nexudus_reads(since) == [
        f"GET {CALENDARS}/{shown['nexudus_record_id']}"
    ]
    assert bridge.fakes.nexudus_writes(since) == [f"PUT {CALENDARS}"]
    assert record_problems(await bridge.connection(shown["id"]), record) == []


async def test_an_unknown_lifecycle_event_is_done_without_a_write(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    graph = bridge.fakes.graph
    graph_since, since = len(graph.calls), len(bridge.fakes.nexudus.calls)

    novel = bridge.lifecycle(
        bridge.subscription(shown["subscription_id"]), "somethingGraphAddsLater"
    )
    assert (await bridge.post(novel, "/graph/lifecycle")).status_code == 202
    items = await bridge.settled()

    assert [(item["lifecycle_event"], item["state"]) for item in items] == [
        ("somethingGraphAddsLater", "done")
    ]
    assert graph.calls[graph_since:] == []
    assert bridge.fakes.nexudus_writes(since) == []


async def test_an_unknown_lifecycle_event_is_logged_with_its_message(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    novel = bridge.lifecycle(
        bridge.subscription(shown["subscription_id"]), "somethingGraphAddsLater"
    )
    assert (await bridge.post(novel, "/graph/lifecycle")).status_code == 202
    await bridge.settled()

    warnings = [
        line
        for line in map(json.loads, bridge.log().splitlines())
        if line["level"] == "warning" and line["logger"] == "bridge.sync.actions"
    ]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "unknown lifecycle event, ignored"
    assert "somethingGraphAddsLater" in json.dumps(warnings[0])


async def test_a_renewal_that_falls_due_patches_graph_then_puts_the_expiry(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    subscription = bridge.subscription(shown["subscription_id"])
    status, _ = await bridge.terminate()
    assert status in (0, -signal.SIGTERM), bridge.log()
    # Time passes: two hours are left, less than the day BRIDGE_RENEW_BEFORE_MINUTES
    # asks for. The renewal scheduler looks when the worker starts.
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    await bridge.update_connection(shown["id"], subscription_expires_at=soon)
    await next_second()  # so the renewal asks for a later expiry than the create
    graph = bridge.fakes.graph
    graph_since, since = len(graph.calls), len(bridge.fakes.nexudus.calls)

    await bridge.start(BRIDGE_RENEW_BEFORE_MINUTES="1440")

    async def renewed() -> bool:
        return bool(bridge.fakes.nexudus_writes(since))

    await eventually(renewed, 15.0, "the renewal reached Nexudus")
    items = await bridge.settled()
    assert [(item["kind"], item["state"]) for item in items] == [("renewal", "done")]
    assert [(c.method, c.path) for c in graph.calls[graph_since:]] == [
        ("PATCH", f"/v1.0/subscriptions/{subscription.id}")
    ]
    connection = await bridge.connection(shown["id"])
    assert connection.subscription_expires_at is not None
    assert connection.subscription_expires_at > soon + timedelta(days=2)
    assert connection.subscription_expires_at == subscription.expires_at.replace(
        microsecond=0
    )
    assert bridge.fakes.nexudus_writes(since) == [f"PUT {CALENDARS}"]
    record = bridge.fakes.nexudus.records[shown["nexudus_record_id"]]
    assert record["SubscriptionExpireDate"] == nexudus_date(
        connection.subscription_expires_at
    )
    assert record_problems(connection, record) == []
    assert await bridge.metric("bridge_renewals_scheduled_total") == 1
