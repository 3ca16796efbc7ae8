"""Scale-out on PostgreSQL: 2 `bridge serve --no-worker` and 3 `bridge worker`
processes on one database, as the Procfile runs them (web, worker, release).

Graph's copies of each notification reach both web processes (a load balancer
would spread them so); the workers race for the work. Every item must be acted on
once (claimed once, done, one Nexudus record per connection) and none lost, and
every subscription renewed once when the three workers' schedulers all find it due.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection as Db

from bridge.store import db
from bridge.store.schema import inbox
from tests.e2e.fleet import Fleet, paas_url
from tests.e2e.harness import Bridge, eventually, record_problems
from tests.fakes.nexudus import CALENDARS
from tests.processes import free_port

ROOMS = 8
CHANGES_PER_ROOM = 5
WEB_PROCESSES = 2
WORKER_PROCESSES = 3

pytestmark = pytest.mark.usefixtures("on_postgresql")


@pytest.fixture
async def fleet(bridge: Bridge) -> AsyncIterator[Fleet]:
    # PaaS hosts hand out postgres://...; the processes get it so.
    bridge.env["DATABASE_URL"] = paas_url(bridge.database_url)
    running = Fleet(bridge)
    try:
        yield running
    finally:
        await running.kill_all()


async def start_worker(fleet: Fleet, name: str) -> None:
    # Two connections at a time: the work is shared out, not taken by the first
    # worker to start.
    await fleet.worker(name, BRIDGE_WORKER_CONCURRENCY="2")


def worker_names(start: int = 1) -> list[str]:
    return [f"worker-{n}" for n in range(start, start + WORKER_PROCESSES)]


async def test_web_and_worker_processes_act_on_every_item_once(
    bridge: Bridge, fleet: Fleet
) -> None:
    # The release phase.
    released = await bridge.cli("migrate")
    assert released.status == 0, released.stderr
    assert "up to date" in released.stdout
    # web-1 is the public URL that Graph's handshakes reach.
    await asyncio.gather(
        fleet.web("web-1", bridge.port),
        *(fleet.web(f"web-{n}", free_port()) for n in range(2, WEB_PROCESSES + 1)),
    )
    # Nexudus is down while the calendars are connected: each connection is left
    # pending with a reconcile item, and the record is the workers' to create.
    nexudus = bridge.fakes.nexudus
    nexudus.fail_next(ROOMS, 503, method="POST", path=CALENDARS)
    users = [f"room{n}@contoso.test" for n in range(ROOMS)]
    for user in users:
        bridge.fakes.graph.add_mailbox(user)
    shown = await asyncio.gather(
        *(
            connect(bridge, fleet.webs[n % WEB_PROCESSES], user, 100 + n)
            for n, user in enumerate(users)
        )
    )
    assert {c["state"] for c in shown} == {"pending"}, shown
    assert nexudus.records == {}
    # The workers start together and then find the work due at the same moment,
    # all of it for connections none of them holds: they race to claim it.
    await set_pending_due(bridge, datetime.now(UTC) + timedelta(hours=1))
    await asyncio.gather(*(start_worker(fleet, name) for name in worker_names()))
    nexudus.latency = 0.05  # actions overlap, as with a real upstream
    await set_pending_due(bridge, datetime.now(UTC))
    # Changes while the workers create the records: every copy to every web
    # process, so each is stored by one and found a duplicate by the other.
    sent = 0
    for _ in range(CHANGES_PER_ROOM):
        bodies = [
            bridge.change(bridge.subscription(c["subscription_id"])) for c in shown
        ]
        answers = await asyncio.gather(
            *(
                bridge.http.post(f"{web}/graph/notifications", json=body)
                for body in bodies
                for web in fleet.webs
            )
        )
        assert {a.status_code for a in answers} == {202}
        sent += len(bodies)
        await asyncio.sleep(0.05)

    items = await bridge.settled(within=60.0)

    assert Counter(item["kind"] for item in items) == {
        "change": sent,
        "reconcile": ROOMS,
    }
    assert {(item["state"], item["attempts"]) for item in items} == {("done", 1)}, [
        (item["id"], item["state"], item["attempts"], item["last_error"])
        for item in items
        if (item["state"], item["attempts"]) != ("done", 1)
    ]
    posts = nexudus.calls_to("POST", CALENDARS)
    assert [call.status for call in posts] == [503] * ROOMS + [200] * ROOMS
    assert set(bridge.fakes.records_per_subscription().values()) == {1}
    assert len(nexudus.records) == ROOMS
    for connection in shown:
        assert await bridge.record_is_true(connection["id"]), connection
        assert (await bridge.connection(connection["id"])).state == "active"
    created = [
        entry["connection_id"]
        for name in worker_names()
        for entry in fleet.logged(name, "Nexudus record created")
    ]
    assert sorted(created) == sorted(c["id"] for c in shown), fleet.logs()

    # Every subscription falls due for renewal while no worker runs; the three
    # next ones all find them due when they start, and race to schedule them.
    await fleet.stop(*worker_names())
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    for connection in shown:
        await bridge.update_connection(connection["id"], subscription_expires_at=soon)
    graph = bridge.fakes.graph
    graph_since, since = len(graph.calls), len(nexudus.calls)
    await asyncio.gather(*(start_worker(fleet, name) for name in worker_names(4)))

    async def renewed() -> bool:
        return len(bridge.fakes.nexudus_writes(since)) >= ROOMS

    # Scheduled renewals are spread over a second per renewal.
    await eventually(renewed, ROOMS + 30.0, "every renewal reached Nexudus")
    items = await bridge.settled(within=30.0)

    renewals = [item for item in items if item["kind"] == "renewal"]
    assert sorted(item["connection_id"] for item in renewals) == sorted(
        c["id"] for c in shown
    )
    assert {(item["state"], item["attempts"]) for item in renewals} == {("done", 1)}
    patches = Counter(
        call.path.rsplit("/", 1)[-1]
        for call in graph.calls[graph_since:]
        if call.method == "PATCH"
    )
    assert patches == {c["subscription_id"]: 1 for c in shown}
    assert sorted(bridge.fakes.nexudus_writes(since)) == [f"PUT {CALENDARS}"] * ROOMS
    for connection in shown:
        stored = await bridge.connection(connection["id"])
        assert stored.subscription_expires_at is not None
        assert stored.subscription_expires_at > soon + timedelta(days=2)
        record = nexudus.records[stored.nexudus_record_id or 0]
        assert record_problems(stored, record) == []
    scheduled = [
        entry["renewals"]
        for name in worker_names(4)
        for entry in fleet.logged(name, "renewals scheduled")
    ]
    assert sum(scheduled) == ROOMS, fleet.logs()

    webs = [f"web-{n}" for n in range(1, WEB_PROCESSES + 1)]
    await fleet.stop(*worker_names(4), *webs)


async def set_pending_due(bridge: Bridge, at: datetime) -> None:
    def move(conn: Db) -> None:
        conn.execute(
            inbox.update().where(inbox.c.state == "pending").values(next_attempt_at=at)
        )

    await db.write(bridge.engine, move)


async def connect(bridge: Bridge, web: str, user: str, resource_id: int) -> Any:
    answer = await bridge.http.post(
        f"{web}/admin/connections",
        json={"resource_id": resource_id, "user_id": user},
        headers=bridge.admin,
        timeout=30.0,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()
