"""Graph's side of the traffic, counted: every item sent, acknowledged or not, and
what the bridge made of it.

Each change notification item names an event of its own, so each is a distinct
inbox item (found by its `resource`). A body answered anything but 202 is kept and
delivered again later, as Graph retries; a body answered 202 must never be lost:
each of its items must be in the inbox and, once the service has settled, done.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.harness import Bridge
from tests.fakes.graph_outbound import change_notification
from tests.fakes.graph_state import FakeSubscription

# A request that takes longer is Graph giving up on it (it waits 10 s at most).
GRAPH_TIMEOUT = 10.0


@dataclass
class Body:
    payload: dict[str, Any]
    resources: list[str]
    outcomes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Tally:
    """What became of the items sent, once the service has settled."""

    sent: int
    acknowledged_first_time: int
    redelivered: int
    acknowledged: int
    stored: int
    acted_on: int
    lost: int
    not_done: int

    def figures(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged_first_time,
            "redelivered": self.redelivered,
            "acted_on": self.acted_on,
            "lost": self.lost,
        }


class Graph:
    """Delivers change notifications for `subscriptions` to the bridge's `urls`,
    round robin, and remembers what happened to each body."""

    def __init__(
        self,
        bridge: Bridge,
        subscriptions: Sequence[FakeSubscription],
        urls: Sequence[str],
        *,
        concurrency: int = 8,
    ) -> None:
        self.bridge = bridge
        self.subscriptions = list(subscriptions)
        self.urls = list(urls)
        self.http = httpx.AsyncClient(
            timeout=GRAPH_TIMEOUT,
            limits=httpx.Limits(max_connections=concurrency * len(self.urls)),
        )
        self.concurrency = concurrency
        self.bodies: list[Body] = []
        self.statuses: Counter[str] = Counter()  # "202", "503", "ConnectError"...
        self.in_flight = 0
        # What the test says is going on; each delivery is logged with the phase
        # it started in, and its outcome.
        self.phase = ""
        self.log: list[tuple[str, str]] = []
        self._turn = itertools.count()
        self._subscription = itertools.cycle(range(len(self.subscriptions)))

    @classmethod
    def to_rooms(
        cls,
        bridge: Bridge,
        rooms: Sequence[dict[str, Any]],
        urls: Sequence[str],
        **options: Any,
    ) -> Graph:
        """Deliveries for the subscriptions of connected `rooms`."""
        subscriptions = [bridge.subscription(room["subscription_id"]) for room in rooms]
        return cls(bridge, subscriptions, urls, **options)

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- what is sent ---------------------------------------------------------------

    def body(self, items: int = 2) -> Body:
        """A new collection of `items` changes, each to an event of its own."""
        tenant = self.bridge.fakes.graph.tenant_id
        payload_items = []
        for _ in range(items):
            subscription = self.subscriptions[next(self._subscription)]
            event = uuid.uuid4().hex
            payload_items.append(
                change_notification(subscription, tenant, "updated", event)
            )
        body = Body({"value": payload_items}, [i["resource"] for i in payload_items])
        self.bodies.append(body)
        return body

    async def deliver(self, body: Body, url: str | None = None) -> str:
        """POST `body` once; the outcome: the status, or the transport error."""
        if url is None:
            url = self.urls[next(self._turn) % len(self.urls)]
        phase = self.phase
        self.in_flight += 1
        try:
            answer = await self.http.post(
                f"{url}/graph/notifications", json=body.payload
            )
            outcome = str(answer.status_code)
        except httpx.TransportError as error:
            outcome = type(error).__name__
        finally:
            self.in_flight -= 1
        body.outcomes.append(outcome)
        self.statuses[outcome] += 1
        self.log.append((phase, outcome))
        return outcome

    def outcomes(self, phase: str) -> Counter[str]:
        """The outcomes of the deliveries started in `phase`."""
        return Counter(outcome for started, outcome in self.log if started == phase)

    async def burst(
        self, until: asyncio.Event, *, items: int = 2, pause: float = 0.01
    ) -> None:
        """Deliver new bodies from `concurrency` lanes until `until` is set."""

        async def lane() -> None:
            while not until.is_set():
                outcome = await self.deliver(self.body(items))
                # Graph backs off from an endpoint that does not answer.
                await asyncio.sleep(pause if outcome == "202" else 0.1)

        await asyncio.gather(*(lane() for _ in range(self.concurrency)))

    async def redeliver(self, within: float = 30.0) -> int:
        """Deliver every body not yet acknowledged again until it is, as Graph's
        retries do; how many bodies needed it."""
        waiting = [body for body in self.bodies if not acknowledged(body)]
        deadline = time.monotonic() + within
        for body in waiting:
            while await self.deliver(body) != "202":
                assert time.monotonic() < deadline, f"never acknowledged: {body}"
                await asyncio.sleep(0.1)
        return len(waiting)

    # -- what became of it -------------------------------------------------------------

    async def tally(self) -> Tally:
        """Every body's items against the inbox (call once the service settled)."""
        states = {
            item["resource"]: item["state"]
            for item in await self.bridge.items()
            if item["kind"] == "change"
        }
        resources = [r for body in self.bodies for r in body.resources]
        acked = [
            r for body in self.bodies if acknowledged(body) for r in body.resources
        ]
        first = [
            r
            for body in self.bodies
            if body.outcomes[:1] == ["202"]
            for r in body.resources
        ]
        return Tally(
            sent=len(resources),
            acknowledged_first_time=len(first),
            redelivered=len(resources) - len(first),
            acknowledged=len(acked),
            stored=sum(1 for r in resources if r in states),
            acted_on=sum(1 for r in acked if states.get(r) == "done"),
            lost=sum(1 for r in acked if states.get(r) != "done"),
            not_done=sum(1 for r in resources if states.get(r) != "done"),
        )

    def refused(self, allowed: Callable[[str], bool]) -> Counter[str]:
        """Outcomes that `allowed` does not accept, counted."""
        return Counter(
            {outcome: n for outcome, n in self.statuses.items() if not allowed(outcome)}
        )


def acknowledged(body: Body) -> bool:
    return "202" in body.outcomes


def not_an_answer(outcome: str) -> bool:
    """A transport failure: no status came back (the process was gone or went)."""
    return not outcome.isdigit()


class RawRequest:
    """A POST over a connection of its own, written by hand, so that the test says
    when (and whether) the rest of its body follows."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rest: bytes
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._rest = rest

    @classmethod
    async def start(
        cls, url: str, body: bytes, *, sent: int, path: str = "/graph/notifications"
    ) -> RawRequest:
        """Send the head and the first `sent` bytes of `body`."""
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body[:sent])
        await writer.drain()
        return cls(reader, writer, body[sent:])

    async def trickle(self, size: int) -> None:
        """Send `size` more bytes of the body."""
        chunk, self._rest = self._rest[:size], self._rest[size:]
        self._writer.write(chunk)
        await self._writer.drain()

    async def finish(self) -> None:
        await self.trickle(len(self._rest))

    async def status(self, within: float = GRAPH_TIMEOUT) -> str:
        """The answer's status, or "closed" when the connection ended without one."""
        try:
            async with asyncio.timeout(within):
                line = await self._reader.readline()
        finally:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        parts = line.split()
        return parts[1].decode() if len(parts) > 1 else "closed"
