"""Nexudus and Graph fail in every way they do (5xx, HTML error pages, throttles with
Retry-After, answers that never come, a token endpoint down) while notifications and
lifecycle events arrive: once the faults pass, everything converges.

Converged: every item done (none dead: each fault is one that passes), every
connection active with its record true and one record per subscription, and Graph
holding exactly the connections' subscriptions (renewed where Graph asked for a
reauthorization, recreated where it removed one).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from tests.e2e.harness import Bridge, eventually
from tests.fakes.nexudus import CALENDARS, TOKEN_PATH
from tests.reliability.checks import connect_rooms, converged, tamper
from tests.reliability.conftest import Figures, Service
from tests.reliability.traffic import Graph

ROOMS = 6
CHANGES_PER_ROOM = 3
REAUTHORIZED = (0, 1)  # rooms whose subscription Graph asks to reauthorize
REMOVED = 2  # the room whose subscription Graph removes
MISSED = 3  # the room for which Graph says notifications were missed


def inject_nexudus_faults(bridge: Bridge) -> dict[str, int]:
    """Queue Nexudus's faults; how many of each kind."""
    nexudus = bridge.fakes.nexudus
    nexudus.fail_next(2, 500, path=CALENDARS)
    nexudus.fail_next(2, 502, html=True, path=CALENDARS)  # a proxy's error page
    nexudus.fail_next(3, 503, path=CALENDARS)
    nexudus.throttle_next(2, retry_after=1, status=409, path=CALENDARS)
    nexudus.throttle_next(1, retry_after=1, status=429, path=CALENDARS)
    # Longer than an action may take: the worker gives up on them and retries.
    nexudus.hang_next(2, seconds=10.0, method="GET", path=CALENDARS)
    nexudus.hang_next(1, seconds=10.0, method="PUT", path=CALENDARS)
    # Its tokens are revoked, and the token endpoint is down at the next login.
    nexudus.revoke_access_tokens()
    nexudus.fail_next(1, 503, path=TOKEN_PATH)
    return {
        "nexudus_5xx": 7,
        "nexudus_throttles": 3,
        "nexudus_hangs": 3,
        "nexudus_revoked_tokens": 1,
    }


def inject_graph_faults(bridge: Bridge) -> dict[str, int]:
    graph = bridge.fakes.graph
    graph.fail_next(429, retry_after="1", method="PATCH")
    graph.fail_next(503, method="PATCH")
    graph.fail_next(500, method="POST", path="/subscriptions")
    graph.hang_next(method="POST", path="/subscriptions")
    # Graph's tokens are revoked, and the identity authority is down when the
    # bridge asks for a new one (`authority_outage` ends it).
    bridge.fakes.authority.revoke_tokens()
    bridge.fakes.authority.outage = 503
    bridge.fakes.authority.outage_retry_after = "1"
    return {"graph_5xx": 2, "graph_throttles": 1, "graph_hangs": 1}


async def authority_outage(bridge: Bridge) -> int:
    """Let the identity authority refuse the first token request, then recover;
    how many token requests it refused."""
    authority = bridge.fakes.authority
    before = authority.token_requests

    async def asked() -> bool:
        return authority.token_requests > before

    await eventually(asked, 30.0, "a token request during the outage")
    authority.outage = None
    return authority.token_requests - before


async def test_upstream_faults_pass_and_everything_converges(
    bridge: Bridge, service: Service, figures: Figures
) -> None:
    await service.start()
    rooms = await connect_rooms(bridge, ROOMS)
    graph, nexudus = bridge.fakes.graph, bridge.fakes.nexudus
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    for n in REAUTHORIZED:  # renewed long enough ago to be renewed again
        await bridge.update_connection(rooms[n]["id"], renewed_at=an_hour_ago)
    removed = rooms[REMOVED]["subscription_id"]
    subscriptions = [bridge.subscription(room["subscription_id"]) for room in rooms]
    del graph.subscriptions[removed]  # Graph removed it (password reset, say)
    tamper(bridge, rooms)
    graph_since = len(graph.calls)
    injected = {**inject_nexudus_faults(bridge), **inject_graph_faults(bridge)}

    outage = asyncio.create_task(authority_outage(bridge))
    sender = Graph(bridge, subscriptions, service.urls, concurrency=4)
    bodies = [sender.body(items=1) for _ in range(ROOMS * CHANGES_PER_ROOM)]
    await asyncio.gather(*(sender.deliver(body) for body in bodies))
    lifecycle = [(n, "reauthorizationRequired") for n in REAUTHORIZED]
    lifecycle += [(REMOVED, "subscriptionRemoved"), (MISSED, "missed")]
    for n, event in lifecycle:
        answer = await bridge.post(bridge.lifecycle(subscriptions[n], event))
        assert answer.status_code == 202
    delivered = time.monotonic()

    async def faults_served() -> bool:
        hanging = [
            c for c in nexudus.calls if c.path.startswith(CALENDARS) and not c.status
        ]
        return not (nexudus.pending_faults() or graph.pending_faults() or hanging)

    await eventually(faults_served, 30.0, "every fault served")
    injected["authority_5xx"] = await outage
    items = await converged(bridge, rooms, within=30.0)
    converge_seconds = time.monotonic() - delivered
    tally = await sender.tally()
    await sender.aclose()

    attempts = [item["attempts"] for item in items if item["kind"] != "reconcile"]
    figures.update(
        **injected,
        **tally.figures(),
        lifecycle_events=len(lifecycle),
        extra_attempts=sum(attempts) - len(attempts),
        most_attempts=max(attempts),
        converged_seconds=converge_seconds,
    )
    assert tally.lost == 0
    assert tally.not_done == 0
    assert tally.acted_on == tally.sent
    # Graph holds the connections' subscriptions, and only those.
    current = {(await bridge.connection(room["id"])).subscription_id for room in rooms}
    assert set(graph.subscriptions) == current
    assert removed not in current
    patched = Counter(
        call.path.rsplit("/", 1)[-1]
        for call in graph.calls[graph_since:]
        if call.method == "PATCH" and call.status == 200
    )
    assert sorted(patched) == sorted(rooms[n]["subscription_id"] for n in REAUTHORIZED)
    assert sum(attempts) > len(attempts), "no fault reached an action"
