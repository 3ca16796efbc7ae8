"""GraphClient against the fake Graph, in-process: the calls and their repairs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.graph._errors import Conflict, ExpirationTooFar, NotFound
from bridge.graph.subscriptions import GraphClient, new_client_state
from tests.fakes.graph import FakeGraph
from tests.graph.conftest import LIFECYCLE, NOTIFY, USER, Answerer

RESOURCE = f"users/{USER}/events"


def hours(n: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=n)


async def test_create_sends_the_contract_and_graph_validates_both_urls(
    client: GraphClient, graph: FakeGraph, answerer: Answerer
) -> None:
    state = new_client_state()
    expires = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    graph.max_expiration_minutes = 10**8  # this test is about the body, not limits

    made = await client.create_subscription(RESOURCE, NOTIFY, LIFECYCLE, expires, state)

    (call,) = graph.calls_to("POST", "/subscriptions")
    assert call.prefer == 'IdType="ImmutableId"'
    assert call.body == {
        "changeType": "created,updated,deleted",
        "notificationUrl": NOTIFY,
        "lifecycleNotificationUrl": LIFECYCLE,
        "resource": RESOURCE,
        "expirationDateTime": "2030-01-01T12:00:00Z",
        "clientState": state,
        "latestSupportedTlsVersion": "v1_2",
    }
    assert [h.url for h in graph.handshakes] == [NOTIFY, LIFECYCLE]
    assert all(h.ok for h in graph.handshakes)
    assert answerer.seen == ["/graph/notifications", "/graph/lifecycle"]
    assert made.id in graph.subscriptions
    assert made.resource == RESOURCE
    assert made.expires_at == datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert made.expires_at.tzinfo is UTC
    assert made.notification_url == NOTIFY
    assert made.lifecycle_url == LIFECYCLE
    assert made.client_state == state
    assert state not in repr(made)


async def test_create_without_lifecycle_url_validates_one_url(
    client: GraphClient, graph: FakeGraph
) -> None:
    made = await client.create_subscription(RESOURCE, NOTIFY, None, hours(2), "s" * 40)

    assert made.lifecycle_url is None
    assert [h.url for h in graph.handshakes] == [NOTIFY]
    assert "lifecycleNotificationUrl" not in graph.calls[0].body


async def test_create_for_one_calendar(client: GraphClient, graph: FakeGraph) -> None:
    resource = f"users/{USER}/calendars/AAMkRoomCal1=/events"

    made = await client.create_subscription(resource, NOTIFY, None, hours(2), "x" * 40)

    assert graph.subscriptions[made.id].resource == resource


async def test_conflict_replaces_the_existing_subscription(
    client: GraphClient, graph: FakeGraph
) -> None:
    old = graph.seed_subscription("/Users/" + USER.upper() + "/events")
    graph.seed_subscription(f"users/{USER}/calendars/AAMkRoomCal1=/events")

    made = await client.create_subscription(RESOURCE, NOTIFY, None, hours(2), "c" * 40)

    assert old.id not in graph.subscriptions
    assert made.id in graph.subscriptions
    assert len(graph.subscriptions) == 2
    assert [c.status for c in graph.calls_to("POST")] == [409, 201]
    assert [c.status for c in graph.calls_to("DELETE")] == [204]


async def test_conflict_with_a_subscription_we_cannot_list_is_reported(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.seed_subscription(RESOURCE, foreign=True)

    with pytest.raises(Conflict, match="cannot see"):
        await client.create_subscription(RESOURCE, NOTIFY, None, hours(2), "c" * 40)


async def test_conflict_twice_is_reported(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.seed_subscription(RESOURCE)
    graph.fail_next(409, method="POST", path="/subscriptions", times=2, message="dup")

    with pytest.raises(Conflict):
        await client.create_subscription(RESOURCE, NOTIFY, None, hours(2), "c" * 40)
    assert len(graph.calls_to("POST")) == 2


async def test_expiry_too_far_is_retried_once_just_under_the_limit(
    client: GraphClient, graph: FakeGraph
) -> None:
    made = await client.create_subscription(
        RESOURCE, NOTIFY, None, hours(100), "e" * 40
    )

    first, second = graph.calls_to("POST")
    assert (first.status, second.status) == (400, 201)
    lifetime = made.expires_at - datetime.now(UTC)
    assert timedelta(minutes=4190) < lifetime <= timedelta(minutes=4200)


async def test_expiry_retry_uses_the_limit_graph_states(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.max_expiration_minutes = 1440

    made = await client.create_subscription(RESOURCE, NOTIFY, None, hours(50), "e" * 40)

    lifetime = made.expires_at - datetime.now(UTC)
    assert timedelta(minutes=1400) < lifetime <= timedelta(minutes=1410)


async def test_expiry_refused_twice_is_reported(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.fail_next(
        400,
        times=2,
        code="ExtensionError",
        message="Subscription expiration can only be 4230 minutes in the future.",
    )

    with pytest.raises(ExpirationTooFar) as caught:
        await client.create_subscription(RESOURCE, NOTIFY, None, hours(100), "e" * 40)

    assert caught.value.max_minutes == 4230
    assert len(graph.calls_to("POST")) == 2


async def test_expiry_error_for_a_short_request_is_not_retried(
    client: GraphClient, graph: FakeGraph
) -> None:
    graph.fail_next(
        400, message="Subscription expiration can only be 4230 minutes in the future."
    )

    with pytest.raises(ExpirationTooFar):
        await client.create_subscription(RESOURCE, NOTIFY, None, hours(1), "e" * 40)
    assert len(graph.calls_to("POST")) == 1


async def test_renew_moves_the_expiry(client: GraphClient, graph: FakeGraph) -> None:
    made = await client.create_subscription(RESOURCE, NOTIFY, None, hours(2), "r" * 40)
    later = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    graph.max_expiration_minutes = 10**8

    renewed = await client.renew_subscription(made.id, later)

    assert renewed.id == made.id
    assert renewed.expires_at == later
    (call,) = graph.calls_to("PATCH")
    assert call.body == {"expirationDateTime": "2031-05-06T07:08:09Z"}


async def test_renew_too_far_retries_once(
    client: GraphClient, graph: FakeGraph
) -> None:
    made = await client.create_subscription(RESOURCE, NOTIFY, None, hours(2), "r" * 40)

    renewed = await client.renew_subscription(made.id, hours(90))

    assert [c.status for c in graph.calls_to("PATCH")] == [400, 200]
    assert renewed.expires_at - datetime.now(UTC) <= timedelta(minutes=4200)


async def test_renew_of_a_missing_subscription_is_not_found(
    client: GraphClient,
) -> None:
    with pytest.raises(NotFound):
        await client.renew_subscription(
            "6e0c1b9f-0000-4000-8000-000000000000", hours(2)
        )


async def test_delete_and_delete_again(client: GraphClient, graph: FakeGraph) -> None:
    made = await client.create_subscription(RESOURCE, NOTIFY, None, hours(2), "d" * 40)

    await client.delete_subscription(made.id)
    await client.delete_subscription(made.id)

    assert made.id not in graph.subscriptions
    assert [c.status for c in graph.calls_to("DELETE")] == [204, 404]


async def test_list_follows_next_links(client: GraphClient, graph: FakeGraph) -> None:
    graph.page_size = 2
    seeded = {graph.seed_subscription(f"users/u{i}/events").id for i in range(5)}
    graph.seed_subscription("users/other/events", foreign=True)

    listed = await client.list_subscriptions()

    assert {s.id for s in listed} == seeded
    assert len(graph.calls_to("GET", "/subscriptions")) == 3
    assert all(s.client_state is None for s in listed)


async def test_default_calendar_and_calendar_by_id(
    client: GraphClient, graph: FakeGraph
) -> None:
    mailbox = graph.mailboxes[USER]

    default = await client.get_default_calendar(USER)
    room = await client.get_calendar(USER, "AAMkRoomCal1=")

    assert (default.id, default.name) == (mailbox.default.id, "Calendar")
    assert (room.id, room.name) == ("AAMkRoomCal1=", "Room 1")


async def test_unknown_calendar_and_unknown_user_are_not_found(
    client: GraphClient,
) -> None:
    with pytest.raises(NotFound):
        await client.get_calendar(USER, "AAMkNope=")
    with pytest.raises(NotFound, match="ErrorInvalidUser"):
        await client.get_default_calendar("nobody@example.com")


def test_client_state_is_long_random_and_url_safe() -> None:
    states = {new_client_state() for _ in range(100)}

    assert len(states) == 100
    for state in states:
        assert 32 <= len(state) <= 128
        assert state.replace("-", "").replace("_", "").isalnum()


async def test_fake_graph_delivers_notifications_with_the_client_state(
    client: GraphClient, graph: FakeGraph, answerer: Answerer
) -> None:
    state = new_client_state()
    made = await client.create_subscription(
        RESOURCE, NOTIFY, LIFECYCLE, hours(2), state
    )

    changed = await graph.deliver(made.id, change_type="created", event_id="AAMkEv1")
    lifecycle = await graph.deliver_lifecycle(made.id, "reauthorizationRequired")

    assert (changed.status_code, lifecycle.status_code) == (202, 202)
    (path, body), (lifecycle_path, lifecycle_body) = answerer.received
    (item,) = body["value"]
    assert path == "/graph/notifications"
    assert item["subscriptionId"] == made.id
    assert item["clientState"] == state
    assert item["changeType"] == "created"
    assert item["resource"] == f"Users/{USER}/Events/AAMkEv1"
    assert lifecycle_path == "/graph/lifecycle"
    assert lifecycle_body["value"][0]["lifecycleEvent"] == "reauthorizationRequired"
