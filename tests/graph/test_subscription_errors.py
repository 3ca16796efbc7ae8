"""Every way a Graph call can fail, and what the caller is told."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from bridge.graph._errors import (
    Forbidden,
    GiveUp,
    RetryLater,
    SubscriptionLimitReached,
    Throttled,
    TransportFailure,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from bridge.graph.subscriptions import GraphClient
from tests.fakes.graph import STATIC_TOKEN, FakeGraph, StaticTokens
from tests.fakes.server import serve
from tests.graph.conftest import LIFECYCLE, NOTIFY, USER, Answerer

RESOURCE = f"users/{USER}/events"
STATE = "kQ7v2XbR9sLm4TzWc8YpN3dF6hJ1gA5e-secret"


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(hours=2)


async def create(client: GraphClient) -> None:
    await client.create_subscription(RESOURCE, NOTIFY, LIFECYCLE, soon(), STATE)


@pytest.mark.parametrize("mode", ["encoded", "html", "error"])
async def test_wrong_handshake_answer_fails_the_create(
    client: GraphClient, graph: FakeGraph, answerer: Answerer, mode: str
) -> None:
    answerer.mode = mode

    with pytest.raises(ValidationFailed) as caught:
        await create(client)

    assert "BRIDGE_PUBLIC_URL" in str(caught.value)
    assert STATE not in str(caught.value)
    assert not graph.subscriptions
    assert not graph.handshakes[0].ok


async def test_late_handshake_answer_fails_the_create(
    client: GraphClient, graph: FakeGraph, answerer: Answerer
) -> None:
    answerer.mode, answerer.delay = "slow", 5.0

    with pytest.raises(ValidationFailed, match="timed out"):
        await create(client)

    assert graph.handshakes[0].error == "timed out"
    assert not graph.subscriptions


async def test_refused_token_is_fetched_again_once(
    client: GraphClient, graph: FakeGraph, static_tokens: StaticTokens
) -> None:
    graph.fail_next(401, code="InvalidAuthenticationToken")

    assert await client.list_subscriptions() == []
    assert static_tokens.invalidated == 1
    assert static_tokens.issued == 2


async def test_token_refused_twice_is_unauthorized(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.fail_next(401, times=2, code="InvalidAuthenticationToken")

    with pytest.raises(Unauthorized, match="GRAPH_TENANT_ID") as caught:
        await client.list_subscriptions()

    assert STATIC_TOKEN not in str(caught.value)


async def test_revoked_consent_is_forbidden_with_the_fix(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.revoke_consent()

    with pytest.raises(Forbidden) as caught:
        await create(client)

    assert not isinstance(caught.value, SubscriptionLimitReached)
    assert "admin consent" in str(caught.value)
    assert "Calendars.Read" in str(caught.value)
    assert caught.value.status_code == 403
    assert caught.value.request_id


async def test_full_mailbox_is_the_subscription_limit(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.subscription_limit = 1
    graph.seed_subscription(f"users/{USER}/calendars/AAMkRoomCal1=/events")

    with pytest.raises(SubscriptionLimitReached, match="1,000"):
        await create(client)


@pytest.mark.parametrize("status", [429, 503])
async def test_throttling_raises_and_holds_back_every_call(
    client: GraphClient, graph: FakeGraph, status: int
) -> None:
    graph.fail_next(status, retry_after="7")

    with pytest.raises(Throttled) as caught:
        await create(client)
    assert caught.value.retry_after == 7
    sent = len(graph.calls)

    with pytest.raises(Throttled) as again:
        await client.get_default_calendar("someone-else")

    assert len(graph.calls) == sent
    assert 0 < again.value.retry_after <= 7


async def test_retry_after_as_a_date(client: GraphClient, graph: FakeGraph) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    graph.fail_next(429, retry_after=format_datetime(when, usegmt=True))

    with pytest.raises(Throttled) as caught:
        await client.list_subscriptions()

    assert 20 < caught.value.retry_after <= 30


async def test_throttling_without_retry_after_still_waits(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.fail_next(429)

    with pytest.raises(Throttled) as caught:
        await client.list_subscriptions()

    assert caught.value.retry_after > 0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retry_later(
    client: GraphClient, graph: FakeGraph, status: int
) -> None:
    graph.fail_next(status)

    with pytest.raises(Unavailable) as caught:
        await client.renew_subscription("any", soon())

    assert caught.value.status_code == status
    assert not isinstance(caught.value, Throttled)
    assert await client.list_subscriptions() == []  # no gate without Retry-After


async def test_other_refusals_are_give_up(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.fail_next(405, code="Request_BadRequest", message="Method not allowed")

    with pytest.raises(GiveUp, match="405"):
        await client.list_subscriptions()


@pytest.fixture
async def served_graph(graph: FakeGraph) -> AsyncIterator[str]:
    async with serve(graph.app) as url:
        yield f"{url}/v1.0"


async def test_hanging_graph_is_a_transport_failure(
    graph: FakeGraph, served_graph: str, static_tokens: StaticTokens
) -> None:
    graph.hang_next()

    async with GraphClient(served_graph, static_tokens, timeout=0.3) as client:
        with pytest.raises(TransportFailure, match="did not answer in time"):
            await client.list_subscriptions()
        assert await client.list_subscriptions() == []


async def test_unreachable_graph_is_a_transport_failure(
    static_tokens: StaticTokens,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async with GraphClient(f"http://127.0.0.1:{port}/v1.0", static_tokens) as client:
        with pytest.raises(TransportFailure) as caught:
            await client.list_subscriptions()

    assert isinstance(caught.value, RetryLater)


def mocked(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>captive portal</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"value": "nope"}),
        httpx.Response(200, json={"value": [{"id": 1}]}),
    ],
)
async def test_nonsense_answers_are_unavailable(
    static_tokens: StaticTokens, answer: httpx.Response
) -> None:
    transport = httpx.MockTransport(lambda request: answer)
    async with (
        mocked(transport) as http,
        GraphClient("https://graph.test/v1.0", static_tokens, http=http) as client,
    ):
        with pytest.raises(Unavailable):
            await client.list_subscriptions()


async def test_next_link_to_another_host_is_not_followed(
    static_tokens: StaticTokens,
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        link = "https://evil.example/v1.0/subscriptions?$skiptoken=1"
        return httpx.Response(200, json={"value": [], "@odata.nextLink": link})

    async with (
        mocked(httpx.MockTransport(handler)) as http,
        GraphClient("https://graph.test/v1.0", static_tokens, http=http) as client,
    ):
        with pytest.raises(Unavailable, match="nextLink"):
            await client.list_subscriptions()

    assert seen == ["https://graph.test/v1.0/subscriptions"]


async def test_at_most_four_concurrent_requests_per_mailbox(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.add_mailbox("other-user")
    graph.request_delay = 0.05

    await asyncio.gather(
        *(client.get_default_calendar(USER) for _ in range(10)),
        *(client.get_default_calendar("other-user") for _ in range(10)),
    )

    assert 1 <= graph.max_in_flight[USER] <= 4
    assert 1 <= graph.max_in_flight["other-user"] <= 4
    assert all(call.status == 200 for call in graph.calls)


async def test_renew_and_delete_count_against_the_subscriptions_mailbox(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.add_mailbox(USER, *((f"c{i}", f"Room {i}") for i in range(6)))
    made = [
        await client.create_subscription(
            f"users/{USER}/calendars/c{i}/events", NOTIFY, None, soon(), STATE
        )
        for i in range(6)
    ]
    graph.request_delay = 0.05
    graph.max_in_flight.clear()

    await asyncio.gather(*(client.renew_subscription(s.id, soon()) for s in made))
    await asyncio.gather(*(client.delete_subscription(s.id) for s in made))

    assert graph.max_in_flight[USER] <= 4
    assert not graph.subscriptions


async def test_the_fake_enforces_the_mailbox_limit_without_our_semaphore(
    graph: FakeGraph, static_tokens: StaticTokens
) -> None:
    # Proof that the test above would catch a missing limit.
    graph.request_delay = 0.05
    transport = httpx.ASGITransport(app=graph.app)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        GraphClient(
            "http://graph.test/v1.0", static_tokens, http=http, per_mailbox=10
        ) as client,
    ):
        results = await asyncio.gather(
            *(client.get_default_calendar(USER) for _ in range(10)),
            return_exceptions=True,
        )

    assert any(isinstance(result, Throttled) for result in results)
