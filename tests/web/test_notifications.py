"""Graph's payloads replayed through the app: status codes, exactly what is stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.seeds import (
    FIXTURES,
    SECRET_A,
    SUBSCRIPTION_A,
    SUBSCRIPTION_B,
    fixture,
    inserts_failing,
    stored_items,
)

URLS = ["/graph/notifications", "/graph/lifecycle"]
EXPIRY = datetime(2026, 11, 23, 9, 12, 45, 969665, tzinfo=UTC)
LIFECYCLE_EXPIRY = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def summary(item: dict[str, Any]) -> tuple[object, ...]:
    return (
        item["state"],
        item["kind"],
        item["subscription_id"],
        item["change_type"] or item["lifecycle_event"],
        item["etag"][-4:-1] if item["etag"] else None,
    )


async def post(client: httpx.AsyncClient, body: bytes, url: str = URLS[0]) -> int:
    response = await client.post(
        url, content=body, headers={"Content-Type": "application/json"}
    )
    return response.status_code


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "event-created.json",
            [("pending", "change", SUBSCRIPTION_A, "created", "/jr")],
        ),
        (
            "event-updated-burst.json",
            [
                ("pending", "change", SUBSCRIPTION_A, "created", "/jr"),
                ("pending", "change", SUBSCRIPTION_A, "updated", "/js"),
            ],
        ),
        (
            "event-deleted.json",
            [("pending", "change", SUBSCRIPTION_A, "deleted", "/jt")],
        ),
        (
            "batch-two-subscriptions.json",
            [
                ("pending", "change", SUBSCRIPTION_A, "updated", "/ju"),
                ("pending", "change", SUBSCRIPTION_B, "created", "/01"),
                ("pending", "change", SUBSCRIPTION_B, "updated", "/02"),
            ],
        ),
        ("event-wrong-client-state.json", []),
        (
            "event-unknown-subscription.json",
            [
                (
                    "ignored",
                    "change",
                    "00000000-1111-2222-3333-444444444444",
                    "updated",
                    "/jw",
                )
            ],
        ),
        (
            "event-renewed-expiry.json",
            [("pending", "change", SUBSCRIPTION_A, "updated", "/jx")],
        ),
        (
            "lifecycle-reauthorization-required.json",
            [("pending", "lifecycle", SUBSCRIPTION_A, "reauthorizationRequired", None)],
        ),
        (
            "lifecycle-subscription-removed.json",
            [("pending", "lifecycle", SUBSCRIPTION_A, "subscriptionRemoved", None)],
        ),
        (
            "lifecycle-missed.json",
            [("pending", "lifecycle", SUBSCRIPTION_B, "missed", None)],
        ),
    ],
)
@pytest.mark.parametrize("url", URLS)
async def test_replayed_fixture_is_stored_exactly(
    client: httpx.AsyncClient,
    engine: Engine,
    name: str,
    expected: list[tuple[object, ...]],
    url: str,
) -> None:
    assert await post(client, fixture(name), url) == 202
    assert [summary(item) for item in stored_items(engine)] == expected
    # A second delivery of the same payload stores nothing more.
    assert await post(client, fixture(name), url) == 202
    assert len(stored_items(engine)) == len(expected)


async def test_stored_item_keeps_the_raw_item_and_its_facts(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    assert await post(client, fixture("event-created.json")) == 202
    [item] = stored_items(engine)
    sent = json.loads(fixture("event-created.json"))["value"][0]
    assert json.loads(item["raw"]) == sent
    assert item["connection_id"] is not None
    assert item["subscription_expires_at"] == EXPIRY
    assert item["resource"] == sent["resource"]
    assert item["tenant_id"] == sent["tenantId"]
    assert item["attempts"] == 0
    assert item["next_attempt_at"] == item["received_at"]
    assert item["last_error"] is None


async def test_lifecycle_expiry_in_z_form_is_parsed(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    assert await post(client, fixture("lifecycle-missed.json")) == 202
    [item] = stored_items(engine)
    assert item["subscription_expires_at"] == LIFECYCLE_EXPIRY


def notification(**changes: object) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(fixture("event-created.json"))["value"][0]
    item.update(changes)
    return {key: value for key, value in item.items() if value is not None}


@pytest.mark.parametrize(
    "item",
    [
        notification(
            subscriptionExpirationDateTime="2026-11-23T01:12:45.9696658-08:00"
        ),
        notification(
            resource="Users('0d7e4b9c-2f61-4a83-b5d0-9c1e7f3a6b28')/Events('AAMk=')",
            resourceData={"@odata.type": "#Microsoft.Graph.Event", "id": "AAMk="},
        ),
        notification(id="optional-id", somethingNew={"nested": [1, 2]}),
        notification(changeType="unknownFutureValue"),
        notification(changeType=None, lifecycleEvent="somethingNewFromGraph"),
    ],
    ids=["offset", "odata-key-form", "extra-fields", "unknown-change", "unknown-event"],
)
async def test_real_traffic_variants_are_stored(
    client: httpx.AsyncClient, engine: Engine, item: dict[str, Any]
) -> None:
    assert await post(client, json.dumps({"value": [item]}).encode()) == 202
    [stored] = stored_items(engine)
    assert stored["state"] == "pending"
    assert json.loads(stored["raw"]) == item


async def test_non_utc_offset_is_stored_as_utc(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    item = notification(subscriptionExpirationDateTime="2026-11-23T01:12:45.96-08:00")
    assert await post(client, json.dumps({"value": [item]}).encode()) == 202
    [stored] = stored_items(engine)
    assert stored["subscription_expires_at"] == datetime(
        2026, 11, 23, 9, 12, 45, 960000, tzinfo=UTC
    )


async def test_resource_data_notifications_are_tolerated(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    item = notification(
        encryptedContent={"data": "x", "dataKey": "y", "dataSignature": "z"}
    )
    body = {"value": [item], "validationTokens": ["eyJ0eXAiOiJKV1Qi"]}
    assert await post(client, json.dumps(body).encode()) == 202
    assert len(stored_items(engine)) == 1


async def test_empty_collection_is_accepted(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    assert await post(client, b'{"value": []}') == 202
    assert stored_items(engine) == []


async def test_copies_equal_in_meaning_are_stored_once(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    first = notification()
    # Same change, other path form, other fraction of the same second, new `id`.
    second = notification(
        resource="Users('x')/Events('AAMkAGI2TG93AAA-event-one-0001=')",
        subscriptionExpirationDateTime="2026-11-23T09:12:45.1+00:00",
        id="another-delivery",
    )
    later = notification(
        subscriptionExpirationDateTime="2026-11-23T09:12:46.0000000+00:00"
    )
    body = json.dumps({"value": [first, second, later]}).encode()
    assert await post(client, body) == 202
    assert len(stored_items(engine)) == 2


async def test_mismatched_or_missing_secret_is_not_stored(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    items = [
        notification(clientState=SECRET_A[:-1]),
        notification(clientState=None),
        notification(clientState=SECRET_A + "x"),
        notification(clientState=""),
    ]
    assert await post(client, json.dumps({"value": items}).encode()) == 202
    assert stored_items(engine) == []


async def test_bad_secret_does_not_stop_the_rest_of_the_batch(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    items = [notification(clientState="forged"), notification()]
    assert await post(client, json.dumps({"value": items}).encode()) == 202
    assert [item["state"] for item in stored_items(engine)] == ["pending"]


MALFORMED = sorted((FIXTURES / "malformed").iterdir())


@pytest.mark.parametrize("path", MALFORMED, ids=[path.name for path in MALFORMED])
async def test_malformed_body_is_a_clear_400_and_nothing_is_stored(
    client: httpx.AsyncClient, engine: Engine, path: Any
) -> None:
    response = await client.post(URLS[0], content=path.read_bytes())
    assert response.status_code == 400
    error = response.json()["error"]
    assert isinstance(error, str)
    assert error
    assert "\n" not in error
    assert SECRET_A not in error
    assert stored_items(engine) == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[1, 2]", "JSON object"),
        (b'{"value": {}}', "value: Input should be a valid list"),
        (b'{"value": [{"subscriptionId": "s", "clientState": "c"}]}', "neither"),
        (b'{"value": [{"subscriptionId": 1, "changeType": "updated"}]}', "string"),
        (
            b'{"value": [{"subscriptionId": "s", "changeType": "updated", '
            b'"subscriptionExpirationDateTime": 1763000000}]}',
            "ISO 8601",
        ),
        (
            b'{"value": [{"subscriptionId": "s", "changeType": "updated", '
            b'"subscriptionExpirationDateTime": "2026-11-23T09:12:45"}]}',
            "timezone",
        ),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"value": [' + b"1" * 5000 + b"]}", "not valid JSON"),
    ],
)
async def test_error_says_what_is_wrong(
    client: httpx.AsyncClient, body: bytes, says: str
) -> None:
    response = await client.post(URLS[0], content=body)
    assert response.status_code == 400
    assert says in response.json()["error"]


async def test_a_nul_character_is_refused_by_name_wherever_it_is_stored(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    item = notification()
    item["resourceData"] = {**item["resourceData"], "@odata.etag": 'W/"a\u0000b"'}
    response = await client.post(URLS[0], json={"value": [notification(), item]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "value.1.resourceData.@odata.etag" in error
    assert "must not contain U+0000" in error
    assert stored_items(engine) == []


@pytest.mark.parametrize(
    "item",
    [
        # A backslash and "u0000" as text: the JSON holds `\\u0000`, no NUL.
        notification(resource="Users/u/Events/back\\u0000slash"),
        # Not a field the bridge reads: kept, escaped, in the raw item.
        notification(somethingNew="a\u0000b"),
    ],
    ids=["escaped-backslash", "unknown-field"],
)
async def test_what_only_looks_like_a_nul_or_is_not_stored_apart_is_taken(
    client: httpx.AsyncClient, engine: Engine, item: dict[str, Any]
) -> None:
    assert await post(client, json.dumps({"value": [item]}).encode()) == 202
    [stored] = stored_items(engine)
    assert json.loads(stored["raw"]) == item


async def test_clientstate_is_never_echoed_in_errors(client: httpx.AsyncClient) -> None:
    body = {"value": [{"subscriptionId": "s", "clientState": SECRET_A}]}
    response = await client.post(URLS[0], json=body)
    assert response.status_code == 400
    assert SECRET_A not in response.text


# -- size cap ---------------------------------------------------------------------


async def test_declared_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"value": [' + b" " * 1_048_577 + b"]}"
    response = await client.post(URLS[0], content=body)
    assert response.status_code == 413


async def test_streamed_oversize_body_is_413_without_reading_it_all(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB in all, with no Content-Length
            sent += 65536
            yield b" " * 65536

    response = await client.post(URLS[0], content=chunks())
    assert response.status_code == 413
    assert sent <= 1_048_576 + 2 * 65536
    assert stored_items(engine) == []


# -- durability ---------------------------------------------------------------------


async def test_database_failure_is_503_and_nothing_is_acknowledged(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    with inserts_failing(engine):
        status = await post(client, fixture("event-created.json"))
    assert status == 503
    assert stored_items(engine) == []
    # The same delivery, retried by Graph once the database is back, is stored.
    assert await post(client, fixture("event-created.json")) == 202
    assert len(stored_items(engine)) == 1
