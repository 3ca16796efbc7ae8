"""The client against the fake served by uvicorn: real sockets, TLS, timeouts."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.nexudus import ConnectionFailed, NexudusClient, TimedOut
from tests.fakes.nexudus import PASSWORD, USERNAME, FakeNexudus
from tests.fakes.server import serve
from tests.fakes.tls import TestCA

from .conftest import calendar_fields


def client_for(url: str, timeout: float = 15.0) -> NexudusClient:
    return NexudusClient(url, USERNAME, PASSWORD, min_interval=0, timeout=timeout)


async def test_round_trip_over_one_reused_connection() -> None:
    fake = FakeNexudus()
    async with serve(fake.app) as url, client_for(url) as client:
        new_id = await client.create_calendar(calendar_fields())
        later = datetime(2031, 1, 1, tzinfo=UTC)
        assert await client.update_calendar(
            new_id, calendar_fields(subscription_expires_at=later)
        )
        [found] = await client.find_by_subscription_id("3f2b8c1e-sub")
        assert found.id == new_id
        assert await client.delete_calendar(new_id)

    assert len({call.peer for call in fake.calls}) == 1
    assert fake.records == {}


async def test_hanging_server_times_out() -> None:
    fake = FakeNexudus()
    async with serve(fake.app) as url, client_for(url, timeout=0.3) as client:
        await client.check_login()
        fake.hang_next(1, seconds=30)
        with pytest.raises(TimedOut):
            await client.get_calendar(1)
        assert await client.get_calendar(1) is None


async def test_refused_connection_is_connection_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client_for(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ConnectionFailed, match="ConnectError"):
            await client.check_login()


async def test_ssl_cert_file_is_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = TestCA.create(tmp_path)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with serve(FakeNexudus().app, tls=ca) as url:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        async with client_for(url) as client:
            with pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await client.check_login()

        monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
        async with client_for(url) as client:
            await client.check_login()

    assert url.startswith("https://")
