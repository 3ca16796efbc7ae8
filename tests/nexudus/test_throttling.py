"""Throttling: 409/429 with Retry-After, and pacing that avoids them."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bridge.nexudus import NexudusClient, Throttled
from bridge.nexudus._pacing import Pacer
from bridge.upstream import retry_after_seconds
from tests.fakes.nexudus import CALENDARS, PASSWORD, USERNAME, FakeNexudus, VirtualClock

from .conftest import BASE_URL, calendar_fields, connect

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("Tue, 01 Jan 2030 00:01:00 GMT", 60.0),
        ("Mon, 31 Dec 2029 23:00:00 GMT", 0.0),
        ("-5", 0.0),
        ("soon", 10.0),
        ("", 10.0),
        (None, 10.0),
    ],
)
def test_retry_after_parsing(header: str | None, expected: float) -> None:
    assert retry_after_seconds(header, now=NOW, default=10.0) == expected


@pytest.mark.parametrize("status", [409, 429])
async def test_long_throttle_raises_and_holds_every_later_call(
    fake: FakeNexudus, nexudus: NexudusClient, clock: VirtualClock, status: int
) -> None:
    await nexudus.check_login()
    fake.throttle_next(1, retry_after=30, status=status, method="GET")

    with pytest.raises(Throttled) as caught:
        await nexudus.get_calendar(1)
    throttled_at = fake.api_calls[-1].at

    assert caught.value.retry_after == pytest.approx(30)
    assert caught.value.status_code == status
    assert "retry after 30" in str(caught.value)
    await nexudus.get_calendar(1)
    assert fake.api_calls[-1].at >= throttled_at + 30


async def test_retry_after_as_http_date_is_honoured(
    fake: FakeNexudus, nexudus: NexudusClient, clock: VirtualClock
) -> None:
    await nexudus.check_login()
    clock.advance(0.5)  # the date has whole seconds; the wait must still hold
    fake.throttle_next(1, retry_after=20, http_date=True, method="GET")
    retry_at = fake.clock.now().replace(microsecond=0) + timedelta(seconds=20)

    with pytest.raises(Throttled) as caught:
        await nexudus.get_calendar(1)
    await nexudus.get_calendar(1)

    assert 19 <= caught.value.retry_after <= 20
    assert clock.now() >= retry_at
    assert fake.api_calls[-1].at >= fake.api_calls[-2].at + caught.value.retry_after


async def test_short_throttle_is_waited_out_once_inside_the_client(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    fake.throttle_next(1, retry_after=1, method="POST", path=CALENDARS)

    new_id = await nexudus.create_calendar(calendar_fields())

    first, second = fake.calls_to("POST", CALENDARS)
    assert (first.status, second.status) == (409, 200)
    assert second.at >= first.at + 1
    assert new_id in fake.records


async def test_in_client_wait_happens_only_once(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    fake.throttle_next(2, retry_after=1, method="POST", path=CALENDARS)

    with pytest.raises(Throttled):
        await nexudus.create_calendar(calendar_fields())
    assert len(fake.calls_to("POST", CALENDARS)) == 2
    assert fake.records == {}


async def test_throttled_token_request_is_throttled(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    fake.throttle_next(1, retry_after=60, path="/api/token")

    with pytest.raises(Throttled):
        await nexudus.check_login()


async def test_calls_are_spaced_by_min_interval(
    fake: FakeNexudus, http: httpx.AsyncClient, clock: VirtualClock
) -> None:
    client = NexudusClient(
        BASE_URL, USERNAME, PASSWORD, http=http, clock=clock, min_interval=0.25
    )
    for _ in range(5):
        await client.get_calendar(1)

    times = [call.at for call in fake.calls]
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(times))


async def test_paced_client_meets_no_throttle_under_published_limits(
    clock: VirtualClock,
) -> None:
    fake = FakeNexudus(clock=clock, write_limit=60, min_interval=0.1)
    async with connect(fake, clock) as client:
        for n in range(150):
            await client.create_calendar(calendar_fields(name=f"Room {n}"))

    assert len(fake.records) == 150
    assert [call for call in fake.calls if call.status == 409] == []
    assert clock.monotonic() >= 120  # 150 writes at 60 per minute


async def test_unpaced_client_meets_the_fakes_write_limit(
    clock: VirtualClock,
) -> None:
    fake = FakeNexudus(clock=clock, write_limit=3)
    unpaced = {"min_interval": 0, "writes_per_minute": None, "max_retry_wait": 0}
    async with connect(fake, clock, **unpaced) as client:
        for n in range(3):
            await client.create_calendar(calendar_fields(name=f"Room {n}"))
        with pytest.raises(Throttled) as caught:
            await client.create_calendar(calendar_fields(name="one too many"))

    assert caught.value.retry_after == 60


async def test_pacer_spaces_concurrent_callers(clock: VirtualClock) -> None:
    pacer = Pacer(clock, min_interval=0.1, writes_per_minute=None)
    granted: list[float] = []

    async def call() -> None:
        await pacer.acquire(write=False)
        granted.append(clock.monotonic())

    await asyncio.gather(*(call() for _ in range(20)))

    assert granted == sorted(granted)
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(granted))


async def test_pacer_caps_writes_in_any_minute(clock: VirtualClock) -> None:
    pacer = Pacer(clock, min_interval=0, writes_per_minute=5)
    granted: list[float] = []
    for _ in range(17):
        await pacer.acquire(write=True)
        granted.append(clock.monotonic())
        await pacer.acquire(write=False)  # reads do not use the write budget

    for start in granted:
        in_window = [t for t in granted if start <= t < start + 60]
        assert len(in_window) <= 5
    assert granted[5] == granted[0] + 60


async def test_pacer_gate_holds_callers_already_waiting(clock: VirtualClock) -> None:
    pacer = Pacer(clock, min_interval=1, writes_per_minute=None)
    await pacer.acquire(write=False)
    waiting = asyncio.ensure_future(pacer.acquire(write=False))
    await asyncio.sleep(0)
    pacer.hold_for(30)

    await waiting

    assert clock.monotonic() >= 30


def test_pacer_rejects_nonsense_settings(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="min_interval"):
        Pacer(clock, min_interval=-1)
    with pytest.raises(ValueError, match="writes_per_minute"):
        Pacer(clock, writes_per_minute=0)
