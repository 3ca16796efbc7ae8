"""The validation handshake: answered first, exactly, and with nothing else touched."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
from sqlalchemy import create_engine
from starlette.applications import Starlette

from bridge.app import create_app
from bridge.settings import Settings

TOKENS = [
    "Validation: Testing client application reachability for subscription "
    "Request-Id: 7c2a9a3e-4c1b-4f8e-9d3a-1b2c3d4e5f60",
    "a+b/c=d==",
    "100% sure & done?",
    "percent%2Bescape%20kept",
    "üñí©ødé ✓",
]


@pytest.mark.parametrize("url", ["/graph/notifications", "/graph/lifecycle"])
@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize("encode", [quote, quote_plus], ids=["%20", "+"])
async def test_token_round_trips_exactly(
    client: httpx.AsyncClient, url: str, token: str, encode: object
) -> None:
    assert callable(encode)
    response = await client.post(
        f"{url}?validationToken={encode(token, safe='')}",
        content=b"",
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == token


@pytest.mark.parametrize("token", ["<script>alert(1)</script>", "a>b", "x" * 1025, ""])
async def test_suspicious_token_is_refused(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await client.post(f"/graph/notifications?validationToken={quote(token)}")
    assert response.status_code == 400
    assert "<" not in response.text
    assert response.headers["content-type"].startswith("text/plain")


async def test_handshake_needs_no_database_and_reads_no_body(tmp_path: Path) -> None:
    # A database that cannot even be opened: the handshake must not care.
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path}/no/such/dir/x.db")
    engine = create_engine(settings.database_url)
    app: Starlette = create_app(settings, engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
        response = await client.post(
            "/graph/lifecycle?validationToken=abc",
            content=b"not json at all" * 100_000,  # larger than the body cap
        )
    assert response.status_code == 200
    assert response.text == "abc"
    engine.dispose()
