"""A request's body must arrive within a deadline: 408 otherwise.

uvicorn waits for a body as long as the client keeps the connection open, so a client
that trickles its body a byte at a time (slowloris) would hold a request, its
connection and any shutdown waiting for it, for ever. Graph sends a notification in
one go and gives up on an answer after 10 s at most, so a body still arriving after
that is not Graph's: the request is answered 408 (Graph would retry it) and the
connection closed.

The deadline runs from the start of the request to the end of its body; once the body
is in, `receive` is the server's own again (waiting for a disconnect is not bounded).
Graph's own URLs do not pass through this middleware: their endpoint bounds its body
read itself (web/notifications.py).
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class _TooSlow(Exception):
    pass


class BodyDeadline:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_in = False
        answered = False

        async def timed_receive() -> Message:
            nonlocal body_in
            if body_in:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _TooSlow from None
            if message["type"] != "http.request" or not message.get("more_body"):
                body_in = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except _TooSlow:
            if answered:  # too late for a status: the connection just ends
                raise
            log.warning(
                "request body too slow: answered 408",
                extra={"path": scope["path"], "seconds": self.seconds},
            )
            await _answer_408(send, self.seconds)


def too_slow(seconds: float) -> str:
    """The 408 answer's error message."""
    return f"the request body did not arrive within {seconds:g} s"


async def _answer_408(send: Send, seconds: float) -> None:
    body = json.dumps({"error": too_slow(seconds)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # What is still on its way of the body must not be read as a request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
