"""What one action does for a connection, from all the items it claimed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import hypothesis
import pytest
from hypothesis import strategies as st

from bridge.store.connections import Connection, State
from bridge.store.queue import Item
from bridge.sync.plan import RENEWAL_QUIET, Plan, plan

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RENEW_BEFORE = timedelta(days=1)
CURRENT = "current-subscription"
FORMER = "former-subscription"
FAR = NOW + timedelta(days=2)  # not due for renewal
NEAR = NOW + timedelta(hours=12)  # due for renewal

_ids = itertools.count(1)


def connection(
    expires_at: datetime | None = FAR,
    renewed_at: datetime | None = NOW - timedelta(days=1),
) -> Connection:
    return Connection(
        id=1,
        state=State.ACTIVE,
        resource_id=7,
        coworker_id=None,
        user_id="adele@contoso.test",
        calendar_id="calendar",
        name="Room",
        subscription_id=CURRENT,
        subscription_expires_at=expires_at,
        client_state="x" * 40,
        nexudus_record_id=3,
        last_error=None,
        created_at=NOW - timedelta(days=10),
        updated_at=NOW - timedelta(days=1),
        renewed_at=renewed_at,
    )


def item(
    kind: str = "change",
    *,
    event: str | None = None,
    expires: datetime | None = None,
    subscription_id: str = CURRENT,
) -> Item:
    return Item(
        id=next(_ids),
        kind="lifecycle" if event else kind,
        subscription_id=subscription_id,
        connection_id=1,
        lifecycle_event=event,
        subscription_expires_at=expires,
        attempts=1,
    )


def lifecycle(event: str, subscription_id: str = CURRENT) -> Item:
    return item(event=event, subscription_id=subscription_id)


NOTHING = Plan(expiry_seen=None, recreate=False, renew=False, unknown_events=())


def test_a_change_asks_for_a_reconcile_only() -> None:
    assert plan(connection(), [item(), item()], NOW, RENEW_BEFORE) == NOTHING


def test_subscription_removed_recreates() -> None:
    steps = plan(
        connection(),
        [
            item(),
            lifecycle("subscriptionRemoved"),
            lifecycle("reauthorizationRequired"),
        ],
        NOW,
        RENEW_BEFORE,
    )
    assert steps.recreate
    assert not steps.renew


@pytest.mark.parametrize("expired", [NOW, NOW - timedelta(seconds=1)])
def test_an_expired_subscription_is_recreated(expired: datetime) -> None:
    for items in ([item()], [item("renewal")], [lifecycle("reauthorizationRequired")]):
        steps = plan(connection(expires_at=expired), items, NOW, RENEW_BEFORE)
        assert steps.recreate
        assert not steps.renew


def test_a_later_expiry_in_an_item_saves_a_recreate() -> None:
    steps = plan(
        connection(expires_at=NOW - timedelta(minutes=5)),
        [item(expires=FAR)],
        NOW,
        RENEW_BEFORE,
    )
    assert steps == Plan(
        expiry_seen=FAR, recreate=False, renew=False, unknown_events=()
    )


@pytest.mark.parametrize("renewed_ago", [None, timedelta(0), timedelta(hours=1)])
def test_an_operator_renewal_renews_whenever_asked(
    renewed_ago: timedelta | None,
) -> None:
    renewed_at = None if renewed_ago is None else NOW - renewed_ago
    steps = plan(
        connection(expires_at=FAR, renewed_at=renewed_at),
        [item("renew_now"), item()],
        NOW,
        RENEW_BEFORE,
    )
    assert steps == Plan(None, recreate=False, renew=True, unknown_events=())


def test_an_operator_renewal_of_a_removed_subscription_recreates() -> None:
    steps = plan(
        connection(expires_at=FAR),
        [item("renew_now"), lifecycle("subscriptionRemoved")],
        NOW,
        RENEW_BEFORE,
    )
    assert steps.recreate
    assert not steps.renew


@pytest.mark.parametrize(
    ("renewed_ago", "renew"),
    [
        (None, True),
        (timedelta(hours=1), True),
        (RENEWAL_QUIET, True),
        (RENEWAL_QUIET - timedelta(seconds=1), False),
        (timedelta(0), False),
    ],
)
def test_reauthorization_renews_unless_renewed_within_ten_minutes(
    renewed_ago: timedelta | None, renew: bool
) -> None:
    assert timedelta(minutes=10) == RENEWAL_QUIET
    renewed_at = None if renewed_ago is None else NOW - renewed_ago
    steps = plan(
        connection(renewed_at=renewed_at),
        [lifecycle("reauthorizationRequired"), lifecycle("reauthorizationRequired")],
        NOW,
        RENEW_BEFORE,
    )
    assert steps == Plan(None, recreate=False, renew=renew, unknown_events=())


@pytest.mark.parametrize(
    ("expires_at", "renew"),
    [
        (FAR, False),
        (NOW + RENEW_BEFORE, False),
        (NOW + RENEW_BEFORE - timedelta(seconds=1), True),
        (NEAR, True),
    ],
)
def test_a_renewal_item_renews_only_when_falling_due(
    expires_at: datetime, renew: bool
) -> None:
    steps = plan(
        connection(expires_at=expires_at), [item("renewal")], NOW, RENEW_BEFORE
    )
    assert steps == Plan(None, recreate=False, renew=renew, unknown_events=())


def test_a_renewal_falls_due_by_the_latest_expiry_known() -> None:
    """A notification that shows the subscription was renewed meanwhile wins."""
    steps = plan(
        connection(expires_at=NEAR),
        [item("renewal"), item(expires=FAR)],
        NOW,
        RENEW_BEFORE,
    )
    assert steps == Plan(FAR, recreate=False, renew=False, unknown_events=())


def test_a_due_renewal_item_renews_even_within_ten_minutes() -> None:
    # The quiet period is for Graph's reauthorization requests; a renewal the
    # scheduler found due and skipped would not be scheduled again.
    steps = plan(
        connection(expires_at=NEAR, renewed_at=NOW - timedelta(minutes=2)),
        [item("renewal")],
        NOW,
        RENEW_BEFORE,
    )
    assert steps.renew


def test_a_change_near_expiry_leaves_the_renewal_to_the_scheduler() -> None:
    steps = plan(connection(expires_at=NEAR), [item()], NOW, RENEW_BEFORE)
    assert steps == NOTHING


def test_an_unknown_expiry_is_learnt_by_renewing() -> None:
    recently = NOW - timedelta(minutes=1)
    steps = plan(
        connection(expires_at=None, renewed_at=recently), [item()], NOW, RENEW_BEFORE
    )
    assert steps == Plan(None, recreate=False, renew=True, unknown_events=())


@pytest.mark.parametrize(
    "former",
    [
        lifecycle("subscriptionRemoved", FORMER),
        lifecycle("reauthorizationRequired", FORMER),
        lifecycle("somethingNew", FORMER),
        item("renewal", subscription_id=FORMER),
        item(expires=NOW + timedelta(days=5), subscription_id=FORMER),
    ],
    ids=["removed", "reauthorization", "unknown", "renewal", "expiry"],
)
def test_items_of_a_former_subscription_ask_for_nothing(former: Item) -> None:
    """They stay in the claim (and are settled with it), but change no step."""
    healthy = connection(expires_at=NEAR)
    assert plan(healthy, [former], NOW, RENEW_BEFORE) == NOTHING
    assert plan(healthy, [former, item()], NOW, RENEW_BEFORE) == NOTHING


def test_unknown_events_are_listed_once_sorted() -> None:
    steps = plan(
        connection(),
        [
            lifecycle("zebraEvent"),
            lifecycle("missed"),
            lifecycle("alphaEvent"),
            lifecycle("zebraEvent"),
        ],
        NOW,
        RENEW_BEFORE,
    )
    assert steps == Plan(
        None, recreate=False, renew=False, unknown_events=("alphaEvent", "zebraEvent")
    )


def test_missed_asks_for_a_reconcile_only() -> None:
    assert plan(connection(), [lifecycle("missed")], NOW, RENEW_BEFORE) == NOTHING


# -- properties ----------------------------------------------------------------------

moments = st.integers(min_value=-3 * 24 * 3600, max_value=5 * 24 * 3600).map(
    lambda seconds: NOW + timedelta(seconds=seconds)
)
events = st.sampled_from(
    [None, "reauthorizationRequired", "subscriptionRemoved", "missed", "other"]
)
items = st.builds(
    lambda kind, event, expires, current: item(
        kind,
        event=event,
        expires=expires,
        subscription_id=CURRENT if current else FORMER,
    ),
    kind=st.sampled_from(["change", "renewal", "reconcile", "renew_now"]),
    event=events,
    expires=st.none() | moments,
    current=st.booleans(),
)
FEW = hypothesis.settings(max_examples=50)
connections = st.builds(
    connection, expires_at=st.none() | moments, renewed_at=st.none() | moments
)


@FEW
@hypothesis.given(connection=connections, claimed=st.lists(items, max_size=6))
def test_never_both_recreate_and_renew(
    connection: Connection, claimed: list[Item]
) -> None:
    steps = plan(connection, claimed, NOW, RENEW_BEFORE)
    assert not (steps.recreate and steps.renew)


@FEW
@hypothesis.given(connection=connections, claimed=st.lists(items, max_size=6))
def test_expiry_seen_is_the_latest_of_the_current_subscription(
    connection: Connection, claimed: list[Item]
) -> None:
    steps = plan(connection, claimed, NOW, RENEW_BEFORE)
    seen = [
        i.subscription_expires_at
        for i in claimed
        if i.subscription_id == CURRENT and i.subscription_expires_at is not None
    ]
    assert steps.expiry_seen == (max(seen) if seen else None)


@FEW
@hypothesis.given(
    connection=connections,
    claimed=st.lists(items, max_size=6),
    data=st.data(),
)
def test_coalescing_order_and_copies_do_not_matter(
    connection: Connection, claimed: list[Item], data: st.DataObject
) -> None:
    once = plan(connection, claimed, NOW, RENEW_BEFORE)
    shuffled = data.draw(st.permutations(claimed))
    assert plan(connection, shuffled, NOW, RENEW_BEFORE) == once
    assert plan(connection, claimed + shuffled, NOW, RENEW_BEFORE) == once


@FEW
@hypothesis.given(connection=connections, claimed=st.lists(items, max_size=6))
def test_former_subscription_items_change_nothing(
    connection: Connection, claimed: list[Item]
) -> None:
    current_only = [i for i in claimed if i.subscription_id == CURRENT]
    assert plan(connection, claimed, NOW, RENEW_BEFORE) == plan(
        connection, current_only, NOW, RENEW_BEFORE
    )


@FEW
@hypothesis.given(connection=connections, claimed=st.lists(items, max_size=6))
def test_a_removed_or_expired_subscription_is_always_recreated(
    connection: Connection, claimed: list[Item]
) -> None:
    steps = plan(connection, claimed, NOW, RENEW_BEFORE)
    current = [i for i in claimed if i.subscription_id == CURRENT]
    removed = any(i.lifecycle_event == "subscriptionRemoved" for i in current)
    known = [
        e
        for e in (
            connection.subscription_expires_at,
            *(i.subscription_expires_at for i in current),
        )
        if e is not None
    ]
    if removed or (known and max(known) <= NOW):
        assert steps.recreate
    else:
        assert not steps.recreate
        assert steps.renew or known  # an unknown expiry is always renewed
