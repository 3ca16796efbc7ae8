"""Fixtures for the end-to-end tests: the fakes over TLS and a real `bridge serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import Bridge, Fakes, running_fakes
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
async def bridge(
    fakes: Fakes, ca: TestCA, tmp_path: Path, database_url: str
) -> AsyncIterator[Bridge]:
    """A harness for `bridge serve`; not started: each test starts it as it needs."""
    harness = Bridge(tmp_path, database_url, fakes, ca)
    try:
        yield harness
    finally:
        await harness.close()
