"""End to end: msal → fake authority (TLS), GraphClient → fake Graph (TLS), and
Graph's validation handshake → a real bridge on 127.0.0.1, all over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bridge.graph.subscriptions import GraphClient, new_client_state
from bridge.graph.tokens import GraphTokens, scope_for
from tests.fakes.authority import FakeAuthority
from tests.fakes.graph import FakeGraph
from tests.fakes.server import serve
from tests.fakes.tls import TestCA
from tests.graph.conftest import USER, Answerer

_BRIDGE_START_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def bridge_serve(
    workdir: Path, database_url: str, ca: TestCA
) -> AsyncIterator[str]:
    """`bridge serve --no-worker` in its own process; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BRIDGE_PUBLIC_URL": base,
        "SSL_CERT_FILE": str(ca.ca_file),
        "BRIDGE_LOG_LEVEL": "warning",
    }
    log = workdir / "bridge.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-worker",
            cwd=workdir,  # so no stray .env from the checkout is read
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        await _wait_until_up(process, base, log)
        yield base
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def _wait_until_up(
    process: asyncio.subprocess.Process, base: str, log: Path
) -> None:
    async with httpx.AsyncClient(timeout=1.0) as client:
        deadline = asyncio.get_running_loop().time() + _BRIDGE_START_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            if process.returncode is not None:
                pytest.fail(f"bridge serve exited:\n{await _read(log)}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    pytest.fail(f"bridge serve did not start:\n{await _read(log)}")


async def _read(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)


@pytest.fixture
def graph(authority: FakeAuthority) -> FakeGraph:
    fake = FakeGraph(authority=authority)
    fake.add_mailbox(USER)
    return fake


@pytest.fixture
async def graph_api(
    graph: FakeGraph, authority: FakeAuthority, trust_ca: TestCA
) -> AsyncIterator[str]:
    async with serve(graph.app, tls=trust_ca) as url:
        authority.audience = url  # tokens are for this Graph, as scope_for says
        yield f"{url}/v1.0"


async def test_bridge_serve_answers_the_handshake_while_we_create(
    graph: FakeGraph,
    graph_api: str,
    make_tokens: Callable[..., GraphTokens],
    trust_ca: TestCA,
    tmp_path: Path,
    database_url: str,
) -> None:
    tokens = make_tokens(scope=scope_for(graph_api))
    expires = datetime.now(UTC) + timedelta(minutes=4200)

    async with (
        bridge_serve(tmp_path, database_url, trust_ca) as bridge,
        GraphClient(graph_api, tokens) as client,
    ):
        made = await client.create_subscription(
            f"users/{USER}/events",
            f"{bridge}/graph/notifications",
            f"{bridge}/graph/lifecycle",
            expires,
            new_client_state(),
        )
        renewed = await client.renew_subscription(made.id, expires)
        await client.delete_subscription(made.id)

    assert [(h.url, h.ok) for h in graph.handshakes] == [
        (f"{bridge}/graph/notifications", True),
        (f"{bridge}/graph/lifecycle", True),
    ]
    assert [h.status for h in graph.handshakes] == [200, 200]
    assert [h.body for h in graph.handshakes] == [h.token for h in graph.handshakes]
    assert renewed.id == made.id
    assert not graph.subscriptions


async def test_the_same_event_loop_answers_the_handshake_during_create(
    graph: FakeGraph,
    graph_api: str,
    authority: FakeAuthority,
    make_tokens: Callable[..., GraphTokens],
) -> None:
    # The answerer shares this loop with msal's token fetch and the create call,
    # as the web app and the connect command share `bridge serve`'s loop. A slow
    # authority makes any blocking call show up as a failed handshake.
    authority.token_delay = 0.3
    graph.handshake_timeout = 5.0
    answerer = Answerer()
    tokens = make_tokens(scope=scope_for(graph_api))

    async with (
        serve(answerer.app) as bridge,
        GraphClient(graph_api, tokens) as client,
    ):
        await client.create_subscription(
            f"users/{USER}/events",
            f"{bridge}/graph/notifications",
            f"{bridge}/graph/lifecycle",
            datetime.now(UTC) + timedelta(hours=1),
            new_client_state(),
        )

    assert [h.ok for h in graph.handshakes] == [True, True]
    assert answerer.seen == ["/graph/notifications", "/graph/lifecycle"]
