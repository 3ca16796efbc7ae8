"""`GET /metrics`: this process's counters and the service's state, read from the
database at scrape time."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, update

from bridge.app import create_app
from bridge.settings import Settings
from bridge.store import db
from bridge.store.schema import connections, inbox, utcnow
from tests.metrics_samples import value
from tests.seeds import SECRET_A, SECRET_B, SUBSCRIPTION_A, SUBSCRIPTION_B


def add_item(
    engine: Engine, state: str, received_at: datetime, attempts: int = 0
) -> None:
    with db.writing(engine) as conn:
        conn.execute(
            inbox.insert().values(
                state=state,
                kind="change",
                subscription_id=SUBSCRIPTION_A,
                received_at=received_at,
                attempts=attempts,
                raw="{}",
                dedupe_key=uuid.uuid4().hex,
            )
        )


async def scrape(client: httpx.AsyncClient) -> str:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


async def test_the_state_of_the_inbox_and_the_connections(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    now = utcnow()
    add_item(engine, "pending", now - timedelta(minutes=2))
    add_item(engine, "pending", now - timedelta(minutes=10), attempts=3)
    add_item(engine, "processing", now - timedelta(minutes=5), attempts=1)
    add_item(engine, "dead", now - timedelta(days=1), attempts=140)
    add_item(engine, "done", now - timedelta(days=2))  # settled: not counted
    expiry = (now + timedelta(hours=30)).replace(microsecond=0)
    with db.writing(engine) as conn:
        conn.execute(
            update(connections)
            .where(connections.c.subscription_id == SUBSCRIPTION_A)
            .values(subscription_expires_at=expiry)
        )
        # Consent revoked: its subscription is not renewed, so not the soonest.
        conn.execute(
            update(connections)
            .where(connections.c.subscription_id == SUBSCRIPTION_B)
            .values(state="unauthorized", subscription_expires_at=now)
        )

    text = await scrape(client)

    assert value(text, "bridge_database_up") == 1
    for state, count in (("pending", 2), ("processing", 1), ("dead", 1)):
        assert value(text, "bridge_inbox_items", state=state) == count
    assert value(text, "bridge_inbox_items", state="done") is None
    age = value(text, "bridge_inbox_oldest_pending_age_seconds")
    assert age is not None
    assert 600 <= age < 660
    assert value(text, "bridge_inbox_retrying_items") == 1
    assert value(text, "bridge_inbox_max_attempts") == 3
    expected = {"active": 1, "unauthorized": 1, "pending": 0, "orphaned": 0}
    for state, count in expected.items():
        assert value(text, "bridge_connections", state=state) == count
    soonest = "bridge_subscription_soonest_expiry_timestamp_seconds"
    assert value(text, soonest) == expiry.timestamp()


async def test_an_empty_service_reports_zeros(client: httpx.AsyncClient) -> None:
    text = await scrape(client)
    assert value(text, "bridge_inbox_items", state="pending") == 0
    assert value(text, "bridge_inbox_oldest_pending_age_seconds") == 0
    assert value(text, "bridge_connections", state="active") == 2
    # The seeded connections have no known expiry yet.
    soonest = "bridge_subscription_soonest_expiry_timestamp_seconds"
    assert value(text, soonest) is None


async def test_metrics_answer_without_a_database(
    tmp_path: Path, settings: Settings
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
    app = create_app(settings, engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
        text = await scrape(client)
    engine.dispose()
    assert value(text, "bridge_database_up") == 0
    assert value(text, "bridge_inbox_items", state="pending") is None
    # This process's own series are still there.
    assert "bridge_notification_ack_seconds_bucket" in text


async def test_metrics_name_no_subscription_and_no_secret(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/graph/notifications?validationToken=hello-token")
    text = await scrape(client)
    for secret in (SECRET_A, SECRET_B, SUBSCRIPTION_A, SUBSCRIPTION_B, "hello-token"):
        assert secret not in text


async def test_a_body_over_the_cap_is_counted_as_rejected(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    before = (
        value(
            await scrape(client),
            "bridge_notifications_received_total",
            kind="unknown",
            outcome="rejected",
        )
        or 0
    )
    big = b"x" * (settings.max_body_bytes + 1)
    assert (await client.post("/graph/notifications", content=big)).status_code == 413
    after = value(
        await scrape(client),
        "bridge_notifications_received_total",
        kind="unknown",
        outcome="rejected",
    )
    assert after == before + 1
