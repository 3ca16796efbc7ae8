"""`POST /graph/notifications` and `POST /graph/lifecycle`: Graph's way in.

Order matters: the validation handshake is answered before anything is read; then the
body is read up to the cap, parsed, and handed to the inbox writer; the answer is 202
only once every item is committed or deliberately dropped.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge import metrics
from bridge.graph.notifications import (
    CHANGE_TYPES,
    LIFECYCLE_EVENTS,
    NotACollection,
    Received,
    parse,
)
from bridge.store.inbox import Incoming, Outcome
from bridge.store.writer import InboxWriter

log = logging.getLogger(__name__)

# Graph's tokens are a sentence and a request id; anything far longer is not Graph.
MAX_VALIDATION_TOKEN = 1024


class BodyTooLarge(Exception):
    pass


def handshake(token: str) -> Response:
    # The token is echoed, so never as HTML, and markup means it is not from Graph.
    if not token or len(token) > MAX_VALIDATION_TOKEN or "<" in token or ">" in token:
        return PlainTextResponse("invalid validationToken", status_code=400)
    return PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff"})


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, or BodyTooLarge as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def incoming(received: Received) -> Incoming:
    item = received.notification
    return Incoming(
        subscription_id=item.subscription_id,
        client_state=item.client_state,
        kind="lifecycle" if item.is_lifecycle else "change",
        change_type=item.change_type,
        lifecycle_event=item.lifecycle_event,
        resource=item.resource,
        resource_id=item.resource_id,
        etag=item.etag,
        expires_at=item.subscription_expires_at,
        tenant_id=item.tenant_id,
        raw=received.raw,
    )


def is_known(item: Incoming) -> bool:
    if item.kind == "lifecycle":
        return item.lifecycle_event in LIFECYCLE_EVENTS
    return item.change_type in CHANGE_TYPES


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class NotificationEndpoint:
    def __init__(self, writer: InboxWriter, max_body_bytes: int) -> None:
        self._writer = writer
        self._max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._answer(request)
        metrics.ACK_SECONDS.observe(time.perf_counter() - started)
        metrics.NOTIFICATION_REQUESTS.labels(str(response.status_code)).inc()
        return response

    async def _answer(self, request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is not None:
            return handshake(token)
        try:
            body = await read_capped(request, self._max_body_bytes)
        except BodyTooLarge:
            metrics.NOTIFICATIONS.labels("unknown", "rejected").inc()
            return error(413, f"body is larger than {self._max_body_bytes} bytes")
        try:
            received = parse(body)
        except NotACollection as problem:
            metrics.NOTIFICATIONS.labels("unknown", "rejected").inc()
            log.warning("notification body rejected", extra={"reason": str(problem)})
            return error(400, str(problem))
        items = [incoming(item) for item in received]
        try:
            outcomes = await self._writer.write(items)
        except Exception:
            # Not stored, so not acknowledged: Graph retries a 503.
            log.exception("notifications not stored", extra={"items": len(items)})
            return error(503, "notifications could not be stored; retry later")
        self._count(items, outcomes)
        return Response(status_code=202)

    def _count(self, items: list[Incoming], outcomes: list[Outcome]) -> None:
        for item, outcome in zip(items, outcomes, strict=True):
            metrics.NOTIFICATIONS.labels(item.kind, outcome).inc()
            if outcome is Outcome.BAD_CLIENT_STATE:
                log.warning(
                    "clientState mismatch: item not acted on",
                    extra={
                        "subscription_id": item.subscription_id,
                        "tenant_id": item.tenant_id,
                        "kind": item.kind,
                    },
                )
            elif not is_known(item) or outcome is not Outcome.STORED:
                log.info(
                    "notification %s",
                    outcome if is_known(item) else "of an unknown type, stored",
                    extra={
                        "subscription_id": item.subscription_id,
                        "kind": item.kind,
                        "type": item.lifecycle_event or item.change_type,
                    },
                )


def routes(writer: InboxWriter, max_body_bytes: int) -> list[Route]:
    endpoint = NotificationEndpoint(writer, max_body_bytes)
    # Lifecycle items that arrive at the notification URL are handled the same way.
    return [
        Route("/graph/notifications", endpoint.handle, methods=["POST"]),
        Route("/graph/lifecycle", endpoint.handle, methods=["POST"]),
    ]
