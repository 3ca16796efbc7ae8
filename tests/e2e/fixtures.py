"""Fixtures that tests with real processes share (tests/e2e, tests/reliability):
the test CA, the fakes over TLS, and a guard for PostgreSQL-only tests.

Registered for the whole suite by tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.databases import Databases
from tests.e2e.harness import Fakes, running_fakes
from tests.fakes.tls import TestCA


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("e2e-ca"))


@pytest.fixture
async def fakes(ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Fakes]:
    # The fake Graph's own client (handshakes) trusts what the bridge trusts.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with running_fakes(ca) as running:
        yield running


@pytest.fixture
def on_postgresql(databases: Databases) -> None:
    """Skip on SQLite: for tests of what only PostgreSQL has (several processes on
    one database, a server that can go away). Never skipped in the PostgreSQL run."""
    if databases.backend != "postgresql":
        pytest.skip("PostgreSQL's (the PostgreSQL run of `make test`)")
