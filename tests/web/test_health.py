from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import create_engine

from bridge.app import create_app
from bridge.settings import Settings
from bridge.store import db
from tests.databases import Databases


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_names_every_missing_piece(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {
            "database": "ok",
            "graph": "missing GRAPH_TENANT_ID, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET",
            "nexudus": "missing NEXUDUS_USERNAME, NEXUDUS_PASSWORD",
            "public_url": "missing BRIDGE_PUBLIC_URL",
        },
    }


def configured(database_url: str) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        BRIDGE_PUBLIC_URL="https://bridge.example.com",
        GRAPH_TENANT_ID="t",
        GRAPH_CLIENT_ID="c",
        GRAPH_CLIENT_SECRET="s",
        NEXUDUS_USERNAME="u",
        NEXUDUS_PASSWORD="p",
    )


async def ready(settings: Settings, engine: object) -> httpx.Response:
    app = create_app(settings, engine)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
        return await client.get("/readyz")


async def test_readyz_ok_when_complete(settings: Settings, engine: object) -> None:
    response = await ready(configured(settings.database_url), engine)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_reports_an_unmigrated_database(
    databases: Databases, tmp_path: Path
) -> None:
    settings = configured(databases.fresh(tmp_path, migrated=False))
    engine = db.create(settings.database_url)
    response = await ready(settings, engine)
    engine.dispose()
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == (
        "schema is not up to date: run `bridge migrate`"
    )


async def test_readyz_reports_an_unreachable_database(tmp_path: Path) -> None:
    settings = configured(f"sqlite:///{tmp_path}/missing/dir/x.db")
    engine = create_engine(settings.database_url)
    response = await ready(settings, engine)
    engine.dispose()
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable: OperationalError"


async def test_metrics_count_notifications(client: httpx.AsyncClient) -> None:
    await client.post("/graph/notifications", content=b"{}")
    text = (await client.get("/metrics")).text
    assert (
        'bridge_notifications_received_total{kind="unknown",outcome="rejected"}' in text
    )
    assert "bridge_notification_ack_seconds_bucket" in text
