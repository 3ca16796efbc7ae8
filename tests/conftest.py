"""Fixtures shared by every test: isolated settings, a migrated database, the app.

The database is SQLite, or PostgreSQL when `BRIDGE_TEST_DATABASE_URL` is set (see
tests/databases.py); `make test` runs the suite once on each.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette

from bridge.app import create_app
from bridge.settings import Settings
from bridge.store import db
from tests.databases import Databases, open_databases
from tests.postgres import ENVIRONMENT_VARIABLE
from tests.seeds import seed_fixture_connections

# The CA, the fakes over TLS and the PostgreSQL guard that tests with real
# processes share (tests/e2e, tests/reliability).
pytest_plugins = ("tests.e2e.fixtures",)

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


def pytest_report_header() -> str:
    server = os.environ.get(ENVIRONMENT_VARIABLE)
    return f"database: {'PostgreSQL at ' + server if server else 'SQLite'}"


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    found = open_databases(tmp_path_factory.mktemp("databases"))
    yield found
    found.close()


@pytest.fixture
def database_url(databases: Databases, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own, migrated and empty."""
    url = databases.fresh(tmp_path)
    yield url
    databases.discard(url)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(DATABASE_URL=database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.create(settings.database_url)
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
