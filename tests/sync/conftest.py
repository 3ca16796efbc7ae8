"""The worker in-process: the bridge app with its embedded worker, the fake Nexudus
and the fake Graph, all wired through httpx ASGI transports (no sockets).

Graph's handshake and deliveries reach the bridge app; the worker's calls reach the
fakes. The Nexudus client paces on a virtual clock, so its limits cost no real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
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
from bridge.store import db, migrate
from bridge.store.connections import Connection
from bridge.store.schema import inbox
from bridge.sync.connect import ConnectRequest, connect
from bridge.sync.upstreams import Upstreams
from bridge.sync.worker import Worker
from tests.fakes.graph import FakeGraph, StaticTokens
from tests.fakes.nexudus import PASSWORD, USERNAME, FakeNexudus, VirtualClock

BRIDGE = "http://127.0.0.1:8000"
GRAPH = "https://graph.test/v1.0"
NEXUDUS = "https://nexudus.test"
USER = "adele@contoso.test"


def worker_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bridge.db'}",
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

    async def connect(self, resource_id: int = 7, **options: Any) -> Connection:
        request = ConnectRequest(resource_id=resource_id, user_id=USER, **options)
        return await connect(
            self.engine,
            self.upstreams,
            request,
            lifetime=timedelta(minutes=self.settings.subscription_lifetime_minutes),
        )

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


POLL = 0.02


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    """Return once `check()` holds; fail after `within` seconds."""
    for _ in range(int(within / POLL)):
        if check():
            return
        await asyncio.sleep(POLL)
    assert check(), f"still not true after {within} s"


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    async with running_bridge(tmp_path) as running:
        yield running


def running_bridge(tmp_path: Path, **overrides: Any) -> _Running:
    return _Running(worker_settings(tmp_path, **overrides))


class _Running:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Bridge:
        stack = self._stack
        settings = self.settings
        engine = db.create(settings.database_url)
        stack.callback(engine.dispose)
        migrate.upgrade(engine)

        nexudus = FakeNexudus(clock=VirtualClock())
        nexudus_http = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=nexudus.app), base_url=NEXUDUS
            )
        )
        graph = FakeGraph()
        graph.add_mailbox(USER)
        graph_http = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=graph.app), base_url=GRAPH
            )
        )
        upstreams = Upstreams(
            settings,
            NexudusClient(
                NEXUDUS,
                USERNAME,
                PASSWORD,
                http=nexudus_http,
                clock=nexudus.clock,
            ),
            GraphClient(GRAPH, StaticTokens(), http=graph_http),
            None,
        )
        worker = Worker(
            engine,
            settings,
            upstreams,
            poll_seconds=0.05,
            housekeeping_seconds=0.2,
            grace_seconds=2.0,
        )
        app = create_app(settings, engine, upstreams, worker=worker)
        await stack.enter_async_context(app.router.lifespan_context(app))
        web = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BRIDGE)
        )
        # Graph's handshakes and deliveries go to the bridge app.
        graph.handshake_client = web
        return Bridge(settings, engine, app, worker, graph, nexudus, upstreams, web)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
