"""Connections: expiry only moving forward, replaced subscriptions, renewals due."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import hypothesis
import pytest
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from bridge.store import connections as store
from bridge.store import db
from bridge.store.connections import Connection, State
from bridge.store.schema import connections, inbox, subscription_aliases
from tests.seeds import CONNECTION_KEYS, SECRET_A, SUBSCRIPTION_A, SUBSCRIPTION_B

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def get(engine: Engine, connection_id: int) -> Connection:
    with db.reading(engine) as conn:
        found = store.get(conn, connection_id)
    assert found is not None
    return found


def by_subscription(engine: Engine, subscription_id: str) -> Connection:
    with db.reading(engine) as conn:
        connection_id = conn.execute(
            select(connections.c.id).where(
                connections.c.subscription_id == subscription_id
            )
        ).scalar_one()
    return get(engine, connection_id)


def new_connection(
    engine: Engine,
    subscription_id: str,
    expires_at: datetime,
    state: State = State.ACTIVE,
) -> int:
    with db.writing(engine) as conn:
        made = store.insert(
            conn,
            state=state,
            resource_id=500,
            coworker_id=None,
            user_id="someone@contoso.test",
            calendar_id=f"calendar-{subscription_id}",
            name=None,
            subscription_id=subscription_id,
            subscription_expires_at=expires_at,
            client_state="s" * 40,
            now=NOW,
        )
    return made.id


def advance(engine: Engine, subscription_id: str, expires_at: datetime) -> bool:
    with db.writing(engine) as conn:
        return store.advance_expiry(conn, subscription_id, expires_at, NOW)


# -- advance_expiry ------------------------------------------------------------------


def test_advance_expiry_moves_forward_to_the_second(engine: Engine) -> None:
    a = by_subscription(engine, SUBSCRIPTION_A)
    assert a.subscription_expires_at is None
    t = datetime(2025, 3, 4, 8, 0, 0, tzinfo=UTC)

    assert advance(engine, SUBSCRIPTION_A, t + timedelta(microseconds=700_000))
    assert get(engine, a.id).subscription_expires_at == t
    assert get(engine, a.id).updated_at == NOW

    assert advance(engine, SUBSCRIPTION_A, t + timedelta(seconds=1))
    assert get(engine, a.id).subscription_expires_at == t + timedelta(seconds=1)


@pytest.mark.parametrize(
    "given",
    [
        timedelta(0),  # the same
        timedelta(microseconds=999_999),  # the same second
        -timedelta(seconds=1),  # older
        -timedelta(days=2),
    ],
)
def test_advance_expiry_never_moves_back(engine: Engine, given: timedelta) -> None:
    t = datetime(2025, 3, 4, 8, 0, 0, tzinfo=UTC)
    advance(engine, SUBSCRIPTION_A, t)
    a = by_subscription(engine, SUBSCRIPTION_A)
    later = NOW + timedelta(hours=1)

    with db.writing(engine) as conn:
        moved = store.advance_expiry(conn, SUBSCRIPTION_A, t + given, later)

    assert moved is False
    assert get(engine, a.id) == a  # not even updated_at


def test_advance_expiry_touches_only_that_subscription(engine: Engine) -> None:
    b = by_subscription(engine, SUBSCRIPTION_B)
    assert advance(engine, SUBSCRIPTION_A, NOW + timedelta(days=1))
    assert not advance(engine, "no-such-subscription", NOW + timedelta(days=1))
    assert get(engine, b.id) == b


@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    offsets=st.lists(
        st.integers(min_value=0, max_value=10_000_000), min_size=1, max_size=8
    )
)
def test_stored_expiry_is_the_latest_seen(engine: Engine, offsets: list[int]) -> None:
    """In any order of arrival, the stored expiry ends as the latest, to the second."""
    a = by_subscription(engine, SUBSCRIPTION_A)
    base = datetime(2025, 3, 4, tzinfo=UTC)
    expiries = [base + timedelta(microseconds=offset) for offset in offsets]
    with db.writing(engine) as conn:
        store.update(conn, a.id, NOW, subscription_expires_at=None)
        moved = [
            store.advance_expiry(conn, SUBSCRIPTION_A, expiry, NOW)
            for expiry in expiries
        ]
    seconds = [expiry.replace(microsecond=0) for expiry in expiries]
    assert get(engine, a.id).subscription_expires_at == max(seconds)
    assert moved == [
        n == 0 or second > max(seconds[:n]) for n, second in enumerate(seconds)
    ]


# -- replace_subscription ------------------------------------------------------------


def test_replace_subscription_keeps_the_old_id_and_secret_as_alias(
    engine: Engine,
) -> None:
    old = by_subscription(engine, SUBSCRIPTION_A)
    later = NOW + timedelta(minutes=3)
    expires = datetime(2025, 3, 4, 10, 0, 0, 250_000, tzinfo=UTC)

    with db.writing(engine) as conn:
        store.replace_subscription(
            conn,
            old,
            subscription_id="new-subscription",
            client_state="n" * 40,
            expires_at=expires,
            now=later,
        )

    fresh = get(engine, old.id)
    assert fresh.subscription_id == "new-subscription"
    assert fresh.client_state == "n" * 40
    assert fresh.subscription_expires_at == expires.replace(microsecond=0)
    assert fresh.renewed_at == later
    assert fresh.updated_at == later
    assert (fresh.resource_id, fresh.user_id, fresh.state) == (
        old.resource_id,
        old.user_id,
        old.state,
    )
    with db.reading(engine) as conn:
        assert store.aliases(conn, old.id) == [SUBSCRIPTION_A]
        alias = conn.execute(select(subscription_aliases)).mappings().one()
    assert alias["connection_id"] == old.id
    assert alias["client_state"] == SECRET_A
    assert alias["created_at"] == later
    # The former id no longer moves the expiry.
    assert not advance(engine, SUBSCRIPTION_A, expires + timedelta(days=9))


def test_aliases_are_listed_oldest_first(engine: Engine) -> None:
    connection_id = by_subscription(engine, SUBSCRIPTION_A).id
    for n in range(1, 4):
        with db.writing(engine) as conn:
            current = store.get(conn, connection_id)
            assert current is not None
            store.replace_subscription(
                conn,
                current,
                subscription_id=f"subscription-{n}",
                client_state=f"{n}" * 40,
                expires_at=NOW + timedelta(days=n),
                now=NOW + timedelta(minutes=n),
            )
    with db.reading(engine) as conn:
        assert store.aliases(conn, connection_id) == [
            SUBSCRIPTION_A,
            "subscription-1",
            "subscription-2",
        ]


# -- due_for_renewal -----------------------------------------------------------------


def add_item(engine: Engine, connection_id: int, kind: str, state: str) -> None:
    with db.writing(engine) as conn:
        conn.execute(
            inbox.insert().values(
                state=state,
                kind=kind,
                subscription_id=f"of-{connection_id}",
                connection_id=connection_id,
                received_at=NOW,
                attempts=0,
                next_attempt_at=NOW,
                raw="{}",
                dedupe_key=f"{connection_id}-{kind}-{state}",
            )
        )


def test_due_for_renewal(engine: Engine) -> None:
    cutoff = NOW + timedelta(days=1)

    def at(minutes: int, state: State = State.ACTIVE) -> int:
        return new_connection(
            engine, f"sub-{minutes}-{state}", NOW + timedelta(minutes=minutes), state
        )

    expired = at(-60, State.UNAUTHORIZED)
    soon = at(30)
    pending = at(120, State.PENDING)
    renewal_done = at(200)
    change_waiting = at(300)
    last = at(24 * 60 - 1)
    # Not due: beyond the cutoff, final states, or a renewal already waiting.
    at(24 * 60)
    at(3 * 24 * 60)
    at(10, State.DISCONNECTED)
    at(11, State.ORPHANED)
    renewal_pending = at(40)
    renewal_processing = at(50)
    renewal_dead = at(60)

    add_item(engine, renewal_done, "renewal", "done")
    add_item(engine, change_waiting, "change", "pending")
    add_item(engine, renewal_pending, "renewal", "pending")
    add_item(engine, renewal_processing, "renewal", "processing")
    add_item(engine, renewal_dead, "renewal", "dead")

    with db.reading(engine) as conn:
        due = store.due_for_renewal(conn, cutoff, limit=100)
        first_two = store.due_for_renewal(conn, cutoff, limit=2)

    assert [d.connection_id for d in due] == [
        expired,
        soon,
        renewal_dead,
        pending,
        renewal_done,
        change_waiting,
        last,
    ]
    assert due[0] == store.Due(
        expired, f"sub--60-{State.UNAUTHORIZED}", NOW - timedelta(hours=1)
    )
    assert first_two == due[:2]


# -- to_json -------------------------------------------------------------------------

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def test_to_json_has_exactly_the_contract_keys(engine: Engine) -> None:
    expires = datetime(2025, 3, 4, 10, 0, 0, tzinfo=UTC)
    connection_id = new_connection(engine, "json-1", expires, State.PENDING)
    with db.writing(engine) as conn:
        store.update(
            conn,
            connection_id,
            NOW + timedelta(seconds=1, microseconds=5),
            nexudus_record_id=77,
            last_error="Nexudus: 503",
        )
    connection = get(engine, connection_id)

    shown = connection.to_json()

    assert set(shown) == CONNECTION_KEYS
    assert SECRET_A not in str(shown)
    assert connection.client_state not in str(shown)
    assert shown["id"] == connection_id
    assert shown["state"] == "pending"
    assert shown["nexudus_record_id"] == 77
    assert shown["last_error"] == "Nexudus: 503"
    assert shown["subscription_expires_at"] == "2025-03-04T10:00:00Z"
    assert shown["created_at"] == "2025-03-01T12:00:00Z"
    assert shown["updated_at"] == "2025-03-01T12:00:01.000005Z"
    for key in ("subscription_expires_at", "created_at", "updated_at"):
        assert ISO_UTC.fullmatch(shown[key]), shown[key]
        assert datetime.fromisoformat(shown[key]) == getattr(connection, key)


def test_to_json_of_a_seeded_connection(engine: Engine) -> None:
    shown = by_subscription(engine, SUBSCRIPTION_A).to_json()
    assert set(shown) == CONNECTION_KEYS
    assert shown["subscription_expires_at"] is None
    assert shown["state"] == "active"
    assert ISO_UTC.fullmatch(shown["created_at"])
