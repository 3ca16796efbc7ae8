"""The fake Nexudus behaves as the documented API does, raw HTTP in and out."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.fakes.nexudus import (
    CALENDARS,
    PASSWORD,
    USERNAME,
    FakeNexudus,
    VirtualClock,
)

from .conftest import BASE_URL

LIST_ENVELOPE = {
    "Records", "CurrentPage", "CurrentPageSize", "CurrentOrderField",
    "CurrentSortDirection", "FirstItem", "LastItem", "TotalItems", "TotalPages",
    "HasNextPage", "HasPreviousPage",
}  # fmt: skip


async def login(
    http: httpx.AsyncClient, client_id: str = "bridge", **form: str
) -> httpx.Response:
    data = {"grant_type": "password", "username": USERNAME, "password": PASSWORD}
    return await http.post(
        "/api/token", data={**data, **form}, headers={"client_id": client_id}
    )


async def bearer(http: httpx.AsyncClient) -> dict[str, str]:
    token = (await login(http)).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def full_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ResourceId": 7,
        "Name": "Room",
        "SubscriptionId": "sub",
        "CalendarId": "cal",
        "SubscriptionExpireDate": "2030-01-03T12:30:15Z",
    }
    body.update(changes)
    return body


async def test_token_answer_has_the_documented_fields(http: httpx.AsyncClient) -> None:
    answer = (await login(http)).json()
    assert answer["token_type"] == "bearer"
    assert answer["expires_in"] == 604799
    assert set(answer) == {"access_token", "token_type", "expires_in", "refresh_token"}


async def test_json_token_request_is_an_unsupported_grant(
    http: httpx.AsyncClient,
) -> None:
    body = {"grant_type": "password", "username": USERNAME, "password": PASSWORD}
    response = await http.post("/api/token", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": "unsupported_grant_type"}


async def test_wrong_password_is_an_invalid_grant(http: httpx.AsyncClient) -> None:
    response = await login(http, password="nope")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_refresh_rotates_and_a_new_login_invalidates(
    http: httpx.AsyncClient,
) -> None:
    first = (await login(http)).json()

    async def refresh(token: str, client_id: str = "bridge") -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": token}
        return await http.post(
            "/api/token", data=form, headers={"client_id": client_id}
        )

    assert (await refresh(first["refresh_token"], "other")).status_code == 400
    second = (await refresh(first["refresh_token"])).json()
    assert (await refresh(first["refresh_token"])).status_code == 400  # rotated

    await login(http)  # same client_id: the old refresh token dies
    assert (await refresh(second["refresh_token"])).status_code == 400
    # ...but access tokens already issued stay valid.
    auth = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await http.get(CALENDARS, headers=auth)).status_code == 200


async def test_bad_bearer_gets_an_html_401(http: httpx.AsyncClient) -> None:
    response = await http.get(CALENDARS, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")


async def test_basic_auth_is_accepted(http: httpx.AsyncClient) -> None:
    credential = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    response = await http.get(
        CALENDARS, headers={"Authorization": f"Basic {credential}"}
    )
    assert response.status_code == 200


async def test_expired_access_token_gets_401(
    http: httpx.AsyncClient, clock: VirtualClock
) -> None:
    auth = await bearer(http)
    clock.advance(604800)
    assert (await http.get(CALENDARS, headers=auth)).status_code == 401


async def test_list_rows_are_partial_and_filters_match_substrings(
    fake: FakeNexudus, http: httpx.AsyncClient
) -> None:
    fake.add_record(SubscriptionId="abc", SystemId="s1")
    fake.add_record(SubscriptionId="XABCX")
    fake.add_record(SubscriptionId="zzz")
    auth = await bearer(http)

    answer = (
        await http.get(
            CALENDARS,
            params={"CoworkerMsOfficeCalendar_SubscriptionId": "abc", "size": 1},
            headers=auth,
        )
    ).json()

    assert set(answer) == LIST_ENVELOPE
    assert answer["TotalItems"] == 2
    assert answer["TotalPages"] == 2
    assert answer["HasNextPage"] is True
    [row] = answer["Records"]
    assert "SystemId" not in row
    assert "Id" in row


async def test_several_by_id(fake: FakeNexudus, http: httpx.AsyncClient) -> None:
    ids = [fake.add_record() for _ in range(4)]
    auth = await bearer(http)
    query = f"[{ids[0]},{ids[2]}]"

    answer = (await http.get(CALENDARS, params={"id": query}, headers=auth)).json()

    assert sorted(row["Id"] for row in answer["Records"]) == [ids[0], ids[2]]


async def test_post_with_missing_fields_is_a_400_envelope(
    fake: FakeNexudus, http: httpx.AsyncClient
) -> None:
    auth = await bearer(http)
    body = full_body()
    del body["Name"]

    response = await http.post(CALENDARS, json=body, headers=auth)

    assert response.status_code == 400
    error = {"AttemptedValue": None, "Message": "is a required field"}
    assert response.json() == {
        "Message": "Name: is a required field",
        "Value": None,
        "Errors": [{**error, "PropertyName": "Name"}],
        "WasSuccessful": False,
    }
    assert fake.records == {}


async def test_put_replaces_the_whole_record(
    fake: FakeNexudus, http: httpx.AsyncClient
) -> None:
    record_id = fake.add_record(SystemId="keep me?")
    auth = await bearer(http)

    response = await http.put(CALENDARS, json=full_body(Id=record_id), headers=auth)

    answer = response.json()
    assert answer["WasSuccessful"] is True
    assert answer["Value"] == {"Id": record_id}
    assert answer["Message"] == "CoworkerMsOfficeCalendar was successfully updated."
    assert fake.records[record_id]["SystemId"] is None
    assert fake.records[record_id]["CreatedOn"] is not None


async def test_unknown_ids_are_404(fake: FakeNexudus, http: httpx.AsyncClient) -> None:
    auth = await bearer(http)
    assert (await http.get(f"{CALENDARS}/5", headers=auth)).status_code == 404
    assert (await http.delete(f"{CALENDARS}/5", headers=auth)).status_code == 404
    put = await http.put(CALENDARS, json=full_body(Id=5), headers=auth)
    assert put.status_code == 404


async def test_write_limit_answers_409_with_retry_after(
    clock: VirtualClock,
) -> None:
    fake = FakeNexudus(clock=clock, write_limit=2)
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        auth = await bearer(http)
        statuses = []
        for _ in range(3):
            clock.advance(10)
            response = await http.post(CALENDARS, json=full_body(), headers=auth)
            statuses.append(response.status_code)

    assert statuses == [200, 200, 409]
    assert response.headers["retry-after"] == "40"
    assert "must wait" in response.json()["Message"]


async def test_calls_are_recorded_without_secrets(
    fake: FakeNexudus, http: httpx.AsyncClient
) -> None:
    auth = await bearer(http)
    await http.get(CALENDARS, headers=auth, params={"page": 2})

    token_call, list_call = fake.calls
    assert token_call.body["password"] == "***"
    assert "authorization" not in list_call.headers
    assert list_call.query == {"page": "2"}
    assert (list_call.method, list_call.path, list_call.status) == (
        "GET",
        CALENDARS,
        200,
    )


@pytest.mark.parametrize(("status", "html"), [(500, False), (502, True), (200, False)])
async def test_fail_next_switch(
    fake: FakeNexudus, http: httpx.AsyncClient, status: int, html: bool
) -> None:
    auth = await bearer(http)
    fake.fail_next(1, status, html=html)

    failed = await http.get(CALENDARS, headers=auth)
    after = await http.get(CALENDARS, headers=auth)

    assert failed.status_code == status
    assert failed.headers["content-type"].startswith("text/html" if html else "appl")
    assert after.json()["Records"] == []
