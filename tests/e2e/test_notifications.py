"""Change notifications posted to a real `bridge serve`: replays, bursts, forgeries."""

from __future__ import annotations

import asyncio
import json

from tests.e2e.harness import Bridge, record_problems
from tests.fakes.nexudus import CALENDARS


async def test_a_replayed_notification_writes_nothing_when_the_record_is_right(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    subscription = bridge.subscription(shown["subscription_id"])
    record_before = dict(bridge.fakes.nexudus.records[shown["nexudus_record_id"]])
    # What Graph sent, kept as files: three changes, the first one twice.
    recorded = bridge.workdir / "recorded"
    recorded.mkdir()
    bodies = [bridge.change(subscription) for _ in range(3)]
    for n, body in enumerate([*bodies, bodies[0]]):
        (recorded / f"{n:02}.json").write_text(json.dumps(body))
    since = len(bridge.fakes.nexudus.calls)

    replayed = await bridge.cli("replay", str(recorded), "--url", bridge.url, "--json")

    assert replayed.status == 0, replayed.stderr
    assert [result["status"] for result in json.loads(replayed.stdout)] == [202] * 4
    items = await bridge.settled()
    assert [item["state"] for item in items] == ["done"] * 3
    assert bridge.fakes.nexudus_writes(since) == []
    # Looked at (the record read, once per action), not written.
    reads = bridge.fakes.nexudus_reads(since)
    assert 1 <= len(reads) <= 3
    assert set(reads) == {f"GET {CALENDARS}/{shown['nexudus_record_id']}"}
    assert bridge.fakes.nexudus.records[shown["nexudus_record_id"]] == record_before


async def test_a_record_changed_behind_our_back_is_restored_by_one_put(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    record = bridge.fakes.nexudus.records[shown["nexudus_record_id"]]
    before = dict(record)
    record["Name"] = "Renamed in Nexudus"
    record["SubscriptionExpireDate"] = "2031-01-01T00:00:00Z"
    since = len(bridge.fakes.nexudus.calls)

    answer = await bridge.post(
        bridge.change(bridge.subscription(shown["subscription_id"]))
    )
    assert answer.status_code == 202
    items = await bridge.settled()

    assert [item["state"] for item in items] == ["done"]
    assert bridge.fakes.nexudus_writes(since) == [f"PUT {CALENDARS}"]
    connection = await bridge.connection(shown["id"])
    assert record_problems(connection, record) == []
    # Fields the bridge does not own (SystemId, CustomFields, ...) survive the PUT.
    assert record == {**before, "UpdatedOn": record["UpdatedOn"]}


async def test_a_concurrent_burst_of_one_notification_is_stored_once(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    body = bridge.change(bridge.subscription(shown["subscription_id"]))
    since = len(bridge.fakes.nexudus.calls)

    answers = await asyncio.gather(*(bridge.post(body) for _ in range(40)))

    assert {answer.status_code for answer in answers} == {202}
    items = await bridge.settled()
    assert [(item["kind"], item["state"]) for item in items] == [("change", "done")]
    assert bridge.fakes.nexudus_writes(since) == []
    assert len(bridge.fakes.nexudus_reads(since)) == 1
    assert (
        await bridge.metric(
            "bridge_notifications_received_total", kind="change", outcome="duplicate"
        )
        == 39
    )


async def test_a_wrong_client_state_is_answered_but_not_acted_on(
    bridge: Bridge,
) -> None:
    await bridge.start()
    shown = await bridge.connect()
    subscription = bridge.subscription(shown["subscription_id"])
    record_before = dict(bridge.fakes.nexudus.records[shown["nexudus_record_id"]])
    bridge.fakes.nexudus.records[shown["nexudus_record_id"]]["Name"] = "Tampered"
    forged = bridge.change(subscription)
    forged["value"][0]["clientState"] = "not-the-secret-" + "x" * 40
    missing = bridge.change(subscription)
    del missing["value"][0]["clientState"]
    since = len(bridge.fakes.nexudus.calls)

    assert (await bridge.post(forged)).status_code == 202
    assert (await bridge.post(missing, "/graph/lifecycle")).status_code == 202

    assert await bridge.items() == []
    assert (
        await bridge.metric(
            "bridge_notifications_received_total",
            kind="change",
            outcome="bad_client_state",
        )
        == 2
    )
    # A genuine notification afterwards is acted on: by the time it is done, the
    # worker would have acted on the forged ones too, had they been stored.
    assert (await bridge.post(bridge.change(subscription))).status_code == 202
    items = await bridge.settled()
    assert [item["state"] for item in items] == ["done"]
    assert bridge.fakes.nexudus_writes(since) == [f"PUT {CALENDARS}"]
    assert len(bridge.fakes.nexudus_reads(since)) == 1
    assert bridge.fakes.nexudus.records[shown["nexudus_record_id"]] == {
        **record_before,
        "UpdatedOn": bridge.fakes.nexudus.records[shown["nexudus_record_id"]][
            "UpdatedOn"
        ],
    }
    log = bridge.log()
    assert "clientState mismatch" in log
    assert "not-the-secret-" not in log
