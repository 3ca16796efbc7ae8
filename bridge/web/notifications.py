"""`POST /graph/notifications` and `POST /graph/lifecycle`: Graph's way in.

Order matters: the validation handshake is answered before anything is read; then the
body is read up to the cap and handed to the ingest process, which parses it and
stores its items (web/ingest.py); the answer is 202 only once every item is committed
or deliberately dropped, 400 if the body is not a notification collection.

The endpoint is a plain ASGI app that a POST reaches before starlette's middleware and
router (app.py): it is the hot path, and starlette's request and response objects,
middleware and routing cost as much again as the rest of the request
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import cache
from typing import NamedTuple
from urllib.parse import parse_qsl

from prometheus_client import Counter
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from bridge import metrics
from bridge.store.inbox import Outcome
from bridge.web.body_deadline import Deadlines, too_slow
from bridge.web.ingest import IngestProcess, Rejected, Stored
from bridge.web.request_id import HEADER as REQUEST_ID
from bridge.web.request_id import for_request

log = logging.getLogger(__name__)

# Graph's tokens are a sentence and a request id; anything far longer is not Graph.
MAX_VALIDATION_TOKEN = 1024


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class Reply(NamedTuple):
    status: int
    body: bytes = b""
    content_type: bytes | None = None
    nosniff: bool = False
    close: bool = False


TEXT = b"text/plain; charset=utf-8"
ACCEPTED = Reply(202)


def handshake(token: str) -> Reply:
    # The token is echoed, so never as HTML, and markup means it is not from Graph.
    if not token or len(token) > MAX_VALIDATION_TOKEN or "<" in token or ">" in token:
        return Reply(400, b"invalid validationToken", TEXT)
    return Reply(200, token.encode(), TEXT, nosniff=True)


def validation_token(scope: Scope) -> str | None:
    query: bytes = scope["query_string"]
    if not query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "validationToken":
            return value
    return None


async def read_capped(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The body, or BodyTooLarge as soon as it passes `limit` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def error(status: int, message: str) -> Reply:
    return Reply(status, json.dumps({"error": message}).encode(), b"application/json")


@cache
def _items_counter(kind: str, outcome: str) -> Counter:
    # A child per label pair, looked up once: `labels()` takes a lock every call.
    return metrics.NOTIFICATIONS.labels(kind, outcome)


@cache
def _requests_counter(status: int) -> Counter:
    return metrics.NOTIFICATION_REQUESTS.labels(str(status))


class NotificationEndpoint:
    """The ASGI app behind both Graph URLs.

    A POST reaches it straight from `BridgeApp`, past starlette's middleware, so it
    does itself what that middleware does for every other route: the request id
    (web/request_id.py) and the deadline on the body (web/body_deadline.py).
    """

    def __init__(
        self, ingest: IngestProcess, max_body_bytes: int, body_timeout_seconds: float
    ) -> None:
        self._ingest = ingest
        self._max_body_bytes = max_body_bytes
        self._deadlines = Deadlines(body_timeout_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = for_request(scope["headers"])
        bound = bind_contextvars(request_id=request_id)
        try:
            reply = await self._answer(scope, receive)
        except ClientGone:
            return  # nobody to answer; whatever was stored stays stored
        finally:
            reset_contextvars(**bound)
        headers = [
            (b"content-length", str(len(reply.body)).encode()),
            (REQUEST_ID, request_id.encode()),
        ]
        if reply.content_type is not None:
            headers.append((b"content-type", reply.content_type))
        if reply.nosniff:
            headers.append((b"x-content-type-options", b"nosniff"))
        if reply.close:
            headers.append((b"connection", b"close"))
        await send(
            {"type": "http.response.start", "status": reply.status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": reply.body})
        metrics.ACK_SECONDS.observe(time.perf_counter() - started)
        _requests_counter(reply.status).inc()

    async def _answer(self, scope: Scope, receive: Receive) -> Reply:
        token = validation_token(scope)
        if token is not None:
            return handshake(token)
        reading = self._deadlines.start()
        try:
            body = await read_capped(scope, receive, self._max_body_bytes)
        except BodyTooLarge:
            _items_counter("unknown", "rejected").inc()
            return error(413, f"body is larger than {self._max_body_bytes} bytes")
        except asyncio.CancelledError:
            if not self._deadlines.expired(reading):
                raise
            seconds = self._deadlines.seconds
            log.warning(
                "request body too slow: answered 408",
                extra={"path": scope["path"], "seconds": seconds},
            )
            # What is still on its way of the body must not be read as a request.
            return error(408, too_slow(seconds))._replace(close=True)
        finally:
            self._deadlines.stop(reading)
        try:
            verdict = await self._ingest.ingest(body)
        except Exception:
            # Not stored, so not acknowledged: Graph retries a 503.
            log.exception("notifications not stored")
            return error(503, "notifications could not be stored; retry later")
        if isinstance(verdict, Rejected):
            _items_counter("unknown", "rejected").inc()
            log.warning("notification body rejected", extra={"reason": verdict.reason})
            return error(400, verdict.reason)
        self._count(verdict)
        return ACCEPTED

    def _count(self, stored: Stored) -> None:
        for kind, outcome in zip(stored.kinds, stored.outcomes, strict=True):
            _items_counter(kind, outcome).inc()
        for n, item in stored.notable:
            outcome = stored.outcomes[n]
            if outcome is Outcome.BAD_CLIENT_STATE:
                log.warning(
                    "clientState mismatch: item not acted on",
                    extra={
                        "subscription_id": item.subscription_id,
                        "tenant_id": item.tenant_id,
                        "kind": item.kind,
                    },
                )
            else:
                log.info(
                    "notification %s",
                    # Stored, yet notable: a type the bridge does not know.
                    "of an unknown type, stored"
                    if outcome is Outcome.STORED
                    else outcome,
                    extra={
                        "subscription_id": item.subscription_id,
                        "kind": item.kind,
                        "type": item.lifecycle_event or item.change_type,
                    },
                )


# Lifecycle items that arrive at the notification URL are handled the same way.
PATHS = ("/graph/notifications", "/graph/lifecycle")


def routes(endpoint: NotificationEndpoint) -> list[Route]:
    """The routes `BridgeApp` passes by for a POST: they answer other methods 405."""
    return [Route(path, endpoint, methods=["POST"]) for path in PATHS]
