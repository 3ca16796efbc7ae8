"""Request ids: one per HTTP request, on every log line logged while it is served,
and in the answer's `request-id` header.

An id the caller sent is kept, so a line here can be matched with the caller's own
logs: `request-id` or `client-request-id` (Microsoft's names; Graph sends the
latter) or `X-Request-ID` (what PaaS routers such as Heroku's add). Anything that
does not look like an id is replaced by a fresh one rather than logged.
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

HEADER = b"request-id"
# In order of preference: an id the router or the caller gave the request itself.
INCOMING = (b"request-id", b"x-request-id", b"client-request-id")
_LOOKS_LIKE_AN_ID = re.compile(r"[A-Za-z0-9._:@\-]{1,128}")


def given(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The request's own id, if it sent a usable one."""
    # ASGI servers hand header names over lowercased.
    found = {name: value for name, value in headers if name in INCOMING}
    for name in INCOMING:
        value = found.get(name)
        if value is None:
            continue
        text = value.decode("latin-1").strip()
        if _LOOKS_LIKE_AN_ID.fullmatch(text):
            return text
    return None


def for_request(headers: list[tuple[bytes, bytes]]) -> str:
    """The id a request is known by: its own, or a fresh one."""
    return given(headers) or os.urandom(16).hex()


class RequestIdMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware), and plain `bind`/`reset` rather than
    structlog's context manager: it sits on the ingest hot path (about 3 µs a
    request, against 9 µs with `uuid4` and `bound_contextvars`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = for_request(scope["headers"])
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (HEADER, encoded)]
                message = {**message, "headers": headers}
            await send(message)

        bound = bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_contextvars(**bound)
