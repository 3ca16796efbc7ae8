"""Reading Graph's objects and writing its timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bridge.graph._models import (
    Calendar,
    Subscription,
    format_datetime,
    mailbox_of,
    parse_datetime,
)
from bridge.upstream import MAX_RETRY_AFTER, retry_after_seconds

GRAPH_SUBSCRIPTION = {
    "id": "8f2c6a1e-3b7d-4c59-9e41-2d6f0b7a9c13",
    "resource": "Users/0D7E4B9C-2f61-4a83-b5d0-9c1e7f3a6b28/Events",
    "changeType": "created,updated,deleted",
    "notificationUrl": "https://bridge.example/graph/notifications",
    "lifecycleNotificationUrl": None,
    "expirationDateTime": "2026-11-23T09:12:45.9696658Z",
    "clientState": None,
}


def test_subscription_from_graph() -> None:
    subscription = Subscription.from_graph(GRAPH_SUBSCRIPTION)

    assert subscription.expires_at == datetime(2026, 11, 23, 9, 12, 45, 969665, UTC)
    assert subscription.lifecycle_url is None
    assert subscription.client_state is None
    assert subscription.mailbox == "0d7e4b9c-2f61-4a83-b5d0-9c1e7f3a6b28"
    assert subscription.same_target(
        "users/0d7e4b9c-2f61-4a83-b5d0-9c1e7f3a6b28/events", "deleted,created,updated"
    )
    assert not subscription.same_target(subscription.resource, "created")


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {**GRAPH_SUBSCRIPTION, "id": 5},
        {**GRAPH_SUBSCRIPTION, "expirationDateTime": "soon"},
    ],
)
def test_not_a_subscription(body: object) -> None:
    with pytest.raises(ValueError, match="not a"):
        Subscription.from_graph(body)


def test_calendar_from_graph() -> None:
    assert Calendar.from_graph({"id": "A=", "name": "Room", "color": "auto"}) == (
        Calendar("A=", "Room")
    )
    with pytest.raises(ValueError, match="not a calendar"):
        Calendar.from_graph({"id": "A="})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T09:12:45Z", datetime(2026, 11, 23, 9, 12, 45, tzinfo=UTC)),
        ("2026-11-23T11:12:45+02:00", datetime(2026, 11, 23, 9, 12, 45, tzinfo=UTC)),
        ("2026-11-23T09:12:45", datetime(2026, 11, 23, 9, 12, 45, tzinfo=UTC)),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text)

    assert parsed == expected
    assert parsed.tzinfo is UTC


def test_format_datetime_is_utc_with_z_to_the_second() -> None:
    paris = timezone(timedelta(hours=1))
    value = datetime(2026, 1, 2, 4, 5, 6, 999999, tzinfo=paris)

    assert format_datetime(value) == "2026-01-02T03:05:06Z"
    with pytest.raises(ValueError, match="aware"):
        format_datetime(datetime(2026, 1, 2))


@pytest.mark.parametrize(
    ("resource", "mailbox"),
    [
        ("users/ABC/events", "abc"),
        ("/Users/abc/calendars/x/events", "abc"),
        ("Users('abc')/Events('x')", "abc"),
        ("/users/room@example.com/calendar", "room@example.com"),
        ("/subscriptions/abc", None),
        ("me/events", None),
    ],
)
def test_mailbox_of(resource: str, mailbox: str | None) -> None:
    assert mailbox_of(resource) == mailbox


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 5.0),
        ("", 5.0),
        ("12", 12.0),
        ("-3", 0.0),
        ("1.5", 1.5),
        ("inf", 5.0),
        ("nan", 5.0),
        ("9999999", MAX_RETRY_AFTER),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("next tuesday", 5.0),
    ],
)
def test_retry_after(header: str | None, seconds: float) -> None:
    assert retry_after_seconds(header, default=5.0) == seconds
