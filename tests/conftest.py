"""Fixtures shared by every test: isolated settings, a migrated database, the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette

from bridge.app import create_app
from bridge.settings import Settings
from bridge.store import db, migrate
from tests.seeds import seed_fixture_connections

# Variables that would make a test depend on the machine it runs on.
_CONTRACT_VARIABLES = [
    field.alias for field in Settings.model_fields.values() if field.alias
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _CONTRACT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # A .env in the developer's checkout must not leak into tests.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'bridge.db'}")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.create(settings.database_url)
    migrate.upgrade(engine)
    seed_fixture_connections(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def app(settings: Settings, engine: Engine) -> AsyncIterator[Starlette]:
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as c:
        yield c
