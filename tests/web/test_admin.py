"""The admin API over HTTP (in-process), with the worker and the fakes behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.seeds import CONNECTION_KEYS
from tests.sync.conftest import USER, Bridge, running_bridge

TOKEN = "a-long-random-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def bridge(database_url: str) -> AsyncIterator[Bridge]:
    async with running_bridge(database_url, BRIDGE_ADMIN_TOKEN=TOKEN) as running:
        yield running


async def post_connection(bridge: Bridge, **body: Any) -> httpx.Response:
    return await bridge.web.post(
        "/admin/connections",
        json={"resource_id": 7, "user_id": USER, **body},
        headers=AUTH,
    )


async def test_without_a_configured_token_the_api_says_so(database_url: str) -> None:
    async with running_bridge(database_url) as bare:
        answer = await bare.web.get("/admin/connections", headers=AUTH)
    assert answer.status_code == 503
    assert "BRIDGE_ADMIN_TOKEN" in answer.json()["error"]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
)
async def test_a_missing_or_wrong_token_is_401(
    bridge: Bridge, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    answer = await bridge.web.get("/admin/connections", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/admin/connections"),
        ("GET", "/admin/connections/1"),
        ("DELETE", "/admin/connections/1"),
        ("POST", "/admin/connections/1/renew"),
        ("GET", "/admin/inbox"),
        ("POST", "/admin/inbox/1/retry"),
    ],
)
async def test_every_route_wants_the_token(
    bridge: Bridge, method: str, path: str
) -> None:
    connection = (await post_connection(bridge)).json()
    answer = await bridge.web.request(method, path, headers={"Authorization": "x"})
    assert answer.status_code == 401
    shown = await bridge.web.get(f"/admin/connections/{connection['id']}", headers=AUTH)
    assert shown.json() == connection  # nothing was done
    assert set(answer.json()) == {"error", "detail"}


async def test_connect_then_list_and_show(bridge: Bridge) -> None:
    created = await post_connection(bridge, name="Room 1", coworker_id=42)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown["state"] == "active"
    assert shown["name"] == "Room 1"
    assert shown["coworker_id"] == 42
    assert shown["calendar_id"] == bridge.graph.mailboxes[USER].default.id
    assert shown["nexudus_record_id"] in bridge.nexudus.records
    assert shown["subscription_expires_at"].endswith("Z")
    assert set(shown) == CONNECTION_KEYS
    one = await bridge.web.get(f"/admin/connections/{shown['id']}", headers=AUTH)
    assert one.json() == shown
    listed = await bridge.web.get("/admin/connections?state=active", headers=AUTH)
    assert listed.json() == {"items": [shown], "next_offset": None}


async def test_connecting_the_same_calendar_again_returns_the_connection(
    bridge: Bridge,
) -> None:
    first = await post_connection(bridge)
    again = await post_connection(bridge)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(bridge.graph.subscriptions) == 1
    assert len(bridge.nexudus.records) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"resource_id": 0, "user_id": USER}, "resource_id"),
        ({"resource_id": "7", "user_id": USER}, "resource_id"),
        ({"resource_id": 7, "user_id": ""}, "user_id"),
        ({"resource_id": 7}, "user_id"),
        ({"resource_id": 7, "user_id": USER, "colour": "red"}, "colour"),
        # Beyond what the database holds (it would fail after Graph said yes).
        ({"resource_id": 2**63, "user_id": USER}, "resource_id"),
        ({"resource_id": 7, "user_id": USER, "coworker_id": 10**30}, "coworker_id"),
        # PostgreSQL cannot store U+0000; no real id or name has a control character.
        ({"resource_id": 7, "user_id": USER, "name": "Room\u00001"}, "name"),
        (
            {"resource_id": 7, "user_id": USER, "calendar_id": "AAMk\u0000"},
            "calendar_id",
        ),
        ({"resource_id": 7, "user_id": "adele\u0000@contoso.test"}, "user_id"),
    ],
)
async def test_invalid_input_is_400_naming_the_field(
    bridge: Bridge, body: dict[str, Any], says: str
) -> None:
    answer = await bridge.web.post("/admin/connections", json=body, headers=AUTH)
    assert answer.status_code == 400
    assert says in answer.json()["error"]
    assert bridge.graph.subscriptions == {}


@pytest.mark.parametrize(
    ("method", "path", "says"),
    [
        ("GET", "/admin/connections/{id}", "no connection"),
        ("DELETE", "/admin/connections/{id}", "no connection"),
        ("POST", "/admin/connections/{id}/renew", "no connection"),
        ("POST", "/admin/inbox/{id}/retry", "no inbox item"),
    ],
)
async def test_an_id_beyond_what_the_database_holds_is_404(
    bridge: Bridge, method: str, path: str, says: str
) -> None:
    for number in (2**63, 10**30):
        answer = await bridge.web.request(method, path.format(id=number), headers=AUTH)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == f"{says} {number}"


async def test_an_unknown_mailbox_is_a_502_naming_graph(bridge: Bridge) -> None:
    answer = await bridge.web.post(
        "/admin/connections",
        json={"resource_id": 7, "user_id": "nobody@contoso.test"},
        headers=AUTH,
    )
    assert answer.status_code == 502
    assert answer.json()["detail"]["upstream"] == "Graph"


async def test_paging(bridge: Bridge) -> None:
    for resource_id in (1, 2, 3):
        assert (await post_connection(bridge, resource_id=resource_id)).is_success
    first = (await bridge.web.get("/admin/connections?limit=2", headers=AUTH)).json()
    assert [c["resource_id"] for c in first["items"]] == [1, 2]
    assert first["next_offset"] == 2
    rest = (
        await bridge.web.get("/admin/connections?limit=2&offset=2", headers=AUTH)
    ).json()
    assert [c["resource_id"] for c in rest["items"]] == [3]
    assert rest["next_offset"] is None
    for query in ("limit=0", "limit=1001", "offset=-1", "state=sleeping"):
        bad = await bridge.web.get(f"/admin/connections?{query}", headers=AUTH)
        assert bad.status_code == 400, query


async def test_a_dead_item_is_retried_and_converges(bridge: Bridge) -> None:
    connection = (await post_connection(bridge)).json()
    bridge.nexudus.fail_next(1, 400, method="PUT")
    record = bridge.nexudus.records[connection["nexudus_record_id"]]
    record["Name"] = "changed in Nexudus"
    await bridge.graph.deliver(connection["subscription_id"])
    await bridge.settled()
    dead = (await bridge.web.get("/admin/inbox?state=dead", headers=AUTH)).json()
    [item] = dead["items"]
    assert item["connection_id"] == connection["id"]
    assert item["last_error"]
    retried = await bridge.web.post(f"/admin/inbox/{item['id']}/retry", headers=AUTH)
    assert retried.status_code == 200
    assert retried.json()["state"] == "pending"
    await bridge.settled()
    assert record["Name"] != "changed in Nexudus"
    again = await bridge.web.post(f"/admin/inbox/{item['id']}/retry", headers=AUTH)
    assert again.status_code == 409
    missing = await bridge.web.post("/admin/inbox/999999/retry", headers=AUTH)
    assert missing.status_code == 404
