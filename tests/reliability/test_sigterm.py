"""SIGTERM under load: requests in flight complete, actions in flight finish or are
released, and every process exits within 25 s (the platform's limit before kill -9).

Graph keeps delivering while the processes stop; requests whose body is still on
its way when the signal comes are finished afterwards and must be answered 202; a
client that never finishes its body is answered 408 at the body deadline rather
than holding the shutdown. (tests/e2e/test_process.py stops `bridge serve` while an
action hangs; this stops every process of the deployment under load.)
"""

from __future__ import annotations

import asyncio
import json
import time

from tests.e2e.harness import Bridge
from tests.reliability.checks import connect_rooms, converged, leases, tamper
from tests.reliability.conftest import Figures, Service
from tests.reliability.traffic import Graph, RawRequest, not_an_answer

ROOMS = 4
IN_FLIGHT_PER_WEB = 3
EXIT_LIMIT = 25.0


async def test_sigterm_under_load_completes_in_flight_work_and_exits_in_time(
    bridge: Bridge, service: Service, figures: Figures
) -> None:
    await service.start()
    rooms = await connect_rooms(bridge, ROOMS)
    nexudus = bridge.fakes.nexudus
    graph = Graph.to_rooms(bridge, rooms, service.urls)
    stop = asyncio.Event()
    burst = asyncio.create_task(graph.burst(stop))
    # Bodies half sent to every web process, and one that will never be finished.
    in_flight = []
    for url in service.urls:
        for _ in range(IN_FLIGHT_PER_WEB):
            body = graph.body()
            raw = json.dumps(body.payload).encode()
            in_flight.append(
                (body, await RawRequest.start(url, raw, sent=len(raw) // 2))
            )
    stalled = await RawRequest.start(service.urls[0], b'{"value": []}', sent=5)
    # Actions in flight too: every record needs a write, and Nexudus is slow.
    tamper(bridge, rooms)
    nexudus.latency = 0.3
    deadline = time.monotonic() + 15.0
    while not await leases(bridge) or not graph.in_flight:
        assert time.monotonic() < deadline, "no work in flight"
        await asyncio.sleep(0.01)
    leased = sum((await leases(bridge)).values())

    exits = {
        name: asyncio.create_task(service.fleet.terminate(name))
        for name in service.names
    }
    await asyncio.sleep(0.3)  # the signal is taken; then the bodies arrive
    for _, request in in_flight:
        await request.finish()
    for body, request in in_flight:
        body.outcomes.append(await request.status())
    stalled_status = await stalled.status()
    exited = {name: await task for name, task in exits.items()}
    stop.set()
    await burst
    left = await bridge.items()

    nexudus.latency = 0.0
    await service.start()
    started = time.monotonic()
    await graph.redeliver()
    await converged(bridge, rooms)
    converge_seconds = time.monotonic() - started
    tally = await graph.tally()
    await graph.aclose()

    figures.update(
        in_flight_requests=len(in_flight),
        in_flight_answered_202=sum(b.outcomes == ["202"] for b, _ in in_flight),
        items_leased_at_signal=leased,
        **{f"exit_seconds_{name}": seconds for name, (_, seconds) in exited.items()},
        **tally.figures(),
        converged_seconds=converge_seconds,
    )
    for name, (status, seconds) in exited.items():
        assert status == 0, f"{name} exited with {status}:\n{service.fleet.log(name)}"
        assert seconds < EXIT_LIMIT, name
    assert [body.outcomes for body, _ in in_flight] == [["202"]] * len(in_flight)
    assert stalled_status == "408"
    # Leases were given back or settled: nothing waits for a lease to run out.
    assert {item["state"] for item in left} <= {"pending", "done"}
    assert graph.refused(lambda o: o == "202" or not_an_answer(o)) == {}
    assert tally.lost == 0
    assert tally.not_done == 0
    for name in service.names:
        assert "Traceback" not in service.fleet.log(name), service.fleet.log(name)
    for name in service.workers or service.webs:
        assert service.fleet.logged(name, "worker stopped"), name
