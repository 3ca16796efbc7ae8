"""The starlette application: routes, and the resources that live as long as it does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from bridge.settings import Settings
from bridge.sync.upstreams import Upstreams
from bridge.sync.worker import Worker
from bridge.web import admin, health, notifications
from bridge.web.body_deadline import BodyDeadline
from bridge.web.ingest import IngestProcess
from bridge.web.request_id import RequestIdMiddleware


class BridgeApp(Starlette):
    """Starlette, with a POST to Graph's URLs taken straight to its endpoint.

    Those are nearly all of the traffic, and starlette's middleware stack and router
    cost about as much as the endpoint itself (docs/benchmarks.md); the endpoint does
    what the middleware would (web/notifications.py). Every other request, and any
    other method on those URLs, goes through the full app.
    """

    def __init__(self, graph: notifications.NotificationEndpoint, **kwargs: Any):
        super().__init__(**kwargs)
        self._graph = graph

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in notifications.PATHS
        ):
            await self._graph(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    engine: Engine,
    upstreams: Upstreams | None = None,
    *,
    worker: Worker | None = None,
) -> BridgeApp:
    """The web app over `engine`, which the caller owns (and disposes of).

    The app owns `upstreams` (built from the settings when not given) and closes
    them when it stops. With a `worker`, the app runs it for as long as it runs
    itself (the embedded single-machine mode) and wakes it whenever a notification
    is stored.
    """
    ingest = IngestProcess.for_settings(
        settings,
        engine.url.render_as_string(hide_password=False),
        on_stored=worker.wake if worker else None,
    )
    clients = upstreams or Upstreams.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        running = asyncio.create_task(worker.run(), name="worker") if worker else None
        try:
            yield
        finally:
            await ingest.close()
            if worker is not None and running is not None:
                worker.stop()
                await running
            await clients.aclose()

    graph = notifications.NotificationEndpoint(
        ingest, settings.max_body_bytes, settings.body_timeout_seconds
    )
    routes = [
        *notifications.routes(graph),
        *health.readiness_routes(settings, engine),
        *admin.admin_routes(settings, engine, clients, worker.wake if worker else None),
    ]
    return BridgeApp(
        graph,
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(BodyDeadline, seconds=settings.body_timeout_seconds),
        ],
    )
