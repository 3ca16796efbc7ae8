"""A body that does not arrive within BRIDGE_BODY_TIMEOUT_SECONDS is answered 408."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.types import Message

from bridge.app import create_app
from bridge.settings import Settings
from bridge.web.body_deadline import BodyDeadline
from tests.seeds import SECRET_A, SUBSCRIPTION_A, stored_items

DEADLINE = 0.3


@pytest.fixture
async def slow_app(database_url: str, engine: Engine) -> AsyncIterator[Starlette]:
    settings = Settings(DATABASE_URL=database_url, BRIDGE_BODY_TIMEOUT_SECONDS=DEADLINE)
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        yield app


def body() -> bytes:
    item = {
        "subscriptionId": SUBSCRIPTION_A,
        "clientState": SECRET_A,
        "changeType": "updated",
        "resource": "Users/u/Events/e",
        "subscriptionExpirationDateTime": "2026-11-23T09:12:45+00:00",
    }
    return json.dumps({"value": [item]}).encode()


async def call(
    app: Starlette, chunks: list[bytes], pause: float
) -> tuple[list[Message], float]:
    """POST `chunks` to /graph/notifications, `pause` seconds apart; what was sent
    back, and how long the answer took."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graph/notifications",
        "raw_path": b"/graph/notifications",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    pending = list(chunks)

    async def receive() -> Message:
        if not pending:
            await asyncio.Event().wait()  # a client that stays connected
        if pause and len(pending) < len(chunks):
            await asyncio.sleep(pause)
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return sent, loop.time() - started


async def test_a_trickled_body_is_answered_408_at_the_deadline(
    slow_app: Starlette, engine: Engine
) -> None:
    whole = body()
    chunks = [whole[n : n + 8] for n in range(0, len(whole), 8)]
    sent, seconds = await call(slow_app, chunks, pause=0.05)

    start, end = sent
    assert start["status"] == 408
    headers = dict(start["headers"])
    assert headers[b"connection"] == b"close"
    assert headers[b"request-id"]  # the request's id, as on every answer
    assert json.loads(end["body"]) == {
        "error": f"the request body did not arrive within {DEADLINE:g} s"
    }
    assert DEADLINE <= seconds < DEADLINE + 0.5
    assert stored_items(engine) == []


async def test_requests_that_start_apart_each_get_their_own_deadline(
    slow_app: Starlette,
) -> None:
    # One timer serves every request (Deadlines): it must move on to the next
    # deadline once the earliest has passed, and skip requests already answered.
    whole = body()
    trickled = [whole[n : n + 8] for n in range(0, len(whole), 8)]

    async def later(delay: float, chunks: list[bytes], pause: float) -> float:
        await asyncio.sleep(delay)
        sent, seconds = await call(slow_app, chunks, pause)
        return seconds if sent[0]["status"] == 408 else -sent[0]["status"]

    seconds = await asyncio.gather(
        later(0.0, [whole], 0),  # in at once: 202, its deadline left to pass
        later(0.0, trickled, 0.05),
        later(0.1, trickled, 0.05),
        later(0.2, trickled, 0.05),
    )

    assert seconds[0] == -202
    assert all(DEADLINE <= s < DEADLINE + 0.25 for s in seconds[1:]), seconds


async def test_a_request_cancelled_while_reading_is_not_answered_408(
    slow_app: Starlette,
) -> None:
    # The server cancels a request (shutting down, say): that is not the deadline's
    # doing, so the cancellation goes on and nothing is answered.
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graph/notifications",
        "query_string": b"",
        "headers": [],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.Event().wait()  # the body never comes
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    request = asyncio.create_task(slow_app(scope, receive, send))
    await asyncio.sleep(DEADLINE / 3)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.sleep(DEADLINE)  # the deadline passes: still nothing to cancel
    assert sent == []


async def test_a_body_in_pieces_within_the_deadline_is_taken(
    slow_app: Starlette, engine: Engine
) -> None:
    whole = body()
    chunks = [whole[: len(whole) // 2], whole[len(whole) // 2 :]]
    sent, _ = await call(slow_app, chunks, pause=DEADLINE / 3)

    assert sent[0]["status"] == 202
    assert len(stored_items(engine)) == 1


async def test_once_the_body_is_in_receive_is_not_bounded() -> None:
    # An app may wait for the client to go away after reading the body.
    events: list[str] = []

    async def app(_scope: Any, receive: Any, send: Any) -> None:
        await receive()
        message = await receive()  # the disconnect, after the deadline
        events.append(message["type"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages: list[Message] = [
        {"type": "http.request", "body": b"{}", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        if len(messages) == 1:
            await asyncio.sleep(DEADLINE * 2)
        return messages.pop(0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/", "headers": []}
    await BodyDeadline(app, DEADLINE)(scope, receive, send)
    assert events == ["http.disconnect"]
    assert sent[0]["status"] == 204
