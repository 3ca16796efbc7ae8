"""CoworkerMsOfficeCalendar: search, get, create, update, delete."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from bridge.nexudus import (
    CalendarFields,
    NexudusClient,
    NotFound,
    UnexpectedResponse,
    ValidationFailed,
)
from tests.fakes.nexudus import CALENDARS, PASSWORD, USERNAME, FakeNexudus, VirtualClock

from .conftest import BASE_URL, EXPIRY
from .conftest import calendar_fields as fields


def seed(fake: FakeNexudus, wanted: CalendarFields, **extra: object) -> int:
    return fake.add_record(
        ResourceId=wanted.resource_id,
        Name=wanted.name,
        SubscriptionId=wanted.subscription_id,
        CalendarId=wanted.calendar_id,
        SubscriptionExpireDate="2030-01-03T12:30:15Z",
        CoworkerId=wanted.coworker_id,
        **extra,
    )


async def test_create_sends_all_fields_and_returns_the_new_id(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    new_id = await nexudus.create_calendar(fields())

    [post] = fake.calls_to("POST", CALENDARS)
    assert post.body == {
        "ResourceId": 7,
        "Name": "Meeting room 1",
        "SubscriptionId": "3f2b8c1e-sub",
        "CalendarId": "AAMkAGI2-cal",
        "SubscriptionExpireDate": "2030-01-03T12:30:15Z",
        "CoworkerId": 42,
    }
    assert fake.records[new_id]["Name"] == "Meeting room 1"


async def test_create_converts_the_expiry_to_utc_whole_seconds(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    plus_two = timezone(timedelta(hours=2))
    expiry = datetime(2030, 1, 3, 14, 30, 15, 999999, tzinfo=plus_two)

    await nexudus.create_calendar(
        fields(subscription_expires_at=expiry, coworker_id=None)
    )

    [post] = fake.calls_to("POST", CALENDARS)
    assert post.body["SubscriptionExpireDate"] == "2030-01-03T12:30:15Z"
    assert "CoworkerId" not in post.body


async def test_create_with_a_missing_field_carries_the_field_errors(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await nexudus.create_calendar(fields(name="", calendar_id=""))

    assert caught.value.field_errors == [
        ("Name", "is a required field"),
        ("CalendarId", "is a required field"),
    ]
    assert "Name: is a required field" in str(caught.value)
    assert fake.records == {}


async def test_get_returns_the_full_record_or_none(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = seed(fake, fields(), SystemId="room-7")

    record = await nexudus.get_calendar(record_id)
    missing = await nexudus.get_calendar(record_id + 1)

    assert record is not None
    assert record.id == record_id
    assert record.system_id == "room-7"
    assert record.resource_id == 7
    assert record.coworker_id == 42
    assert record.subscription_expires_at == EXPIRY
    assert record.matches(fields())
    assert missing is None


async def test_search_reads_every_page(
    fake: FakeNexudus, http: httpx.AsyncClient, clock: VirtualClock
) -> None:
    client = NexudusClient(
        BASE_URL, USERNAME, PASSWORD, http=http, clock=clock, page_size=3
    )
    ids = {seed(fake, fields(name=f"Room {n}")) for n in range(7)}
    seed(fake, fields(resource_id=8))

    records = await client.search_calendars(resource_id=7)

    assert {record.id for record in records} == ids
    lists = fake.calls_to("GET", CALENDARS)
    assert [call.query["page"] for call in lists] == ["1", "2", "3"]
    assert all(call.query["size"] == "3" for call in lists)
    assert lists[0].query["CoworkerMsOfficeCalendar_Resource"] == "7"


async def test_search_confirms_substring_matches_client_side(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    exact = seed(fake, fields(subscription_id="abc"))
    seed(fake, fields(subscription_id="xabcx"))
    seed(fake, fields(subscription_id="ABC"))

    records = await nexudus.find_by_subscription_id("abc")

    [call] = fake.calls_to("GET", CALENDARS)
    assert call.query["CoworkerMsOfficeCalendar_SubscriptionId"] == "abc"
    assert [record.id for record in records] == [exact]


async def test_search_rows_are_partial(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    seed(fake, fields(), SystemId="room-7")

    [row] = await nexudus.search_calendars(name="Meeting room 1")

    assert row.system_id is None
    assert "SystemId" not in row.raw


async def test_search_with_no_match_is_empty(nexudus: NexudusClient) -> None:
    assert await nexudus.search_calendars(calendar_id="nothing") == []


async def test_search_answered_404_is_unexpected_not_empty(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    fake.fail_next(1, 404, method="GET", path=CALENDARS)

    with pytest.raises(UnexpectedResponse, match="check the Nexudus API URL"):
        await nexudus.search_calendars(name="x")


async def test_a_wrong_base_url_is_unexpected_not_a_missing_record(
    fake: FakeNexudus, http: httpx.AsyncClient, clock: VirtualClock
) -> None:
    client = NexudusClient(
        BASE_URL + "/typo", USERNAME, PASSWORD, http=http, clock=clock
    )

    with pytest.raises(UnexpectedResponse, match="HTTP 404"):
        await client.get_calendar(1)


async def test_update_skips_the_put_when_nothing_differs(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = seed(fake, fields())
    # Nexudus may answer with fractions and without Z; equal to the second.
    fake.records[record_id]["SubscriptionExpireDate"] = "2030-01-03T12:30:15.9876543"

    sent = await nexudus.update_calendar(
        record_id, fields(subscription_expires_at=EXPIRY.replace(microsecond=400000))
    )

    assert sent is False
    assert fake.calls_to("PUT") == []


async def test_update_puts_the_full_record_keeping_unowned_fields(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = seed(
        fake, fields(), SystemId="room-7", CustomFields={"Data": [{"Name": "x"}]}
    )
    later = EXPIRY + timedelta(days=2)

    sent = await nexudus.update_calendar(
        record_id, fields(subscription_expires_at=later)
    )

    assert sent is True
    [put] = fake.calls_to("PUT", CALENDARS)
    assert put.body["Id"] == record_id
    assert put.body["SubscriptionExpireDate"] == "2030-01-05T12:30:15Z"
    record = fake.records[record_id]
    assert record["SystemId"] == "room-7"
    assert record["CustomFields"] == {"Data": [{"Name": "x"}]}
    assert record["SubscriptionExpireDate"] == "2030-01-05T12:30:15Z"
    assert record["CoworkerId"] == 42


async def test_update_without_a_coworker_leaves_it_alone(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = seed(fake, fields())

    await nexudus.update_calendar(record_id, fields(coworker_id=None, name="Renamed"))

    assert fake.records[record_id]["CoworkerId"] == 42
    assert fake.records[record_id]["Name"] == "Renamed"


async def test_update_of_a_missing_record_is_not_found(nexudus: NexudusClient) -> None:
    with pytest.raises(NotFound):
        await nexudus.update_calendar(123, fields())


async def test_update_of_a_record_deleted_between_get_and_put_is_not_found(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = seed(fake, fields())
    fake.fail_next(1, 404, method="PUT")

    with pytest.raises(NotFound):
        await nexudus.update_calendar(record_id, fields(name="Renamed"))


async def test_delete_reports_whether_the_record_existed(
    fake: FakeNexudus, nexudus: NexudusClient
) -> None:
    record_id = seed(fake, fields())

    assert await nexudus.delete_calendar(record_id) is True
    assert await nexudus.delete_calendar(record_id) is False
    assert record_id not in fake.records
