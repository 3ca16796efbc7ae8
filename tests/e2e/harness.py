"""A real `bridge serve` process and the fakes it talks to, for the e2e tests.

The fakes (identity authority, Graph, Nexudus) run under uvicorn over TLS in the
test's event loop; the bridge runs in its own process, configured by environment
variables only, and reaches them through `SSL_CERT_FILE`. Everything here that
waits for another process waits asynchronously, so the fakes keep answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection as Db
from sqlalchemy import Engine, select
from starlette.types import ASGIApp

from bridge.store import connections as store
from bridge.store import db
from bridge.store.connections import Connection
from bridge.store.schema import inbox
from tests.fakes.authority import FakeAuthority
from tests.fakes.graph import FakeGraph
from tests.fakes.graph_outbound import change_notification, lifecycle_notification
from tests.fakes.graph_state import FakeSubscription
from tests.fakes.nexudus import CALENDARS, PASSWORD, USERNAME, FakeNexudus
from tests.fakes.server import serve
from tests.fakes.tls import TestCA
from tests.processes import free_port

USER = "adele@contoso.test"
RESOURCE_ID = 7
ADMIN_TOKEN = "e2e-admin-token-" + "k" * 24
START_SECONDS = 30.0
CLI_SECONDS = 60.0
POLL_SECONDS = 0.05
BUSY = ("pending", "processing")
# The bridge's own writes to Nexudus (token requests are not among them).
WRITES = ("POST", "PUT", "DELETE")


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 15.0, what: str = ""
) -> None:
    """Return once `check()` holds; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(POLL_SECONDS)
    assert await check(), f"still not true after {within} s: {what or check}"


def nexudus_date(moment: datetime) -> str:
    """A datetime as the fake Nexudus stores it: UTC, whole seconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fakes:
    authority: FakeAuthority
    graph: FakeGraph
    nexudus: FakeNexudus
    authority_url: str
    graph_url: str
    nexudus_url: str

    def nexudus_writes(self, since: int = 0) -> list[str]:
        """The Nexudus writes after the first `since` calls, as "METHOD path"."""
        return [
            f"{call.method} {call.path}"
            for call in self.nexudus.calls[since:]
            if call.method in WRITES and call.path.startswith(CALENDARS)
        ]

    def nexudus_reads(self, since: int = 0) -> list[str]:
        return [
            f"{call.method} {call.path}"
            for call in self.nexudus.calls[since:]
            if call.method == "GET" and call.path.startswith(CALENDARS)
        ]

    def records_per_subscription(self) -> Counter[str]:
        return Counter(
            str(record["SubscriptionId"]) for record in self.nexudus.records.values()
        )


@contextlib.asynccontextmanager
async def running_fakes(ca: TestCA) -> AsyncIterator[Fakes]:
    authority = FakeAuthority()
    graph = FakeGraph(authority=authority)
    graph.add_mailbox(USER)
    nexudus = FakeNexudus()
    async with _served(ca, authority.app, graph.app, nexudus.app) as urls:
        authority_url, graph_origin, nexudus_url = urls
        # Tokens are issued for this Graph, as the bridge's scope will ask.
        authority.audience = graph_origin
        yield Fakes(
            authority,
            graph,
            nexudus,
            authority_url,
            f"{graph_origin}/v1.0",
            nexudus_url,
        )


@contextlib.asynccontextmanager
async def _served(ca: TestCA, *apps: ASGIApp) -> AsyncIterator[list[str]]:
    """Serve each app over TLS; they start and stop together, not one by one."""
    stop = asyncio.Event()
    urls: list[asyncio.Future[str]] = []

    async def run(app: ASGIApp, url: asyncio.Future[str]) -> None:
        async with serve(app, tls=ca) as base:
            url.set_result(base)
            await stop.wait()

    loop = asyncio.get_running_loop()
    tasks = []
    for app in apps:
        urls.append(loop.create_future())
        tasks.append(asyncio.create_task(run(app, urls[-1])))
    try:
        yield list(await asyncio.gather(*urls))
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@dataclass(frozen=True)
class CliResult:
    status: int
    stdout: str
    stderr: str


class Bridge:
    """`bridge serve` (web and embedded worker) on one fixed 127.0.0.1 port.

    The port and the database stay the same across restarts, as on a machine
    whose service is restarted: the subscriptions' URLs keep pointing at it.
    """

    def __init__(
        self, workdir: Path, database_url: str, fakes: Fakes, ca: TestCA
    ) -> None:
        self.workdir = workdir
        self.fakes = fakes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        authority = fakes.authority
        self.env: dict[str, str] = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "BRIDGE_PUBLIC_URL": self.url,
            "SSL_CERT_FILE": str(ca.ca_file),
            "GRAPH_TENANT_ID": authority.tenant_id,
            "GRAPH_CLIENT_ID": authority.client_id,
            "GRAPH_CLIENT_SECRET": authority.client_secret,
            "GRAPH_AUTHORITY_URL": fakes.authority_url,
            "GRAPH_API_URL": fakes.graph_url,
            "NEXUDUS_API_URL": fakes.nexudus_url,
            "NEXUDUS_USERNAME": USERNAME,
            "NEXUDUS_PASSWORD": PASSWORD,
            "BRIDGE_RETRY_BASE_SECONDS": "0.1",
            "BRIDGE_RETRY_MAX_SECONDS": "0.5",
            "BRIDGE_LEASE_SECONDS": "10",
            "BRIDGE_RENEW_BEFORE_MINUTES": "1440",
            "BRIDGE_MAX_ATTEMPTS": "20",
            "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
            "BRIDGE_LOG_LEVEL": "info",
            "BRIDGE_LOG_FORMAT": "json",
        }
        self.env.pop("SSL_CERT_DIR", None)
        self.process: asyncio.subprocess.Process | None = None
        self.logs: list[Path] = []
        self.http = httpx.AsyncClient(timeout=10.0)
        self.admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self._engine: Engine | None = None

    # -- the process ----------------------------------------------------------------

    async def start(self, **env: str) -> None:
        """Start `bridge serve` (with the worker) and wait until it is ready."""
        assert self.process is None or self.process.returncode is not None
        log = self.workdir / f"serve-{len(self.logs) + 1}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                cwd=self.workdir,  # no stray .env from the checkout
                env={**self.env, **env},
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self._until_ready()

    async def _until_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_SECONDS
        answer = None
        while loop.time() < deadline:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"bridge serve exited:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                answer = await self.http.get(f"{self.url}/readyz", timeout=1.0)
                if answer.status_code == 200:
                    return
            await asyncio.sleep(POLL_SECONDS)
        detail = answer.text if answer is not None else "no answer"
        raise AssertionError(f"bridge serve not ready: {detail}\n{self.log()}")

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds it took to exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(self.process.wait(), timeout=40)
        return status, time.monotonic() - started

    def kill_now(self) -> None:
        """kill -9, without yielding to the event loop (so without letting the
        fakes answer anything more first); `exited` then waits for the end."""
        assert self.process is not None
        self.process.kill()

    async def exited(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self.http.aclose()
        if self._engine is not None:
            self._engine.dispose()

    def log(self) -> str:
        """What the latest `bridge serve` wrote (JSON lines)."""
        return self.logs[-1].read_text() if self.logs else ""

    # -- the command line ---------------------------------------------------------

    async def cli(self, *args: str) -> CliResult:
        """`python -m bridge ARGS` in another process, with the same environment."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            *args,
            cwd=self.workdir,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), CLI_SECONDS)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode is not None
        return CliResult(process.returncode, out.decode(), err.decode())

    async def connect_with_cli(
        self, user: str = USER, resource_id: int = RESOURCE_ID
    ) -> dict[str, Any]:
        """`bridge connect ... --json` in another process; the connection printed."""
        result = await self.cli(
            "connect", "--resource-id", str(resource_id), "--user", user, "--json"
        )
        assert result.status == 0, result.stderr
        shown: dict[str, Any] = json.loads(result.stdout)
        return shown

    async def connect(
        self, user: str = USER, resource_id: int = RESOURCE_ID
    ) -> dict[str, Any]:
        """Connect through the serving bridge's admin API; the connection."""
        answer = await self.http.post(
            f"{self.url}/admin/connections",
            json={"resource_id": resource_id, "user_id": user},
            headers=self.admin,
            timeout=30.0,
        )
        assert answer.status_code == 201, answer.text
        shown: dict[str, Any] = answer.json()
        return shown

    # -- what Graph sends -----------------------------------------------------------

    def subscription(self, subscription_id: str) -> FakeSubscription:
        return self.fakes.graph.subscriptions[subscription_id]

    def change(
        self, subscription: FakeSubscription, event_id: str | None = None
    ) -> dict[str, Any]:
        """One change-notification collection, as Graph would post it."""
        item = change_notification(
            subscription,
            self.fakes.graph.tenant_id,
            "updated",
            event_id or uuid.uuid4().hex,
        )
        return {"value": [item]}

    def lifecycle(self, subscription: FakeSubscription, event: str) -> dict[str, Any]:
        item = lifecycle_notification(subscription, self.fakes.graph.tenant_id, event)
        return {"value": [item]}

    async def post(
        self, body: dict[str, Any], path: str = "/graph/notifications"
    ) -> httpx.Response:
        return await self.http.post(f"{self.url}{path}", json=body)

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of `/metrics` (0 when the series does not exist yet)."""
        text = (await self.http.get(f"{self.url}/metrics")).text
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        series = f"{name}{{{wanted}}}" if labels else name
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == series:
                return float(value)
        return 0.0

    # -- the database, as the bridge left it --------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = db.create(self.database_url)
        return self._engine

    async def items(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            with db.reading(self.engine) as conn:
                rows = conn.execute(select(inbox).order_by(inbox.c.id)).mappings()
                return [dict(row) for row in rows]

        return await asyncio.to_thread(read)

    async def connection(self, connection_id: int) -> Connection:
        found = await db.read(self.engine, store.get, connection_id)
        assert found is not None
        return found

    async def aliases(self, connection_id: int) -> list[str]:
        return await db.read(self.engine, store.aliases, connection_id)

    async def update_connection(self, connection_id: int, **values: Any) -> None:
        """Change a connection row behind the bridge's back (time travel, mostly)."""

        def change(conn: Db) -> None:
            store.update(conn, connection_id, datetime.now(UTC), **values)

        await db.write(self.engine, change)

    async def settled(self, within: float = 15.0) -> list[dict[str, Any]]:
        """Wait until no inbox item is pending or processing; the items then."""

        async def calm() -> bool:
            return all(item["state"] not in BUSY for item in await self.items())

        await eventually(calm, within, "inbox settled")
        return await self.items()

    async def record_is_true(self, connection_id: int) -> bool:
        """Whether Nexudus holds exactly what the connection says it should."""
        connection = await self.connection(connection_id)
        if connection.nexudus_record_id is None:
            return False
        record = self.fakes.nexudus.records.get(connection.nexudus_record_id)
        return record is not None and record_problems(connection, record) == []


def record_problems(connection: Connection, record: dict[str, Any]) -> list[str]:
    """How a Nexudus record differs from what the connection says it should hold."""
    assert connection.subscription_expires_at is not None
    expected = {
        "ResourceId": connection.resource_id,
        "Name": connection.name,
        "SubscriptionId": connection.subscription_id,
        "CalendarId": connection.calendar_id,
        "SubscriptionExpireDate": nexudus_date(connection.subscription_expires_at),
        "CoworkerId": connection.coworker_id,
    }
    return [
        f"{key}: {record.get(key)!r} != {value!r}"
        for key, value in expected.items()
        if record.get(key) != value
    ]


async def next_second() -> None:
    """Wait until the wall clock's second changes: expiries compare to the second,
    so a renewal right after a create would otherwise ask for the same expiry."""
    start = int(time.time())

    async def later() -> bool:
        return int(time.time()) > start

    await eventually(later, 2.0, "the next second")
