"""Tokens: password grant, sharing, early renewal, rotation, fallback, 401 retry."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from bridge.nexudus import NexudusClient, Unauthorized, Unavailable
from tests.fakes.nexudus import ALL_ROLES, PASSWORD, USERNAME, FakeNexudus, VirtualClock

from .conftest import BASE_URL, calendar_fields, connect


def grants(fake: FakeNexudus) -> list[str]:
    return [call.body["grant_type"] for call in fake.token_calls]


async def test_password_grant_is_form_encoded_with_client_id_header(
    fake: FakeNexudus, http: httpx.AsyncClient, clock: VirtualClock
) -> None:
    client = NexudusClient(
        BASE_URL, USERNAME, PASSWORD, "bridge-test", http=http, clock=clock
    )
    await client.check_login()

    [call] = fake.token_calls
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.headers["client_id"] == "bridge-test"
    assert call.headers["accept"] == "application/json"
    assert call.body == {
        "grant_type": "password",
        "username": USERNAME,
        "password": "***",
    }


async def test_fifty_concurrent_callers_share_one_token_request(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = fake.add_record()

    results = await asyncio.gather(
        *(nexudus.get_calendar(record_id) for _ in range(50))
    )

    assert all(result is not None for result in results)
    assert len(fake.token_calls) == 1
    assert len(fake.api_calls) == 50


async def test_token_is_kept_until_shortly_before_it_expires(
    clock: VirtualClock,
) -> None:
    fake = FakeNexudus(clock=clock, token_lifetime=3600)
    async with connect(fake, clock) as client:
        await client.get_calendar(1)
        clock.advance(3000)
        await client.get_calendar(1)
        assert grants(fake) == ["password"]

        # Renewal happens min(300 s, a tenth of the lifetime) before expiry.
        clock.advance(301)
        await client.get_calendar(1)
        assert grants(fake) == ["password", "refresh_token"]


async def test_refresh_keeps_the_rotated_refresh_token(
    clock: VirtualClock,
) -> None:
    fake = FakeNexudus(clock=clock, token_lifetime=60)
    async with connect(fake, clock) as client:
        for _ in range(4):
            await client.get_calendar(1)
            clock.advance(60)

    # The fake refuses a used refresh token, so a second refresh with the old
    # one would have failed and forced a password login.
    assert grants(fake) == [
        "password",
        "refresh_token",
        "refresh_token",
        "refresh_token",
    ]
    assert all(call.status == 200 for call in fake.token_calls)


async def test_refused_refresh_falls_back_to_password_login(
    fake: FakeNexudus, nexudus: NexudusClient, clock: VirtualClock
) -> None:
    await nexudus.check_login()
    fake.expire_refresh_tokens()
    clock.advance(7 * 86400)

    await nexudus.get_calendar(1)

    assert grants(fake) == ["password", "refresh_token", "password"]
    assert [call.status for call in fake.token_calls] == [200, 400, 200]


async def test_refresh_during_an_outage_is_not_replaced_by_a_password_login(
    fake: FakeNexudus, nexudus: NexudusClient, clock: VirtualClock
) -> None:
    await nexudus.check_login()
    clock.advance(7 * 86400)
    fake.fail_next(1, 503, path="/api/token")

    with pytest.raises(Unavailable):
        await nexudus.get_calendar(1)
    await nexudus.get_calendar(1)

    assert grants(fake) == ["password", "refresh_token", "refresh_token"]


async def test_401_gets_a_new_token_once_and_retries(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = fake.add_record()
    await nexudus.check_login()
    fake.revoke_access_tokens()

    record = await nexudus.get_calendar(record_id)

    assert record is not None
    assert grants(fake) == ["password", "refresh_token"]
    assert [call.status for call in fake.api_calls] == [401, 200]


async def test_concurrent_401s_share_one_new_token(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = fake.add_record()
    await nexudus.check_login()
    fake.revoke_access_tokens()

    await asyncio.gather(*(nexudus.get_calendar(record_id) for _ in range(10)))

    assert grants(fake) == ["password", "refresh_token"]


async def test_missing_role_fails_after_one_retry_naming_the_role(
    clock: VirtualClock,
) -> None:
    fake = FakeNexudus(clock=clock, roles=ALL_ROLES - {"CoworkerMsOfficeCalendar-Edit"})
    record_id = fake.add_record(Name="old")
    async with connect(fake, clock) as client:
        with pytest.raises(Unauthorized) as caught:
            await client.update_calendar(record_id, calendar_fields(name="new"))

    message = str(caught.value)
    assert "bad credentials or missing role (CoworkerMsOfficeCalendar-Edit)" in message
    assert caught.value.required_role == "CoworkerMsOfficeCalendar-Edit"
    assert [call.status for call in fake.calls_to("PUT")] == [401, 401]
    assert grants(fake) == ["password", "refresh_token"]


async def test_html_401_twice_is_unauthorized_with_status_and_role(
    clock: VirtualClock,
) -> None:
    # Every token the fake issues is already expired: each call gets the HTML page.
    fake = FakeNexudus(clock=clock, token_lifetime=0)
    async with connect(fake, clock) as client:
        with pytest.raises(Unauthorized, match="missing role") as caught:
            await client.search_calendars(name="x")

    assert caught.value.status_code == 401
    assert caught.value.required_role == "CoworkerMsOfficeCalendar-List"
    assert [call.status for call in fake.api_calls] == [401, 401]


async def test_bad_password_is_unauthorized_without_leaking_it(
    fake: FakeNexudus, http: httpx.AsyncClient, clock: VirtualClock
) -> None:
    client = NexudusClient(BASE_URL, USERNAME, "wrong password", http=http, clock=clock)

    with pytest.raises(Unauthorized, match="invalid_grant") as caught:
        await client.check_login()

    assert "wrong password" not in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_no_secret_reaches_errors_or_logs(
    fake: FakeNexudus, nexudus: NexudusClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    record_id = fake.add_record()
    await nexudus.check_login()
    fake.revoke_access_tokens()
    await nexudus.get_calendar(record_id)
    fake.roles = set()
    with pytest.raises(Unauthorized) as caught:
        await nexudus.get_calendar(record_id)

    secrets = [PASSWORD, *fake.access_tokens, *fake.refresh_tokens]
    texts = [caplog.text, str(caught.value), repr(nexudus)]
    assert not [s for s in secrets for text in texts if s in text]
