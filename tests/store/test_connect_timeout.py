"""A new PostgreSQL connection gives up after a few seconds, not psycopg's 130."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from bridge.store import db
from tests.processes import free_port


def _connect_params(url: str) -> dict[str, Any]:
    """What the engine hands psycopg when it connects (to a port nobody serves)."""
    engine = db.create(url)
    seen: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def capture(_dialect: object, _record: object, _args: object, params: Any) -> None:
        seen.update(params)

    try:
        with pytest.raises(OperationalError), engine.connect():
            pass
    finally:
        engine.dispose()
    return seen


def _url(query: str = "") -> str:
    return f"postgresql+psycopg://bridge@127.0.0.1:{free_port()}/bridge{query}"


def test_connections_to_postgresql_time_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    params = _connect_params(_url())
    assert params["connect_timeout"] == db.CONNECT_TIMEOUT_SECONDS


def test_a_timeout_the_operator_chose_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert _connect_params(_url("?connect_timeout=12"))["connect_timeout"] == "12"
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "9")
    assert "connect_timeout" not in _connect_params(_url())
