"""What every scenario sets up and checks: the connected rooms, and convergence
(every item done, every record true, one record per subscription)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from sqlalchemy import select

from bridge.store import db
from bridge.store.schema import inbox
from tests.e2e.harness import Bridge

TAMPERED = "Changed in Nexudus meanwhile"


async def connect_rooms(bridge: Bridge, count: int) -> list[dict[str, Any]]:
    """`count` calendars connected through the admin API (one mailbox each)."""
    users = [f"room{n}@contoso.test" for n in range(count)]
    for user in users:
        bridge.fakes.graph.add_mailbox(user)
    shown = await asyncio.gather(
        *(bridge.connect(user, 100 + n) for n, user in enumerate(users))
    )
    assert {room["state"] for room in shown} == {"active"}, shown
    return list(shown)


def tamper(bridge: Bridge, rooms: list[dict[str, Any]]) -> None:
    """Change every room's record in Nexudus behind the bridge's back: the next
    action for each must write it back."""
    for room in rooms:
        bridge.fakes.nexudus.records[room["nexudus_record_id"]]["Name"] = TAMPERED


async def leases(bridge: Bridge) -> Counter[str]:
    """Items being acted on, by the worker holding them."""

    def read() -> Counter[str]:
        with db.reading(bridge.engine) as conn:
            rows = conn.execute(
                select(inbox.c.claimed_by).where(inbox.c.state == "processing")
            )
            return Counter(str(worker) for (worker,) in rows)

    return await asyncio.to_thread(read)


def held_by(holders: Counter[str], pid: int) -> int:
    """Items leased by the worker of process `pid` (a worker id holds its pid)."""
    return sum(n for worker, n in holders.items() if worker.split(":")[2] == str(pid))


async def converged(
    bridge: Bridge, rooms: list[dict[str, Any]], within: float = 30.0
) -> list[dict[str, Any]]:
    """Wait until nothing is pending or processing, then check that every item is
    done and every room's record true, once; the items."""
    items = await bridge.settled(within)
    unfinished = [
        (item["id"], item["kind"], item["state"], item["last_error"])
        for item in items
        if item["state"] != "done"
    ]
    assert unfinished == []
    for room in rooms:
        connection = await bridge.connection(room["id"])
        assert connection.state == "active", connection
        assert connection.last_error is None, connection
        assert await bridge.record_is_true(room["id"]), room
    per_subscription = bridge.fakes.records_per_subscription()
    subscriptions = [(await bridge.connection(r["id"])).subscription_id for r in rooms]
    assert per_subscription == dict.fromkeys(subscriptions, 1)
    assert len(bridge.fakes.nexudus.records) == len(rooms)
    return items
