"""Fixtures for the end-to-end tests: a real `bridge serve` (the CA and the fakes
over TLS are tests/e2e/fixtures.py's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import Bridge, Fakes
from tests.fakes.tls import TestCA


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
