"""kill -9 of web and worker processes in the middle of a burst of notifications:
nothing acknowledged is lost.

Graph keeps delivering throughout; whatever was not answered 202 is delivered again
afterwards, as Graph retries. Every item answered 202 must be in the inbox and acted
on, and every record must end true, once. (tests/e2e/test_process.py kills the
single-machine process while a create hangs; this kills every kind of process, twice,
and counts every item.)
"""

from __future__ import annotations

import asyncio
import signal
import time

from tests.e2e.harness import Bridge
from tests.reliability.checks import connect_rooms, converged, held_by, leases, tamper
from tests.reliability.conftest import Figures, Service
from tests.reliability.traffic import Graph, not_an_answer

ROOMS = 6
# Each round: the processes killed together, then those started again.
ROUNDS = {
    # The one process (web and embedded worker), killed twice.
    "sqlite": [(["serve"], ["serve"]), (["serve"], ["serve"])],
    # A web process and a worker, then the other two; worker-2 stays dead, so its
    # leases must run out and worker-1 take its items over.
    "postgresql": [
        (["web-1", "worker-1"], ["web-1"]),
        (["web-2", "worker-2"], ["web-2", "worker-1"]),
    ],
}


async def busy(
    bridge: Bridge, graph: Graph, service: Service, victims: list[str]
) -> int:
    """Wait until requests are in flight and a victim holds leased items (acted on
    right now); how many items the victims hold."""
    pids = [service.fleet.processes[name].pid for name in victims]
    deadline = time.monotonic() + 15.0
    while True:
        holders = await leases(bridge)
        held = sum(held_by(holders, pid) for pid in pids)
        if held and graph.in_flight:
            return held
        assert time.monotonic() < deadline, "no work in flight to kill"
        await asyncio.sleep(0.005)


async def test_kill_9_mid_burst_loses_nothing_acknowledged(
    bridge: Bridge, service: Service, figures: Figures
) -> None:
    await service.start()
    rooms = await connect_rooms(bridge, ROOMS)
    nexudus = bridge.fakes.nexudus
    nexudus.latency = 0.05  # actions take a while: some are always in flight
    graph = Graph.to_rooms(bridge, rooms, service.urls)
    stop = asyncio.Event()
    burst = asyncio.create_task(graph.burst(stop))
    killed, leased_at_kill = 0, 0
    try:
        for victims, revived in ROUNDS[service.database]:
            tamper(bridge, rooms)
            leased_at_kill += await busy(bridge, graph, service, victims)
            service.fleet.kill(*victims)
            for name in victims:
                assert await service.fleet.exited(name) == -signal.SIGKILL
            killed += len(victims)
            await asyncio.sleep(0.5)  # Graph keeps delivering to what is left
            await service.start(*revived)
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await burst
    bodies_refused = sum(1 for body in graph.bodies if body.outcomes != ["202"])

    started = time.monotonic()
    redelivered = await graph.redeliver()
    items = await converged(bridge, rooms)
    converge_seconds = time.monotonic() - started
    tally = await graph.tally()
    await graph.aclose()

    # Claimed again: the killed workers' items, once their leases ran out.
    claimed_again = sum(1 for item in items if item["attempts"] > 1)
    figures.update(
        processes_killed=killed,
        items_leased_at_kill=leased_at_kill,
        items_claimed_again=claimed_again,
        **tally.figures(),
        bodies=len(graph.bodies),
        bodies_redelivered=redelivered,
        converged_seconds=converge_seconds,
    )
    assert bodies_refused > 0, "the kills missed the burst"
    assert claimed_again > 0, "no leased item outlived its worker"
    # A killed process answers nothing: Graph sees no status, never a 5xx.
    assert graph.refused(lambda o: o == "202" or not_an_answer(o)) == {}
    assert tally.lost == 0
    assert tally.not_done == 0
    assert tally.acted_on == tally.acknowledged == tally.sent
