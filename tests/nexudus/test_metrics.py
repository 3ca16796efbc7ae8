"""Every Nexudus call is counted by operation and answer, throttles apart."""

from __future__ import annotations

import pytest

from bridge.nexudus import NexudusClient, TimedOut
from tests.fakes.nexudus import CALENDARS, FakeNexudus, VirtualClock
from tests.metrics_samples import sample

from .conftest import calendar_fields, connect

CALLS = "bridge_upstream_requests_total"
THROTTLES = "bridge_upstream_throttles_total"


def calls(operation: str, status: str) -> float:
    return sample(CALLS, upstream="nexudus", operation=operation, status=status)


async def test_calls_are_counted_by_operation_and_status(
    nexudus: NexudusClient, fake: FakeNexudus
) -> None:
    before = {
        key: calls(*key)
        for key in [
            ("token", "200"),
            ("create_calendar", "200"),
            ("get_calendar", "200"),
        ]
    }
    throttled_before = sample(THROTTLES, upstream="nexudus", operation="get_calendar")
    conflict_before = calls("get_calendar", "409")

    record_id = await nexudus.create_calendar(calendar_fields())
    # A throttle short enough to wait out: the call is sent again and succeeds.
    fake.throttle_next(1, retry_after=1, method="GET", path=CALENDARS)
    assert await nexudus.get_calendar(record_id) is not None

    assert calls("token", "200") - before[("token", "200")] == 1
    assert calls("create_calendar", "200") - before[("create_calendar", "200")] == 1
    assert calls("get_calendar", "200") - before[("get_calendar", "200")] == 1
    assert calls("get_calendar", "409") - conflict_before == 1
    throttled = sample(THROTTLES, upstream="nexudus", operation="get_calendar")
    assert throttled - throttled_before == 1


async def test_a_call_without_an_answer_is_counted_as_a_timeout(
    fake: FakeNexudus, clock: VirtualClock
) -> None:
    before = calls("list_calendars", "timeout")
    fake.hang_next(1, seconds=30, method="GET", path=CALENDARS)
    try:
        async with connect(fake, clock, timeout=0.2) as nexudus:
            with pytest.raises(TimedOut):
                await nexudus.search_calendars(resource_id=1)
    finally:
        fake.release_hangs()
    assert calls("list_calendars", "timeout") - before == 1
