"""Fixtures: the fake Nexudus on a virtual clock, and a client driving it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bridge.nexudus import CalendarFields, NexudusClient
from tests.fakes.nexudus import PASSWORD, USERNAME, FakeNexudus, VirtualClock

BASE_URL = "https://nexudus.test"
EXPIRY = datetime(2030, 1, 3, 12, 30, 15, tzinfo=UTC)


def calendar_fields(**changes: object) -> CalendarFields:
    values: dict[str, object] = {
        "resource_id": 7,
        "name": "Meeting room 1",
        "subscription_id": "3f2b8c1e-sub",
        "calendar_id": "AAMkAGI2-cal",
        "subscription_expires_at": EXPIRY,
        "coworker_id": 42,
    }
    values.update(changes)
    return CalendarFields(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def fake(clock: VirtualClock) -> FakeNexudus:
    return FakeNexudus(clock=clock)


@pytest.fixture
async def http(fake: FakeNexudus) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


@pytest.fixture
def nexudus(http: httpx.AsyncClient, clock: VirtualClock) -> NexudusClient:
    """The real client with its default pacing, which costs no real time here."""
    return NexudusClient(BASE_URL, USERNAME, PASSWORD, http=http, clock=clock)


@contextlib.asynccontextmanager
async def connect(
    fake: FakeNexudus, clock: VirtualClock, **options: Any
) -> AsyncIterator[NexudusClient]:
    """A client for a fake built inside the test (with its own settings)."""
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield NexudusClient(
            BASE_URL, USERNAME, PASSWORD, http=http, clock=clock, **options
        )
