"""The reliability suite: real `bridge` processes on 127.0.0.1, the fakes over TLS,
and faults injected while Graph's notifications keep arriving.

The service runs as it is deployed for the database under test: on SQLite one
`bridge serve` with its embedded worker (the single-machine mode); on PostgreSQL
web processes (`bridge serve --no-worker`) and `bridge worker` processes, as the
Procfile runs them. Each test records its figures (`Figures`); they are printed at
the end of the run and, when BRIDGE_RELIABILITY_FIGURES names a file, appended to it
as JSON lines (docs/reliability.md shows them).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.databases import Databases
from tests.e2e.fleet import Fleet, paas_url
from tests.e2e.harness import Bridge, Fakes
from tests.fakes.tls import TestCA
from tests.processes import free_port

FIGURES_FILE = "BRIDGE_RELIABILITY_FIGURES"
# Short enough for a test to see leases run out and retries happen, long enough
# for an action against a slow fake to finish.
SETTINGS = {
    "BRIDGE_LEASE_SECONDS": "2",
    "BRIDGE_RETRY_BASE_SECONDS": "0.1",
    "BRIDGE_RETRY_MAX_SECONDS": "0.5",
    "BRIDGE_BODY_TIMEOUT_SECONDS": "2",
    "BRIDGE_LOG_LEVEL": "info",
}

_RECORDED: list[dict[str, Any]] = []


@dataclass
class Figures:
    """What one scenario counted; printed at the end of the run."""

    scenario: str
    database: str
    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, name: str, value: Any) -> None:
        self.values[name] = round(value, 2) if isinstance(value, float) else value

    def update(self, **values: Any) -> None:
        for name, value in values.items():
            self[name] = value


@pytest.fixture
def figures(request: pytest.FixtureRequest, databases: Databases) -> Iterator[Figures]:
    recorded = Figures(request.node.name.removeprefix("test_"), databases.backend)
    yield recorded
    if recorded.values:
        entry = {"scenario": recorded.scenario, "database": recorded.database}
        _RECORDED.append({**entry, **recorded.values})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RECORDED:
        return
    terminalreporter.section("reliability figures")
    for entry in _RECORDED:
        rest = "  ".join(
            f"{key}={value}"
            for key, value in entry.items()
            if key not in ("scenario", "database")
        )
        terminalreporter.write_line(f"{entry['database']:<10} {entry['scenario']}")
        terminalreporter.write_line(f"    {rest}")
    if target := os.environ.get(FIGURES_FILE):
        with Path(target).open("a") as out:
            out.writelines(json.dumps(entry) + "\n" for entry in _RECORDED)


@pytest.fixture
async def bridge(
    fakes: Fakes, ca: TestCA, tmp_path: Path, database_url: str
) -> AsyncIterator[Bridge]:
    harness = Bridge(tmp_path, database_url, fakes, ca)
    harness.env.update(SETTINGS)
    if harness.engine.dialect.name == "postgresql":
        harness.env["DATABASE_URL"] = paas_url(database_url)
    try:
        yield harness
    finally:
        await harness.close()


class Service:
    """The service as deployed for the database under test, in `Fleet` processes.

    SQLite: `serve` (web and embedded worker) on the public URL's port. PostgreSQL:
    `web-1` on the public URL's port, `web-2` on another, `worker-1` and `worker-2`.
    Graph's deliveries are spread over `urls` (a load balancer would do so).
    """

    def __init__(self, fleet: Fleet, database: str) -> None:
        self.fleet = fleet
        self.bridge = fleet.bridge
        self.database = database
        if database == "sqlite":
            self.ports = {"serve": self.bridge.port}
            self.workers: list[str] = []
        else:
            self.ports = {"web-1": self.bridge.port, "web-2": free_port()}
            self.workers = ["worker-1", "worker-2"]

    @property
    def webs(self) -> list[str]:
        return list(self.ports)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports.values()]

    @property
    def names(self) -> list[str]:
        return [*self.webs, *self.workers]

    async def start(self, *names: str, **env: str) -> None:
        """Start the named processes (all of them by default)."""
        for name in names or self.names:
            if name in self.ports:
                embedded = self.database == "sqlite"
                await self.fleet.web(name, self.ports[name], worker=embedded, **env)
            else:
                # A few connections each: the work is shared out, not all taken
                # by whichever worker claims first.
                env = {"BRIDGE_WORKER_CONCURRENCY": "3", **env}
                await self.fleet.worker(name, **env)


@pytest.fixture
async def fleet(bridge: Bridge) -> AsyncIterator[Fleet]:
    running = Fleet(bridge)
    try:
        yield running
    finally:
        await running.kill_all()


@pytest.fixture
def service(fleet: Fleet, databases: Databases) -> Service:
    return Service(fleet, databases.backend)
