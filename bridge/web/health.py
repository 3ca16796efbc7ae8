"""`/healthz` (liveness, no I/O), `/readyz` (readiness, named checks), `/metrics`.

`/metrics` is open, as the contract has it (only `/admin` takes a token): its
series carry counts, states and timings, never an id, an address or a secret.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import metrics
from bridge.settings import Capability, Settings
from bridge.store import db, migrate, stats


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def exposition(engine: Engine) -> CollectorRegistry:
    """The registry a `/metrics` answer is rendered from, database gauges included."""

    def snapshot() -> stats.Snapshot:
        with db.reading(engine) as conn:
            return stats.read(conn)

    return metrics.exposition(metrics.DatabaseCollector(snapshot))


def metrics_route(engine: Engine) -> Callable[[Request], Awaitable[Response]]:
    registry = exposition(engine)

    async def endpoint(_request: Request) -> Response:
        # Off the event loop: the database gauges are read while rendering, and
        # the loop must stay free for Graph's handshakes and notifications.
        body = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return endpoint


def start_metrics_server(engine: Engine, port: int) -> Callable[[], None]:
    """`/metrics` on `port` (all interfaces) in a thread, for `bridge worker`, which
    has no web app; returns the function that stops it. OSError when the port is
    taken."""
    server, thread = start_http_server(port, registry=exposition(engine))

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


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
        Route("/metrics", metrics_route(engine)),
    ]
