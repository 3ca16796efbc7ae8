"""The `bridge serve` process itself: killed with -9 mid-burst, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import httpx

from tests.e2e.harness import Bridge, eventually
from tests.fakes.nexudus import CALENDARS, Call


def _in_flight(bridge: Bridge, since: int) -> list[Call]:
    """Nexudus calls the fake has received and not answered yet."""
    return [
        call
        for call in bridge.fakes.nexudus.calls[since:]
        if call.status == 0 and call.path.startswith(CALENDARS)
    ]


async def _connect_rooms(bridge: Bridge, count: int) -> list[dict[str, Any]]:
    users = [f"room{n}@contoso.test" for n in range(count)]
    for user in users:
        bridge.fakes.graph.add_mailbox(user)
    return list(
        await asyncio.gather(
            *(bridge.connect(user, 100 + n) for n, user in enumerate(users))
        )
    )


async def _deliver_until_down(
    bridge: Bridge, subscription_ids: list[str], failed: list[dict[str, Any]]
) -> None:
    """Deliver a round of changes for every subscription, again and again, as Graph
    does in a busy hour, until the bridge stops answering. The items not answered
    with a 202 go to `failed`: Graph delivers those again later."""

    async def post(body: dict[str, Any]) -> None:
        try:
            answer = await bridge.post(body)
        except httpx.TransportError:
            failed.append(body)
            return
        if answer.status_code != 202:
            failed.append(body)

    for _ in range(500):
        bodies = [bridge.change(bridge.subscription(sid)) for sid in subscription_ids]
        await asyncio.gather(*(post(body) for body in bodies))
        if failed:
            return
        await asyncio.sleep(0.02)


async def test_kill_9_mid_burst_then_a_restart_converges(bridge: Bridge) -> None:
    # Leases of the killed process run out two seconds after they were taken.
    short_lease = {"BRIDGE_LEASE_SECONDS": "2"}
    await bridge.start(**short_lease)
    nexudus = bridge.fakes.nexudus
    rooms = await _connect_rooms(bridge, 4)
    # A fifth connection whose record is left to the worker (Nexudus was down
    # when it was connected); the worker's create will hang until we kill it.
    nexudus.fail_next(1, 503, method="POST", path=CALENDARS)
    nexudus.hang_next(1, seconds=10.0, method="POST", path=CALENDARS)
    bridge.fakes.graph.add_mailbox("late@contoso.test")
    late = await bridge.connect("late@contoso.test", 200)
    assert (late["state"], late["nexudus_record_id"]) == ("pending", None)
    everyone = [*rooms, late]

    async def create_hangs() -> bool:
        return any(call.method == "POST" for call in _in_flight(bridge, 0))

    await eventually(create_hangs, 10.0, "the worker's create is in flight")
    for shown in rooms:
        nexudus.records[shown["nexudus_record_id"]]["Name"] = "Changed meanwhile"
    nexudus.latency = 0.3  # every Nexudus answer takes a while: actions overlap
    since = len(nexudus.calls)
    failed: list[dict[str, Any]] = []
    burst = asyncio.create_task(
        _deliver_until_down(
            bridge, [shown["subscription_id"] for shown in everyone], failed
        )
    )

    # Kill while reads or writes for other connections are in flight beside the
    # hanging create. The fakes answer in this event loop, so nothing the bridge
    # waits for can be answered between this check and the kill.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15.0
    while len(_in_flight(bridge, since)) < 2:
        assert loop.time() < deadline, "no work in flight beside the hanging create"
        await asyncio.sleep(0.005)
    bridge.kill_now()
    assert await bridge.exited() == -signal.SIGKILL
    await burst
    assert failed, "the burst was over before the kill"

    killed_with = await bridge.items()
    leased = {i["connection_id"] for i in killed_with if i["state"] == "processing"}
    assert late["id"] in leased
    assert len(leased) >= 2, killed_with

    # The hanging create is applied after all, as a slow server would.
    async def created() -> bool:
        return len(nexudus.records) == 5

    await eventually(created, 15.0, "the late create reached Nexudus")
    nexudus.latency = 0.0
    await bridge.start(**short_lease)
    for body in failed:  # Graph delivers what was not acknowledged again
        assert (await bridge.post(body)).status_code == 202
    items = await bridge.settled(within=20.0)

    assert [i for i in items if i["state"] != "done"] == []
    for shown in everyone:
        assert await bridge.record_is_true(shown["id"]), shown
        assert (await bridge.connection(shown["id"])).state == "active"
    counts = bridge.fakes.records_per_subscription()
    assert sorted(counts) == sorted(shown["subscription_id"] for shown in everyone)
    assert set(counts.values()) == {1}
    creates = [call.status for call in nexudus.calls_to("POST", CALENDARS)]
    assert creates == [200] * 4 + [503, 200]  # four at connect, then the late one


async def test_sigterm_finishes_or_releases_work_and_exits_in_time(
    bridge: Bridge,
) -> None:
    # An action may take 1.6 s (80 % of the lease) before it is given up.
    short_lease = {"BRIDGE_LEASE_SECONDS": "2"}
    await bridge.start(**short_lease)
    nexudus = bridge.fakes.nexudus
    rooms = await _connect_rooms(bridge, 3)
    for shown in rooms:
        nexudus.records[shown["nexudus_record_id"]]["Name"] = "Changed meanwhile"
    nexudus.latency = 0.2
    nexudus.hang_next(1, seconds=30.0, method="PUT")  # one action will not finish
    since = len(nexudus.calls)
    for shown in rooms:
        body = bridge.change(bridge.subscription(shown["subscription_id"]))
        assert (await bridge.post(body)).status_code == 202

    async def busy() -> bool:
        flight = _in_flight(bridge, since)
        return any(call.method == "PUT" for call in flight) and len(flight) >= 2

    await eventually(busy, 10.0, "a hanging PUT and other work in flight")
    hung = nexudus.calls_to("PUT")[0]  # the first PUT is the one that hangs
    status, seconds = await bridge.terminate()

    assert status in (0, -signal.SIGTERM), bridge.log()
    assert seconds < 25
    log = bridge.log()
    assert "worker stopped" in log
    assert "Application shutdown complete" in log
    items = await bridge.items()
    assert {item["state"] for item in items} <= {"done", "pending"}, items
    assert [item["state"] for item in items].count("pending") == 1
    (pending,) = [item for item in items if item["state"] == "pending"]
    stuck = next(s for s in rooms if s["nexudus_record_id"] == hung.body["Id"])
    assert pending["connection_id"] == stuck["id"]

    # Nothing was lost: the next start finishes what was left.
    nexudus.latency = 0.0
    nexudus.release_hangs()
    await bridge.start()
    items = await bridge.settled()
    assert {item["state"] for item in items} == {"done"}
    for shown in rooms:
        assert await bridge.record_is_true(shown["id"]), shown


async def test_sigterm_exits_with_status_zero(bridge: Bridge) -> None:
    await bridge.start()
    status, _ = await bridge.terminate()
    assert status == 0
