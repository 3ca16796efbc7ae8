"""Fixtures for the Graph client tests: the fakes, in-process or under uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bridge.graph.subscriptions import GraphClient
from bridge.graph.tokens import GraphTokens
from tests.fakes.authority import FakeAuthority
from tests.fakes.graph import FakeGraph, StaticTokens
from tests.fakes.server import serve
from tests.fakes.tls import TestCA

USER = "0d7e4b9c-2f61-4a83-b5d0-9c1e7f3a6b28"
GRAPH_BASE = "http://graph.test/v1.0"
BRIDGE_BASE = "http://127.0.0.1:8000"
NOTIFY = f"{BRIDGE_BASE}/graph/notifications"
LIFECYCLE = f"{BRIDGE_BASE}/graph/lifecycle"


class Answerer:
    """The bridge's role in the in-process tests: answer Graph's handshake.

    `mode`: "ok", "encoded" (token left URL-encoded), "html" (wrong content
    type), "error" (500), "slow" (answers after `delay` seconds). Notification
    collections are kept in `received` and answered 202.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 0.0
        self.seen: list[str] = []
        self.received: list[tuple[str, Any]] = []

    @property
    def app(self) -> Starlette:
        async def answer(request: Request) -> Response:
            if "validationToken" not in request.query_params:
                self.received.append((request.url.path, await request.json()))
                return Response(status_code=202)
            token = request.query_params["validationToken"]
            self.seen.append(request.url.path)
            if self.mode == "slow":
                await asyncio.sleep(self.delay)
            if self.mode == "encoded":
                raw = request.url.query.partition("validationToken=")[2]
                return PlainTextResponse(raw)
            if self.mode == "html":
                return Response(token, media_type="text/html")
            if self.mode == "error":
                return PlainTextResponse("boom", status_code=500)
            return PlainTextResponse(token)

        return Starlette(
            routes=[
                Route("/graph/notifications", answer, methods=["POST"]),
                Route("/graph/lifecycle", answer, methods=["POST"]),
            ]
        )


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def trust_ca(test_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> TestCA:
    """Make the throwaway CA the process's trust, as an operator would."""
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return test_ca


@pytest.fixture
def authority() -> FakeAuthority:
    return FakeAuthority()


@pytest.fixture
async def authority_url(
    authority: FakeAuthority, trust_ca: TestCA
) -> AsyncIterator[str]:
    async with serve(authority.app, tls=trust_ca) as url:
        yield url


@pytest.fixture
def make_tokens(
    authority: FakeAuthority, authority_url: str
) -> Iterator[Callable[..., GraphTokens]]:
    """Build GraphTokens against the served authority; closed after the test."""
    made: list[GraphTokens] = []

    def make(**overrides: str | float) -> GraphTokens:
        values: dict[str, str | float] = {
            "tenant_id": authority.tenant_id,
            "client_id": authority.client_id,
            "client_secret": authority.client_secret,
            "authority_url": authority_url,
            "scope": authority.scope,
            **overrides,
        }
        tokens = GraphTokens(
            str(values["tenant_id"]),
            str(values["client_id"]),
            str(values["client_secret"]),
            str(values["authority_url"]),
            str(values["scope"]),
            timeout=float(values.get("timeout", 5.0)),
        )
        made.append(tokens)
        return tokens

    yield make
    for tokens in made:
        tokens.close()


@pytest.fixture
def answerer() -> Answerer:
    return Answerer()


@pytest.fixture
async def handshake_client(answerer: Answerer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=answerer.app)
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


@pytest.fixture
def graph(handshake_client: httpx.AsyncClient) -> FakeGraph:
    fake = FakeGraph(handshake_client=handshake_client, handshake_timeout=0.5)
    fake.add_mailbox(USER, ("AAMkRoomCal1=", "Room 1"))
    return fake


@pytest.fixture
def static_tokens() -> StaticTokens:
    return StaticTokens()


@pytest.fixture
async def client(
    graph: FakeGraph, static_tokens: StaticTokens
) -> AsyncIterator[GraphClient]:
    """A GraphClient talking to the fake Graph in-process."""
    transport = httpx.ASGITransport(app=graph.app)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        GraphClient(GRAPH_BASE, static_tokens, http=http) as graph_client,
    ):
        yield graph_client
