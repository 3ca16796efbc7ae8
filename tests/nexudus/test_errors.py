"""The error tree: retry later versus give up, without reading status codes."""

from __future__ import annotations

import httpx
import pytest

from bridge.nexudus import (
    ConnectionFailed,
    GiveUp,
    NexudusClient,
    NexudusError,
    NotFound,
    RetryLater,
    Throttled,
    TimedOut,
    TransportFailure,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
    ValidationFailed,
)
from tests.fakes.nexudus import CALENDARS, PASSWORD, USERNAME, FakeNexudus, VirtualClock

from .conftest import BASE_URL, calendar_fields


@pytest.mark.parametrize(
    ("error", "family"),
    [
        (Throttled, RetryLater),
        (Unavailable, RetryLater),
        (TimedOut, TransportFailure),
        (ConnectionFailed, TransportFailure),
        (TransportFailure, RetryLater),
        (ValidationFailed, GiveUp),
        (Unauthorized, GiveUp),
        (NotFound, GiveUp),
        (UnexpectedResponse, GiveUp),
        (RetryLater, NexudusError),
        (GiveUp, NexudusError),
    ],
)
def test_each_error_sits_in_its_branch(
    error: type[NexudusError], family: type[NexudusError]
) -> None:
    assert issubclass(error, family)
    assert not (issubclass(error, RetryLater) and issubclass(error, GiveUp))


def test_messages_are_one_line() -> None:
    error = Unavailable("Nexudus GET /x:\n  <html>\n  oops</html>", status_code=502)
    assert str(error) == "Nexudus GET /x: <html> oops</html>"
    assert error.status_code == 502


async def test_was_successful_false_on_200_is_a_failure(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = fake.add_record()
    fake.fail_next(1, 200, method="GET", path=CALENDARS)

    with pytest.raises(ValidationFailed, match="could not be completed") as caught:
        await nexudus.get_calendar(record_id)
    assert isinstance(caught.value, GiveUp)


async def test_html_answer_is_unexpected_with_status_and_excerpt(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    fake.fail_next(1, 200, html=True, method="GET", path=CALENDARS)

    with pytest.raises(UnexpectedResponse) as caught:
        await nexudus.get_calendar(1)

    message = str(caught.value)
    assert "HTTP 200" in message
    assert "text/html" in message
    assert caught.value.excerpt == "Error 200 oops"
    assert "<" not in caught.value.excerpt


async def test_server_error_is_unavailable(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    fake.fail_next(1, 500, method="GET", path=CALENDARS)
    with pytest.raises(Unavailable, match="HTTP 500") as caught:
        await nexudus.search_calendars()
    assert isinstance(caught.value, RetryLater)

    fake.fail_next(1, 503, html=True, method="GET")
    with pytest.raises(Unavailable, match=r"HTTP 503.*Error 503") as caught:
        await nexudus.get_calendar(1)
    assert caught.value.status_code == 503


async def test_validation_failure_on_put_carries_field_errors(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = fake.add_record()
    fake.fail_next(1, 400, method="PUT")

    with pytest.raises(ValidationFailed) as caught:
        await nexudus.update_calendar(record_id, calendar_fields())
    assert caught.value.field_errors == [("Name", "is not valid")]


async def test_undocumented_status_is_unexpected(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    fake.fail_next(1, 418, method="GET")

    with pytest.raises(UnexpectedResponse, match="unexpected HTTP 418"):
        await nexudus.get_calendar(1)


async def test_hang_times_out_as_retry_later(
    fake: FakeNexudus, http: httpx.AsyncClient, clock: VirtualClock
) -> None:
    client = NexudusClient(
        BASE_URL, USERNAME, PASSWORD, http=http, clock=clock, timeout=0.2
    )
    await client.check_login()
    fake.hang_next(1, seconds=30)

    with pytest.raises(TimedOut, match=r"no answer within 0.2s") as caught:
        await client.get_calendar(1)
    assert isinstance(caught.value, RetryLater)

    assert await client.get_calendar(1) is None  # the next call is fine


async def test_connection_error_is_retry_later(clock: VirtualClock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    async with httpx.AsyncClient(transport=transport) as http:
        client = NexudusClient(BASE_URL, USERNAME, PASSWORD, http=http, clock=clock)
        with pytest.raises(ConnectionFailed, match="Connection refused") as caught:
            await client.get_calendar(1)

    assert isinstance(caught.value, RetryLater)
    assert PASSWORD not in str(caught.value)
