"""The database goes away under load: notifications are answered 503 (never 202)
while it is gone, and the service recovers by itself when it returns.

PostgreSQL's: the web and worker processes reach the server through a proxy that the
test cuts (tests/reliability/proxy.py), first as a server that has gone (connections
refused), then as one that accepts connections and never answers (only the
connect timeout in bridge/store/db.py ends the wait). SQLite is a file on the
machine itself: it does not go away while the process runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from bridge.store import db
from tests.e2e.fleet import Fleet, paas_url
from tests.e2e.harness import Bridge
from tests.reliability.checks import connect_rooms, converged
from tests.reliability.conftest import Figures
from tests.reliability.proxy import Proxy
from tests.reliability.traffic import Graph

ROOMS = 3
SECONDS_DOWN = 1.5
# The connect timeout, and slack for a loaded machine.
SILENT_ANSWER_WITHIN = db.CONNECT_TIMEOUT_SECONDS + 3.0


pytestmark = pytest.mark.usefixtures("on_postgresql")


@pytest.fixture
async def proxy(bridge: Bridge) -> AsyncIterator[Proxy]:
    server = make_url(bridge.database_url)
    running = Proxy(server.host or "127.0.0.1", server.port or 5432)
    port = await running.start()
    # The bridge's processes reach the database through the proxy; the test's own
    # checks (bridge.engine) go to the server directly.
    bridge.env["DATABASE_URL"] = paas_url(
        server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    )
    try:
        yield running
    finally:
        await running.close()


async def readiness(bridge: Bridge, url: str) -> tuple[int, str]:
    answer = await bridge.http.get(f"{url}/readyz", timeout=15.0)
    return answer.status_code, answer.json()["checks"]["database"]


async def test_database_down_is_503_never_202_and_the_service_recovers(
    bridge: Bridge, fleet: Fleet, proxy: Proxy, figures: Figures
) -> None:
    url = await fleet.web("web-1", bridge.port)
    await fleet.worker("worker-1")
    rooms = await connect_rooms(bridge, ROOMS)
    graph = Graph.to_rooms(bridge, rooms, [url])

    # Graph delivers; the server goes away in the middle of it.
    stop = asyncio.Event()
    graph.phase = "up"
    burst = asyncio.create_task(graph.burst(stop))
    await asyncio.sleep(0.5)
    proxy.set("down")
    graph.phase = "down"
    down_at = time.monotonic()
    await asyncio.sleep(SECONDS_DOWN)
    ready_down = await readiness(bridge, url)
    stop.set()
    await burst

    # A server that accepts connections and never answers.
    proxy.set("silent")
    graph.phase = "silent"
    started = time.monotonic()
    silent_outcome, ready_silent = await asyncio.gather(
        graph.deliver(graph.body()), readiness(bridge, url)
    )
    silent_seconds = time.monotonic() - started
    processes_alive = all(fleet.running(name) for name in ("web-1", "worker-1"))

    # The server is back: the first 202, then the rest of what Graph retries.
    proxy.set("up")
    graph.phase = "back"
    restored = time.monotonic()
    while await graph.deliver(graph.body()) != "202":
        assert time.monotonic() - restored < 30, "no 202 within 30 s of the return"
        await asyncio.sleep(0.05)
    recovered_seconds = time.monotonic() - restored
    ready_back = await readiness(bridge, url)
    outage_seconds = restored - down_at
    redelivered = await graph.redeliver()
    await converged(bridge, rooms)
    converged_seconds = time.monotonic() - restored
    tally = await graph.tally()
    await graph.aclose()

    down = graph.outcomes("down")
    figures.update(
        **tally.figures(),
        answered_503_while_down=down["503"],
        answered_202_while_down=down["202"],
        outage_seconds=outage_seconds,
        silent_server_answer_seconds=silent_seconds,
        recovered_seconds=recovered_seconds,
        bodies_redelivered=redelivered,
        converged_seconds=converged_seconds,
    )
    assert graph.outcomes("up")["202"] > 0
    # Every delivery begun while the server was gone: 503, so Graph retries it.
    assert down["503"] > 0
    assert set(down) == {"503"}, down
    assert ready_down == (503, "unreachable: OperationalError")
    assert silent_outcome == "503"
    assert ready_silent == (503, "unreachable: OperationalError")
    assert silent_seconds < SILENT_ANSWER_WITHIN
    assert processes_alive, fleet.logs()
    assert ready_back == (200, "ok")
    assert tally.lost == 0
    assert tally.not_done == 0
    assert tally.acted_on == tally.sent
    await fleet.stop("web-1", "worker-1")


async def test_requests_waiting_on_a_silent_database_are_all_answered_503_in_time(
    bridge: Bridge, fleet: Fleet, proxy: Proxy
) -> None:
    # A short connect timeout (the URL's own) keeps the test short; the answer
    # should come within about two of them, however many requests wait.
    bridge.env["DATABASE_URL"] += "?connect_timeout=2"
    url = await fleet.web("web-1", bridge.port)
    rooms = await connect_rooms(bridge, 1)
    graph = Graph.to_rooms(bridge, rooms, [url])
    graph.http.timeout = httpx.Timeout(6.0)
    proxy.set("silent")
    outcomes = await asyncio.gather(*(graph.deliver(graph.body()) for _ in range(4)))
    await graph.aclose()
    assert outcomes == ["503"] * 4
