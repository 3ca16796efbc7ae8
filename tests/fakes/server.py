"""Run an ASGI fake under a real uvicorn on 127.0.0.1, in the test's event loop.

A real server (rather than `httpx.ASGITransport`) is what makes timeouts, TLS and
other processes reaching the fake behave as they do in production.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import ASGIApp

from tests.fakes.tls import TestCA

_STARTUP_SECONDS = 10.0


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, *, tls: TestCA | None = None) -> AsyncIterator[str]:
    """Serve `app` on a free port; yield its base URL (https when `tls` is given)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls.cert_file) if tls else None,
        ssl_keyfile=str(tls.key_file) if tls else None,
        # A fake may hold a request open on purpose ("hang"): do not wait for it.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(_STARTUP_SECONDS):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if tls else "http"
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
