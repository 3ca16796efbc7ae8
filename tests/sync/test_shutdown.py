"""Stopping the worker (SIGTERM): finish what can finish, release what cannot."""

from __future__ import annotations

import time
from typing import Any

from bridge.store.connections import Connection
from tests.fakes.nexudus import CALENDARS
from tests.sync.conftest import Bridge, running_bridge

GRACE = 0.4
# What stopping may take beyond the grace: cancelling and releasing, no more.
SLACK = 1.0


def only_item(bridge: Bridge) -> dict[str, Any]:
    [item] = bridge.items()
    return item


async def act_on_hanging_nexudus(
    bridge: Bridge, seconds: float
) -> tuple[Connection, str]:
    """A notification whose reconcile is under way, its Nexudus call hanging."""
    connection = await bridge.connect()
    path = f"{CALENDARS}/{connection.nexudus_record_id}"
    bridge.nexudus.hang_next(1, seconds=seconds, path=path)
    await bridge.graph.deliver(connection.subscription_id)
    await bridge.until(lambda: len(bridge.nexudus.calls_to("GET", path)) == 1)
    item = only_item(bridge)
    assert (item["state"], item["attempts"]) == ("processing", 1)
    return connection, path


async def test_an_action_that_cannot_finish_is_released(database_url: str) -> None:
    async with running_bridge(database_url, grace_seconds=GRACE) as bridge:
        _connection, path = await act_on_hanging_nexudus(bridge, seconds=60)
        started = time.monotonic()
        await bridge.stop()
        took = time.monotonic() - started
        assert GRACE * 0.9 <= took < GRACE + SLACK

        item = only_item(bridge)
        assert (item["state"], item["attempts"]) == ("pending", 0)
        assert (item["claimed_by"], item["leased_until"]) == (None, None)
        assert item["next_attempt_at"] <= bridge.clock()
        assert bridge.writes() == [f"POST {CALENDARS}"]

        # Released, not left to its lease (30 s): the next worker takes it at once.
        async with bridge.another_worker():
            await bridge.settled(within=5.0)
        item = only_item(bridge)
        assert (item["state"], item["attempts"]) == ("done", 1)
        assert [call.status for call in bridge.nexudus.calls_to("GET", path)][1:] == [
            200
        ]


async def test_an_action_that_finishes_within_grace_completes(
    database_url: str,
) -> None:
    async with running_bridge(database_url, grace_seconds=5.0) as bridge:
        await act_on_hanging_nexudus(bridge, seconds=0.3)
        started = time.monotonic()
        await bridge.stop()
        assert time.monotonic() - started < 5.0
        item = only_item(bridge)
        assert (item["state"], item["attempts"]) == ("done", 1)
