"""The worker in-process: the bridge app with its embedded worker, the fake Nexudus
and the fake Graph, all wired through httpx ASGI transports (no sockets).

Graph's handshake and deliveries reach the bridge app; the worker's calls reach the
fakes. The Nexudus client paces on a virtual clock, so its limits cost no real time.
The worker's own clock is real time plus an offset that tests move forward
(`Bridge.clock.advance`), so a retry scheduled minutes ahead falls due at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from starlette.applications import Starlette

from bridge.app import create_app
from bridge.graph.subscriptions import GraphClient
from bridge.nexudus import NexudusClient
from bridge.settings import Settings
from bridge.store import connections as store
from bridge.store import db
from bridge.store.connections import Connection
from bridge.store.schema import inbox, utcnow
from bridge.sync.connect import ConnectRequest, connect
from bridge.sync.upstreams import Upstreams
from bridge.sync.worker import Worker
from tests.fakes.graph import FakeGraph, StaticTokens
from tests.fakes.nexudus import PASSWORD, USERNAME, FakeNexudus, VirtualClock

BRIDGE = "http://127.0.0.1:8000"
GRAPH = "https://graph.test/v1.0"
NEXUDUS = "https://nexudus.test"
USER = "adele@contoso.test"


def worker_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "BRIDGE_PUBLIC_URL": BRIDGE,
        "GRAPH_TENANT_ID": "tenant",
        "GRAPH_CLIENT_ID": "client",
        "GRAPH_CLIENT_SECRET": "secret",
        "GRAPH_API_URL": GRAPH,
        "NEXUDUS_API_URL": NEXUDUS,
        "NEXUDUS_USERNAME": USERNAME,
        "NEXUDUS_PASSWORD": PASSWORD,
        "BRIDGE_RETRY_BASE_SECONDS": 0.05,
        "BRIDGE_RETRY_MAX_SECONDS": 0.2,
        "BRIDGE_LEASE_SECONDS": 30,
    }
    values.update(overrides)
    return Settings(**values)


class WorkerClock:
    """The worker's clock: real UTC time plus an offset that only moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class _Loss:
    method: str
    path: str
    remaining: int


class LossyTransport(httpx.AsyncBaseTransport):
    """In-process transport to an ASGI app that can lose answers on the way back.

    A lost answer's request was served in full (a write was applied); the client
    sees a read timeout, as when a slow answer outlives the client's patience.
    """

    def __init__(self, app: Starlette) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._losses: list[_Loss] = []
        self.lost: list[str] = []

    def lose_next(self, n: int = 1, *, method: str, path: str) -> None:
        """Lose the answers to the next `n` requests with `method` under `path`
        that succeed (those that fail have nothing to hide)."""
        self._losses.append(_Loss(method, path, n))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        for loss in self._losses:
            if (
                response.is_success
                and loss.remaining > 0
                and request.method == loss.method
                and request.url.path.startswith(loss.path)
            ):
                loss.remaining -= 1
                await response.aread()
                self.lost.append(f"{request.method} {request.url.path}")
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Bridge:
    """A running bridge (web + worker) and the fakes around it."""

    settings: Settings
    engine: Engine
    app: Starlette
    worker: Worker
    graph: FakeGraph
    nexudus: FakeNexudus
    upstreams: Upstreams
    web: httpx.AsyncClient
    clock: WorkerClock = field(default_factory=WorkerClock)
    nexudus_wire: LossyTransport | None = None
    leave_lifespan: Callable[[], Awaitable[None]] | None = None

    async def stop(self) -> None:
        """Leave the app's lifespan now (as on SIGTERM): the worker winds down."""
        assert self.leave_lifespan is not None
        await self.leave_lifespan()

    @asynccontextmanager
    async def another_worker(self, grace_seconds: float = 2.0) -> AsyncIterator[Worker]:
        """A second worker over the same database and fakes, with its own clients."""
        async with AsyncExitStack() as stack:
            nexudus_http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=self.nexudus.app),
                    base_url=NEXUDUS,
                )
            )
            graph_http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=self.graph.app), base_url=GRAPH
                )
            )
            upstreams = await stack.enter_async_context(
                _upstreams(self.settings, self.nexudus, nexudus_http, graph_http)
            )
            worker = _worker(
                self.engine, self.settings, upstreams, self.clock, grace_seconds
            )
            running = asyncio.create_task(worker.run(), name="another worker")
            try:
                yield worker
            finally:
                worker.stop()
                await running

    async def connect(self, resource_id: int = 7, **options: Any) -> Connection:
        request = ConnectRequest(resource_id=resource_id, user_id=USER, **options)
        connected = await connect(
            self.engine,
            self.upstreams,
            request,
            lifetime=timedelta(minutes=self.settings.subscription_lifetime_minutes),
        )
        return connected.connection

    def connection(self, connection_id: int) -> Connection:
        with db.reading(self.engine) as conn:
            found = store.get(conn, connection_id)
        assert found is not None
        return found

    def items(self) -> list[dict[str, Any]]:
        with db.reading(self.engine) as conn:
            rows = conn.execute(select(inbox).order_by(inbox.c.id)).mappings()
            return [dict(row) for row in rows]

    def writes(self) -> list[str]:
        """The Nexudus writes so far, as "METHOD path"."""
        return [
            f"{call.method} {call.path}"
            for call in self.nexudus.api_calls
            if call.method in ("POST", "PUT", "DELETE")
        ]

    async def settled(self, within: float = 10.0) -> None:
        """Wait until no inbox item is pending or processing."""
        busy = ("pending", "processing")
        await eventually(
            lambda: all(item["state"] not in busy for item in self.items()), within
        )

    async def until(self, check: Callable[[], bool], within: float = 10.0) -> None:
        await eventually(check, within)


# -- looking at a connection ---------------------------------------------------------


def items_of(bridge: Bridge, connection: Connection) -> list[dict[str, Any]]:
    return [i for i in bridge.items() if i["connection_id"] == connection.id]


def only_item(bridge: Bridge, connection: Connection) -> dict[str, Any]:
    [item] = items_of(bridge, connection)
    return item


def waiting_after(
    bridge: Bridge, connection: Connection, attempts: int
) -> Callable[[], bool]:
    """The connection's item failed try number `attempts` and waits for the next."""

    def check() -> bool:
        item = only_item(bridge, connection)
        return bool(item["state"] == "pending" and item["attempts"] == attempts)

    return check


def set_connection(bridge: Bridge, connection: Connection, **values: Any) -> None:
    with db.writing(bridge.engine) as conn:
        store.update(conn, connection.id, datetime.now(UTC), **values)


def aliases(bridge: Bridge, connection: Connection) -> list[str]:
    with db.reading(bridge.engine) as conn:
        return store.aliases(conn, connection.id)


def stored_expiry(connection: Connection) -> datetime:
    assert connection.subscription_expires_at is not None
    return connection.subscription_expires_at


POLL = 0.02


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    """Return once `check()` holds; fail after `within` seconds."""
    for _ in range(int(within / POLL)):
        if check():
            return
        await asyncio.sleep(POLL)
    assert check(), f"still not true after {within} s"


@pytest.fixture
async def bridge(database_url: str) -> AsyncIterator[Bridge]:
    async with running_bridge(database_url) as running:
        yield running


def running_bridge(
    database_url: str, *, grace_seconds: float = 2.0, **overrides: Any
) -> _Running:
    """A bridge with `overrides` of the settings (by variable name); without a
    Nexudus username or password its worker has no Nexudus client."""
    return _Running(worker_settings(database_url, **overrides), grace_seconds)


def _upstreams(
    settings: Settings,
    nexudus: FakeNexudus,
    nexudus_http: httpx.AsyncClient,
    graph_http: httpx.AsyncClient,
) -> Upstreams:
    client = None
    if settings.nexudus_username and settings.nexudus_password:
        client = NexudusClient(
            NEXUDUS,
            settings.nexudus_username,
            settings.nexudus_password.get_secret_value(),
            http=nexudus_http,
            clock=nexudus.clock,
        )
    return Upstreams(
        settings, client, GraphClient(GRAPH, StaticTokens(), http=graph_http), None
    )


def _worker(
    engine: Engine,
    settings: Settings,
    upstreams: Upstreams,
    clock: WorkerClock,
    grace_seconds: float,
) -> Worker:
    return Worker(
        engine,
        settings,
        upstreams,
        poll_seconds=0.05,
        housekeeping_seconds=0.2,
        grace_seconds=grace_seconds,
        clock=clock,
    )


class _Running:
    def __init__(self, settings: Settings, grace_seconds: float = 2.0) -> None:
        self.settings = settings
        self.grace_seconds = grace_seconds
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Bridge:
        stack = self._stack
        settings = self.settings
        engine = db.create(settings.database_url)
        stack.callback(engine.dispose)

        nexudus = FakeNexudus(clock=VirtualClock())
        wire = LossyTransport(nexudus.app)
        nexudus_http = await stack.enter_async_context(
            httpx.AsyncClient(transport=wire, base_url=NEXUDUS)
        )
        graph = FakeGraph()
        graph.add_mailbox(USER)
        graph_http = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=graph.app), base_url=GRAPH
            )
        )
        upstreams = _upstreams(settings, nexudus, nexudus_http, graph_http)
        clock = WorkerClock()
        worker = _worker(engine, settings, upstreams, clock, self.grace_seconds)
        app = create_app(settings, engine, upstreams, worker=worker)
        # Its own stack, so that a test can leave the lifespan before the end.
        lifespan = AsyncExitStack()
        stack.push_async_callback(lifespan.aclose)
        await lifespan.enter_async_context(app.router.lifespan_context(app))
        web = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BRIDGE)
        )
        # Graph's handshakes and deliveries go to the bridge app.
        graph.handshake_client = web
        return Bridge(
            settings,
            engine,
            app,
            worker,
            graph,
            nexudus,
            upstreams,
            web,
            clock=clock,
            nexudus_wire=wire,
            leave_lifespan=lifespan.aclose,
        )

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
