"""The starlette application: routes, and the resources that live as long as it does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Engine
from starlette.applications import Starlette

from bridge.settings import Settings
from bridge.store.writer import InboxWriter
from bridge.web import health, notifications


def create_app(settings: Settings, engine: Engine) -> Starlette:
    """The web app over `engine`, which the caller owns (and disposes of)."""
    writer = InboxWriter(engine)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await writer.close()

    routes = [
        *notifications.routes(writer, settings.max_body_bytes),
        *health.readiness_routes(settings, engine),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
