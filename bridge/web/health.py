"""`/healthz` (liveness, no I/O), `/readyz` (readiness, named checks), `/metrics`."""

from __future__ import annotations

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import Engine, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.settings import Capability, Settings
from bridge.store import migrate


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def database_check(engine: Engine) -> str:
    """'ok', or what is wrong with the database, in one line."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        if not migrate.is_up_to_date(engine):
            return "schema is not up to date: run `bridge migrate`"
    except Exception as error:
        return f"unreachable: {type(error).__name__}"
    return "ok"


def configuration_check(settings: Settings, capability: Capability) -> str:
    missing = settings.missing(capability)
    return f"missing {', '.join(missing)}" if missing else "ok"


def readiness_routes(settings: Settings, engine: Engine) -> list[Route]:
    async def readyz(_request: Request) -> Response:
        checks = {
            "database": await anyio.to_thread.run_sync(database_check, engine),
            "graph": configuration_check(settings, "graph"),
            "nexudus": configuration_check(settings, "nexudus"),
            "public_url": configuration_check(settings, "public_url"),
        }
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
