"""The starlette application: routes, and the resources that live as long as it does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware

from bridge.settings import Settings
from bridge.store.writer import InboxWriter
from bridge.sync.upstreams import Upstreams
from bridge.sync.worker import Worker
from bridge.web import admin, health, notifications
from bridge.web.body_deadline import BodyDeadline
from bridge.web.request_id import RequestIdMiddleware


def create_app(
    settings: Settings,
    engine: Engine,
    upstreams: Upstreams | None = None,
    *,
    worker: Worker | None = None,
) -> Starlette:
    """The web app over `engine`, which the caller owns (and disposes of).

    The app owns `upstreams` (built from the settings when not given) and closes
    them when it stops. With a `worker`, the app runs it for as long as it runs
    itself (the embedded single-machine mode) and wakes it whenever a notification
    is stored.
    """
    writer = InboxWriter(engine, on_stored=worker.wake if worker else None)
    clients = upstreams or Upstreams.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        running = asyncio.create_task(worker.run(), name="worker") if worker else None
        try:
            yield
        finally:
            await writer.close()
            if worker is not None and running is not None:
                worker.stop()
                await running
            await clients.aclose()

    routes = [
        *notifications.routes(writer, settings.max_body_bytes),
        *health.readiness_routes(settings, engine),
        *admin.admin_routes(settings, engine, clients, worker.wake if worker else None),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(BodyDeadline, seconds=settings.body_timeout_seconds),
        ],
    )
