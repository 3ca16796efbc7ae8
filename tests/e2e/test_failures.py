"""Nexudus failing under a real `bridge serve`: an outage passes, a refusal is dead."""

from __future__ import annotations

from tests.e2e.harness import Bridge, eventually, record_problems
from tests.fakes.nexudus import CALENDARS


async def test_a_nexudus_outage_is_retried_until_it_converges(bridge: Bridge) -> None:
    await bridge.start()
    shown = await bridge.connect()
    nexudus = bridge.fakes.nexudus
    record = nexudus.records[shown["nexudus_record_id"]]
    record["Name"] = "Changed during the outage"
    subscription = bridge.subscription(shown["subscription_id"])
    nexudus.fail_next(3, 503, path=CALENDARS)
    since = len(nexudus.calls)

    assert (await bridge.post(bridge.change(subscription))).status_code == 202

    async def outage_seen() -> bool:
        return any(call.status == 503 for call in nexudus.calls[since:])

    await eventually(outage_seen, 10.0, "the worker met the outage")
    # More notifications while Nexudus is down: kept, and coalesced.
    for _ in range(2):
        assert (await bridge.post(bridge.change(subscription))).status_code == 202
    items = await bridge.settled(within=20.0)

    assert [item["state"] for item in items] == ["done"] * 3
    assert all(item["last_error"] is None for item in items)
    statuses = [c.status for c in nexudus.calls[since:] if c.path.startswith(CALENDARS)]
    assert statuses == [503, 503, 503, 200, 200]  # then one GET and one PUT
    assert bridge.fakes.nexudus_writes(since) == [f"PUT {CALENDARS}"]
    connection = await bridge.connection(shown["id"])
    assert record_problems(connection, record) == []
    assert connection.state == "active"
    assert connection.last_error is None
    assert await bridge.metric("bridge_worker_actions_total", result="retry") == 3
    assert await bridge.metric("bridge_worker_actions_total", result="dead") == 0


async def test_a_nexudus_validation_failure_is_dead_with_the_field_message(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    nexudus = bridge.fakes.nexudus
    record = nexudus.records[shown["nexudus_record_id"]]
    record["Name"] = "Changed in Nexudus"
    # Nexudus refuses the PUT that would restore it: {"Errors": [{"PropertyName":
    # "Name", "Message": "is not valid"}], ...}
    nexudus.fail_next(1, 400, method="PUT")
    since = len(nexudus.calls)

    body = bridge.change(bridge.subscription(shown["subscription_id"]))
    assert (await bridge.post(body)).status_code == 202
    items = await bridge.settled()

    assert [(item["state"], item["attempts"]) for item in items] == [("dead", 1)]
    assert "Name: is not valid" in items[0]["last_error"]
    assert bridge.fakes.nexudus_writes(since) == [f"PUT {CALENDARS}"]
    assert [call.status for call in nexudus.calls_to("PUT")] == [400]
    assert record["Name"] == "Changed in Nexudus"
    connection = await bridge.connection(shown["id"])
    assert connection.last_error is not None
    assert "Name: is not valid" in connection.last_error
