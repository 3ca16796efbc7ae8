"""The admin API: connections and the inbox, as JSON behind a bearer token.

The token is compared in constant time; without `BRIDGE_ADMIN_TOKEN` every route
answers 503 saying so. Errors are `{"error": "<one line>", "detail": ...}`. The work
itself is the service layer's (`bridge.sync.connect`, `bridge.store`), which the CLI
calls too.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.graph._errors import GraphError
from bridge.nexudus import NexudusError
from bridge.settings import Settings
from bridge.store import connections as store
from bridge.store import db, queue
from bridge.store.connections import State
from bridge.store.inbox import ItemState
from bridge.store.schema import MAX_ID, utcnow
from bridge.sync.connect import ConnectRequest, Refused, connect, first_problem
from bridge.sync.operator import NoSuchConnection, NotAllowed, Operator
from bridge.sync.upstreams import Unconfigured, Upstreams

Handler = Callable[[Request], Awaitable[Response]]
E = TypeVar("E", bound=StrEnum)

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class Problem(Exception):
    """An answer other than success, with its status and one-line message."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def _error(status: int, message: str, detail: Any = None, **headers: str) -> Response:
    body = {"error": message, "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers or None)


def _guarded(settings: Settings, handler: Handler) -> Handler:
    expected = settings.bridge_admin_token

    async def endpoint(request: Request) -> Response:
        if expected is None:
            return _error(503, "the admin API is disabled: set BRIDGE_ADMIN_TOKEN")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), expected.get_secret_value().encode()
        )
        if not valid:
            return _error(
                401,
                "missing or wrong bearer token",
                **{"WWW-Authenticate": "Bearer"},
            )
        try:
            return await handler(request)
        except Problem as problem:
            return _error(problem.status, str(problem), problem.detail)

    return endpoint


def _paging(request: Request) -> tuple[int, int]:
    def number(name: str, default: int, low: int, high: int) -> int:
        text = request.query_params.get(name)
        if text is None:
            return default
        if not text.isdigit() or not low <= int(text) <= high:
            raise Problem(400, f"{name} must be a whole number from {low} to {high}")
        return int(text)

    return (
        number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        number("offset", 0, 0, 10**12),
    )


def _state(request: Request, states: type[E]) -> E | None:
    text = request.query_params.get("state")
    if text is None:
        return None
    try:
        return states(text)
    except ValueError:
        allowed = ", ".join(s.value for s in states)
        raise Problem(400, f"unknown state {text!r}: one of {allowed}") from None


def _path_id(request: Request, what: str = "connection") -> int:
    value: int = request.path_params["id"]
    if value > MAX_ID:  # no such row could exist; the database would fail on it
        raise Problem(404, f"no {what} {value}")
    return value


def admin_routes(
    settings: Settings,
    engine: Engine,
    upstreams: Upstreams,
    wake: Callable[[], None] | None = None,
) -> list[Route]:
    lifetime = timedelta(minutes=settings.subscription_lifetime_minutes)
    operator = Operator(engine, settings, upstreams)

    async def create_connection(request: Request) -> Response:
        try:
            wanted = ConnectRequest.model_validate_json(await request.body())
        except ValidationError as error:
            field, message = first_problem(error)
            raise Problem(
                400,
                f"invalid connection: {field or 'body'}: {message}",
                error.errors(include_url=False, include_input=False),
            ) from None
        try:
            connected = await connect(engine, upstreams, wanted, lifetime=lifetime)
        except Unconfigured as error:
            raise Problem(503, f"cannot connect: {error}") from None
        except Refused as error:
            raise Problem(
                502, str(error), {"upstream": error.upstream, "message": error.message}
            ) from None
        except (GraphError, NexudusError) as error:
            upstream = "Graph" if isinstance(error, GraphError) else "Nexudus"
            raise Problem(
                502,
                f"{upstream}: {error}",
                {"upstream": upstream, "message": str(error)},
            ) from None
        if wake is not None and connected.connection.state is State.PENDING:
            wake()
        status = 201 if connected.created else 200
        return JSONResponse(connected.connection.to_json(), status_code=status)

    async def list_connections(request: Request) -> Response:
        limit, offset = _paging(request)
        state = _state(request, State)
        found, next_offset = await db.read(engine, store.page, state, limit, offset)
        return JSONResponse(
            {"items": [c.to_json() for c in found], "next_offset": next_offset}
        )

    async def show_connection(request: Request) -> Response:
        connection_id = _path_id(request)
        found = await db.read(engine, store.get, connection_id)
        if found is None:
            raise Problem(404, f"no connection {connection_id}")
        return JSONResponse(found.to_json())

    async def disconnect(request: Request) -> Response:
        # 200 once the connection is disconnected: it is from now on. What is left
        # to delete upstream shows in `last_error` until the worker has done it.
        try:
            outcome = await operator.disconnect(_path_id(request))
        except NoSuchConnection as error:
            raise Problem(404, str(error)) from None
        return JSONResponse(outcome.connection.to_json())

    async def renew(request: Request) -> Response:
        try:
            outcome = await operator.renew(_path_id(request))
        except NoSuchConnection as error:
            raise Problem(404, str(error)) from None
        except NotAllowed as error:
            raise Problem(409, str(error)) from None
        shown = outcome.connection.to_json()
        match outcome.result:
            case "done":
                return JSONResponse(shown)
            case "queued":
                return JSONResponse(shown, status_code=202)
            case "wait":
                raise Problem(503, f"renewal waits: {outcome.reason}", shown)
            case _:
                raise Problem(
                    502,
                    f"renewal failed: {outcome.reason}",
                    {"connection": shown, "result": outcome.result},
                )

    async def list_inbox(request: Request) -> Response:
        limit, offset = _paging(request)
        state = _state(request, ItemState)
        found, next_offset = await db.read(engine, queue.entries, state, limit, offset)
        return JSONResponse(
            {"items": [e.to_json() for e in found], "next_offset": next_offset}
        )

    async def retry_item(request: Request) -> Response:
        item_id = _path_id(request, "inbox item")
        revived = await db.write(engine, queue.revive, item_id, utcnow())
        found = await db.read(engine, queue.entry, item_id)
        if found is None:
            raise Problem(404, f"no inbox item {item_id}")
        if not revived:
            raise Problem(
                409, f"inbox item {item_id} is {found.state}, not dead", found.to_json()
            )
        if wake is not None:
            wake()
        return JSONResponse(found.to_json())

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _guarded(settings, handler), methods=[method])

    return [
        route("/admin/connections", create_connection, "POST"),
        route("/admin/connections", list_connections, "GET"),
        route("/admin/connections/{id:int}", show_connection, "GET"),
        route("/admin/connections/{id:int}", disconnect, "DELETE"),
        route("/admin/connections/{id:int}/renew", renew, "POST"),
        route("/admin/inbox", list_inbox, "GET"),
        route("/admin/inbox/{id:int}/retry", retry_item, "POST"),
    ]
