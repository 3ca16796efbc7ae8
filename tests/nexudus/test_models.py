"""Dates and records: UTC whole seconds out, lenient parsing in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.nexudus import (
    CalendarFields,
    CalendarRecord,
    UnexpectedResponse,
    format_nexudus_datetime,
    parse_nexudus_datetime,
)

from .conftest import EXPIRY, calendar_fields


def test_format_is_utc_whole_seconds_with_z() -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2030, 1, 3, 13, 30, 15, 999999, tzinfo=paris)
    assert format_nexudus_datetime(moment) == "2030-01-03T12:30:15Z"


def test_format_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_nexudus_datetime(datetime(2030, 1, 3))


@pytest.mark.parametrize(
    "text",
    [
        "2030-01-03T12:30:15Z",
        "2030-01-03T12:30:15",
        "2030-01-03T12:30:15.000Z",
        "2030-01-03T12:30:15.1234567Z",
        "2030-01-03T12:30:15.12",
        "2030-01-03T13:30:15+01:00",
        " 2030-01-03T12:30:15Z ",
    ],
)
def test_parse_accepts_nexudus_variants(text: str) -> None:
    parsed = parse_nexudus_datetime(text)
    assert parsed.tzinfo is UTC
    assert parsed.replace(microsecond=0) == EXPIRY


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_then_parse_keeps_the_second(moment: datetime) -> None:
    parsed = parse_nexudus_datetime(format_nexudus_datetime(moment))
    assert parsed == moment.replace(microsecond=0)


def test_fields_need_an_aware_expiry() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        calendar_fields(subscription_expires_at=datetime(2030, 1, 3))


def test_record_keeps_unknown_fields_in_the_put_body() -> None:
    record = CalendarRecord.from_api(
        {
            "Id": 5,
            "Name": "old",
            "SystemId": "room-7",
            "CustomFields": {"Data": []},
            "SubscriptionExpireDate": "2030-01-01T00:00:00Z",
        }
    )

    body = record.updated_with(calendar_fields())

    assert body["Id"] == 5
    assert body["SystemId"] == "room-7"
    assert body["CustomFields"] == {"Data": []}
    assert body["Name"] == "Meeting room 1"
    assert body["SubscriptionExpireDate"] == "2030-01-03T12:30:15Z"


def test_record_matches_to_the_second_and_ignores_unknown_coworker() -> None:
    record = CalendarRecord.from_api(
        {
            "Id": 5,
            "ResourceId": 7,
            "CoworkerId": 99,
            "Name": "Meeting room 1",
            "SubscriptionId": "3f2b8c1e-sub",
            "CalendarId": "AAMkAGI2-cal",
            "SubscriptionExpireDate": "2030-01-03T12:30:15.7",
        }
    )

    assert record.matches(calendar_fields(coworker_id=None))
    assert not record.matches(calendar_fields(coworker_id=42))
    later = EXPIRY + timedelta(seconds=1)
    assert not record.matches(calendar_fields(subscription_expires_at=later))


def test_record_with_a_bad_expiry_never_matches() -> None:
    record = CalendarRecord.from_api({"Id": 5, "SubscriptionExpireDate": "soon"})
    assert record.subscription_expires_at is None
    assert not record.matches(calendar_fields())


@pytest.mark.parametrize("data", [None, [], {"Name": "no id"}, {"Id": True}])
def test_record_without_an_id_is_unexpected(data: object) -> None:
    with pytest.raises(UnexpectedResponse):
        CalendarRecord.from_api(data)


def test_fields_to_api_omit_an_unknown_coworker() -> None:
    body = CalendarFields(
        resource_id=1,
        name="n",
        subscription_id="s",
        calendar_id="c",
        subscription_expires_at=EXPIRY,
    ).to_api()
    assert "CoworkerId" not in body
