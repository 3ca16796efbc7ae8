"""GraphTokens against the fake authority, served over TLS by a real uvicorn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from bridge.graph._errors import (
    GiveUp,
    RetryLater,
    Throttled,
    TokenError,
    TransportFailure,
    Unavailable,
)
from bridge.graph.tokens import GraphTokens, scope_for
from tests.fakes.authority import FakeAuthority

MakeTokens = Callable[..., GraphTokens]


async def test_token_is_fetched_once_and_then_served_from_msal_cache(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    tokens = make_tokens()

    first = await tokens.token()
    second = await tokens.token()

    assert first == second
    assert authority.grant_for(first) is not None
    assert authority.discovery_requests == 1
    assert authority.token_requests == 1


async def test_concurrent_callers_share_one_token_request(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    authority.token_delay = 0.2
    tokens = make_tokens()

    results = await asyncio.gather(*(tokens.token() for _ in range(5)))

    assert len(set(results)) == 1
    assert authority.token_requests == 1


async def test_event_loop_keeps_running_while_msal_waits_for_the_authority(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    # The fake authority runs in this very loop: were msal blocking the loop,
    # the token could never arrive and the ticker would never tick.
    authority.token_delay = 0.5
    tokens = make_tokens()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    try:
        await asyncio.wait_for(tokens.token(), timeout=10)
    finally:
        done.set()
        await ticking
    assert ticks >= 5


async def test_invalidate_makes_the_next_call_fetch_a_new_token(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    tokens = make_tokens()
    first = await tokens.token()

    tokens.invalidate()
    second = await tokens.token()

    assert second != first
    assert authority.token_requests == 2


async def test_wrong_secret_names_the_variable_and_never_the_secret(
    make_tokens: MakeTokens,
) -> None:
    secret = "wrong-secret-value-1234567890"
    tokens = make_tokens(client_secret=secret)

    with pytest.raises(TokenError) as caught:
        await tokens.token()

    assert caught.value.aadsts_code == 7000215
    assert "GRAPH_CLIENT_SECRET" in str(caught.value)
    assert "Invalid client secret provided" in caught.value.description
    assert caught.value.correlation_id
    assert secret not in str(caught.value)
    assert isinstance(caught.value, GiveUp)


@pytest.mark.parametrize(
    ("tenant", "code"),
    [
        ("11111111-2222-3333-4444-555555555555", 90002),
        ("not_a_tenant", 900023),
    ],
)
async def test_unknown_or_malformed_tenant_names_graph_tenant_id(
    make_tokens: MakeTokens, tenant: str, code: int
) -> None:
    tokens = make_tokens(tenant_id=tenant)

    with pytest.raises(TokenError) as caught:
        await tokens.token()

    assert caught.value.aadsts_code == code
    assert "GRAPH_TENANT_ID" in str(caught.value)


async def test_unknown_application_names_graph_client_id(
    make_tokens: MakeTokens,
) -> None:
    tokens = make_tokens(client_id="99999999-0000-0000-0000-000000000000")

    with pytest.raises(TokenError) as caught:
        await tokens.token()

    assert caught.value.aadsts_code == 700016
    assert "GRAPH_CLIENT_ID" in str(caught.value)


async def test_wrong_scope_names_graph_api_url(make_tokens: MakeTokens) -> None:
    tokens = make_tokens(scope=scope_for("https://graph.example.com/v1.0"))

    with pytest.raises(TokenError) as caught:
        await tokens.token()

    assert caught.value.aadsts_code == 500011
    assert "GRAPH_API_URL" in str(caught.value)


async def test_missing_consent_says_to_grant_admin_consent(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    authority.fail_with = 65001
    tokens = make_tokens()

    with pytest.raises(TokenError) as caught:
        await tokens.token()

    assert caught.value.aadsts_code == 65001
    assert "admin consent" in str(caught.value)
    assert "Calendars.Read" in str(caught.value)


async def test_authority_outage_is_retry_later_and_not_asked_again_at_once(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    authority.outage = 503
    tokens = make_tokens()

    with pytest.raises(Unavailable) as caught:
        await tokens.token()
    with pytest.raises(Throttled) as again:
        await tokens.token()

    assert caught.value.status_code == 503
    assert 0 < again.value.retry_after <= 6
    assert authority.token_requests == 1


async def test_authority_throttling_carries_retry_after(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    authority.outage = 429
    authority.outage_retry_after = "17"
    tokens = make_tokens()

    with pytest.raises(Throttled) as caught:
        await tokens.token()
    with pytest.raises(Throttled) as again:
        await tokens.token()

    assert caught.value.retry_after == 17
    assert 15 < again.value.retry_after <= 18
    assert authority.token_requests == 1


async def test_authority_that_is_not_an_identity_platform(
    make_tokens: MakeTokens, authority_url: str
) -> None:
    tokens = make_tokens(authority_url=f"{authority_url}/not/here")

    with pytest.raises(TokenError, match="GRAPH_AUTHORITY_URL") as caught:
        await tokens.token()

    assert "answered 404" in caught.value.description


async def test_a_recovered_authority_is_used_again(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    authority.outage = 500
    tokens = make_tokens()
    with pytest.raises(RetryLater):
        await tokens.token()

    authority.outage = None
    # Both msal and GraphTokens hold off for a few seconds after a 5xx: a fresh
    # instance shows that nothing else stays broken.
    assert await make_tokens().token()


async def test_untrusted_certificate_is_a_transport_failure_with_a_hint(
    make_tokens: MakeTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")  # back to certifi, which lacks our CA
    tokens = make_tokens()

    with pytest.raises(TransportFailure, match="SSL_CERT_FILE"):
        await tokens.token()


async def test_unreachable_authority_is_a_transport_failure(
    make_tokens: MakeTokens,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tokens = make_tokens(authority_url=f"https://127.0.0.1:{port}", timeout=2.0)

    with pytest.raises(TransportFailure):
        await tokens.token()


async def test_slow_authority_times_out(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    authority.token_delay = 2.0
    tokens = make_tokens(timeout=0.2)

    with pytest.raises(TransportFailure, match="did not answer"):
        await tokens.token()


def test_instance_discovery_only_for_microsoft_hosts() -> None:
    microsoft = GraphTokens("t", "c", "hush", "https://login.microsoftonline.com", "x")
    local = GraphTokens("t", "c", "hush", "https://127.0.0.1:8443", "x")

    assert microsoft.microsoft_authority
    assert not local.microsoft_authority
    assert "hush" not in repr(local)


def test_scope_is_the_api_origin_plus_default() -> None:
    assert scope_for("https://graph.microsoft.com/v1.0") == (
        "https://graph.microsoft.com/.default"
    )
    assert scope_for("http://127.0.0.1:9000/v1.0") == "http://127.0.0.1:9000/.default"


async def test_closed_tokens_refuse(make_tokens: MakeTokens) -> None:
    tokens = make_tokens()
    tokens.close()

    with pytest.raises(RuntimeError, match="closed"):
        await tokens.token()


async def test_a_5xx_replayed_by_msal_is_still_retry_later(
    authority: FakeAuthority, make_tokens: MakeTokens
) -> None:
    authority.outage = 502
    tokens = make_tokens()
    with pytest.raises(Unavailable):
        await tokens.token()

    tokens._held_until = 0.0  # as if our hold ended before msal's replay does
    with pytest.raises(Unavailable, match="retry later"):
        await tokens.token()

    assert authority.token_requests == 1
