"""A stand-in for Microsoft Graph's subscription and calendar endpoints.

It behaves as the documented service does where the bridge depends on it: bearer
tokens are checked (against a `FakeAuthority`, or a fixed set); `POST
/subscriptions` performs the validation handshake against `notificationUrl` and
`lifecycleNotificationUrl` before answering, and fails the create when the
answer is wrong or later than `handshake_timeout`; the 4230-minute lifetime,
409 on a duplicate resource + changeType, 404 on unknown ids, the 1,000
subscriptions per mailbox and the 4 concurrent requests per mailbox are
enforced with Graph's error bodies.

Control surface: `add_mailbox`, `seed_subscription`, `fail_next` (status,
Retry-After, body), `hang_next`, `revoke_consent`, `request_delay`. Observations:
`calls`, `handshakes`, `subscriptions`, `max_in_flight`. Serve `.app` (the API is
under `/v1.0`) with uvicorn or `httpx.ASGITransport`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from tests.fakes.authority import FakeAuthority
from tests.fakes.graph_outbound import (
    change_notification,
    lifecycle_notification,
    outbound_client,
    validate,
)
from tests.fakes.graph_state import (
    FakeCalendar,
    FakeSubscription,
    Fault,
    Faults,
    Handshake,
    Mailbox,
    check_bearer,
    graph_error,
    invalid_user,
    json_body,
    mailbox_in,
    missing_field,
    not_found,
    parse_datetime,
)

API_PREFIX = "/v1.0"
STATIC_TOKEN = "fake-graph-static-token"  # accepted when no authority is given

Handler = Callable[[Request], Awaitable[Response]]


class StaticTokens:
    """A token source (see `bridge.graph.tokens.TokenSource`) for a FakeGraph
    without an authority: always STATIC_TOKEN; counts what it was asked."""

    def __init__(self) -> None:
        self.issued = 0
        self.invalidated = 0

    async def token(self) -> str:
        self.issued += 1
        return STATIC_TOKEN

    def invalidate(self) -> None:
        self.invalidated += 1


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int
    mailbox: str | None
    prefer: str | None
    body: Any


@dataclass
class FakeGraph:
    authority: FakeAuthority | None = None
    handshake_timeout: float = 10.0
    handshake_client: httpx.AsyncClient | None = None
    validate_on_renew: bool = False
    max_expiration_minutes: int = 4230
    concurrency_limit: int = 4
    subscription_limit: int = 1000
    page_size: int = 100
    request_delay: float = 0.0
    hang_seconds: float = 30.0
    app_id: str = "2b6f9c1e-7d3a-4e85-9b0c-4f1a6d8e2c57"
    tenant_id: str = "5e0b2c7d-91a4-4f36-8d2e-a7c9b14f3e60"
    calls: list[Call] = field(default_factory=list)
    handshakes: list[Handshake] = field(default_factory=list)
    subscriptions: dict[str, FakeSubscription] = field(default_factory=dict)
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    consent_revoked: bool = False
    _in_flight: Counter[str] = field(default_factory=Counter)
    _faults: Faults = field(default_factory=Faults)

    @property
    def app(self) -> Starlette:
        def wrap(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                return await self._around(request, handler)

            return endpoint

        routes = [
            Route("/subscriptions", wrap(self._create), methods=["POST"]),
            Route("/subscriptions", wrap(self._list), methods=["GET"]),
            Route("/subscriptions/{id}", wrap(self._renew), methods=["PATCH"]),
            Route("/subscriptions/{id}", wrap(self._delete), methods=["DELETE"]),
            Route("/users/{user}/calendar", wrap(self._default_calendar)),
            Route("/users/{user}/calendars/{calendar}", wrap(self._calendar)),
        ]
        return Starlette(routes=[Mount(API_PREFIX, routes=routes)])

    # -- control surface ---------------------------------------------------------

    def add_mailbox(self, user_id: str, *calendars: tuple[str, str]) -> Mailbox:
        """A mailbox with a default calendar ("Calendar") and any (id, name) more."""
        default = FakeCalendar(f"AAMkAD{uuid.uuid4().hex}-default", "Calendar")
        extra = {cid: FakeCalendar(cid, name) for cid, name in calendars}
        mailbox = Mailbox(user_id.lower(), default, {default.id: default, **extra})
        self.mailboxes[mailbox.user_id] = mailbox
        return mailbox

    def seed_subscription(
        self,
        resource: str,
        *,
        change_type: str = "created,updated,deleted",
        minutes: int = 60,
        foreign: bool = False,
    ) -> FakeSubscription:
        """A subscription made earlier (no handshake); `foreign`: another app's."""
        subscription = FakeSubscription(
            id=str(uuid.uuid4()),
            resource=resource,
            change_type=change_type,
            notification_url="https://elsewhere.example/notify",
            lifecycle_url=None,
            client_state="seeded",
            expires_at=datetime.now(UTC) + timedelta(minutes=minutes),
            app_id="another-application" if foreign else self.app_id,
        )
        self.subscriptions[subscription.id] = subscription
        return subscription

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        code: str | None = None,
        message: str = "",
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next matching requests with `status` and Graph's error body."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        default_code = {429: "TooManyRequests", 503: "ServiceUnavailable"}
        code = code or default_code.get(status, "UnknownError")
        self._faults.add(
            Fault(status, code, message, headers, False, method, path, times)
        )

    def hang_next(
        self, *, times: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        """Hold the next matching requests open until the client gives up."""
        self._faults.add(Fault(0, "", "", {}, True, method, path, times))

    def revoke_consent(self) -> None:
        """As if the tenant's admin removed Calendars.Read: everything is 403."""
        self.consent_revoked = True

    def pending_faults(self) -> int:
        """Requests that queued faults (`fail_next`, `hang_next`) have yet to answer."""
        return self._faults.pending()

    def calls_to(self, method: str, path: str = "") -> list[Call]:
        return [
            call
            for call in self.calls
            if call.method == method and call.path.startswith(API_PREFIX + path)
        ]

    # -- request pipeline -----------------------------------------------------------

    async def _around(self, request: Request, handler: Handler) -> Response:
        body = await json_body(request)
        mailbox = self._mailbox_for(request, body)
        key = mailbox or ""
        self._in_flight[key] += 1
        self.max_in_flight[key] = max(self.max_in_flight[key], self._in_flight[key])
        try:
            response = await self._answer(request, handler, mailbox, key)
        finally:
            self._in_flight[key] -= 1
        self.calls.append(
            Call(
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                mailbox=mailbox,
                prefer=request.headers.get("prefer"),
                body=body,
            )
        )
        return response

    async def _answer(
        self, request: Request, handler: Handler, mailbox: str | None, key: str
    ) -> Response:
        if mailbox is not None and self._in_flight[key] > self.concurrency_limit:
            return graph_error(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                {"Retry-After": "1"},
            )
        if self.request_delay:
            await asyncio.sleep(self.request_delay)
        path = request.url.path.removeprefix(API_PREFIX)
        if fault := self._faults.take(request.method, path):
            if fault.hang:
                await self._hang(request)
                return Response(status_code=504)
            return graph_error(fault.status, fault.code, fault.message, fault.headers)
        refusal = check_bearer(
            request.headers.get("authorization", ""),
            self.authority,
            accept=STATIC_TOKEN,
            consent_revoked=self.consent_revoked,
        )
        if refusal is not None:
            return refusal
        return await handler(request)

    async def _hang(self, request: Request) -> None:
        deadline = asyncio.get_running_loop().time() + self.hang_seconds
        while asyncio.get_running_loop().time() < deadline:
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.05)

    def _mailbox_for(self, request: Request, body: Any) -> str | None:
        path = request.url.path.removeprefix(API_PREFIX)
        if path.startswith("/users/"):
            return mailbox_in(path)
        if request.method == "POST" and isinstance(body, dict):
            return mailbox_in(str(body.get("resource", "")))
        subscription_id = path.removeprefix("/subscriptions/")
        if subscription := self.subscriptions.get(subscription_id):
            return mailbox_in(subscription.resource)
        return None

    # -- endpoints ------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            return graph_error(400, "BadRequest", "Invalid request body.")
        problem = missing_field(body) or self._expiry_problem(
            body["expirationDateTime"]
        )
        if problem:
            return graph_error(400, "ExtensionError", problem)
        resource = str(body["resource"])
        if (mailbox := self.mailboxes.get(mailbox_in(resource) or "")) is None:
            return graph_error(
                404, "ExtensionError", f"Resource '{resource}' was not found."
            )
        if not mailbox.has_resource(resource):
            return graph_error(404, "ErrorItemNotFound", "The calendar was not found.")
        change_type = str(body["changeType"])
        for existing in self.subscriptions.values():
            if existing.same_target(resource, change_type):
                return graph_error(
                    409,
                    "ExtensionError",
                    f"Subscription Id {existing.id} already exists for the "
                    "requested combination",
                )
        active = sum(
            1
            for s in self.subscriptions.values()
            if mailbox_in(s.resource) == mailbox.user_id
        )
        if active >= self.subscription_limit:
            return graph_error(
                403,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: Forbidden; Reason: The "
                "maximum number of subscriptions for this mailbox has been reached.]",
            )
        urls = [str(body["notificationUrl"])]
        if lifecycle := body.get("lifecycleNotificationUrl"):
            urls.append(str(lifecycle))
        for url in urls:
            if failure := await self._validate(url):
                return graph_error(400, "ValidationError", failure)
        subscription = FakeSubscription(
            id=str(uuid.uuid4()),
            resource=resource,
            change_type=change_type,
            notification_url=urls[0],
            lifecycle_url=str(lifecycle) if lifecycle else None,
            client_state=body.get("clientState"),
            expires_at=self._clamped(body["expirationDateTime"]),
            app_id=self.app_id,
        )
        self.subscriptions[subscription.id] = subscription
        return JSONResponse(subscription.to_graph(with_secret=True), status_code=201)

    async def _list(self, request: Request) -> Response:
        ours = [s for s in self.subscriptions.values() if s.app_id == self.app_id]
        start = int(request.query_params.get("$skiptoken", "0"))
        page = ours[start : start + self.page_size]
        answer: dict[str, Any] = {
            "@odata.context": f"{request.base_url}v1.0/$metadata#subscriptions",
            "value": [s.to_graph(with_secret=False) for s in page],
        }
        if start + self.page_size < len(ours):
            answer["@odata.nextLink"] = (
                f"{str(request.base_url).rstrip('/')}{API_PREFIX}/subscriptions"
                f"?$skiptoken={start + self.page_size}"
            )
        return JSONResponse(answer)

    async def _renew(self, request: Request) -> Response:
        subscription = self.subscriptions.get(request.path_params["id"])
        if subscription is None or subscription.app_id != self.app_id:
            return not_found()
        body = await json_body(request)
        if not isinstance(body, dict) or "expirationDateTime" not in body:
            return graph_error(400, "BadRequest", "expirationDateTime is required.")
        if problem := self._expiry_problem(body["expirationDateTime"]):
            return graph_error(400, "ExtensionError", problem)
        if self.validate_on_renew and (
            failure := await self._validate(subscription.notification_url)
        ):
            return graph_error(400, "ValidationError", failure)
        subscription.expires_at = self._clamped(body["expirationDateTime"])
        return JSONResponse(subscription.to_graph(with_secret=False))

    async def _delete(self, request: Request) -> Response:
        subscription = self.subscriptions.get(request.path_params["id"])
        if subscription is None or subscription.app_id != self.app_id:
            return not_found()
        del self.subscriptions[subscription.id]
        return Response(status_code=204)

    async def _default_calendar(self, request: Request) -> Response:
        mailbox = self.mailboxes.get(request.path_params["user"].lower())
        if mailbox is None:
            return invalid_user(request.path_params["user"])
        return JSONResponse(mailbox.default.to_graph(default=True))

    async def _calendar(self, request: Request) -> Response:
        mailbox = self.mailboxes.get(request.path_params["user"].lower())
        if mailbox is None:
            return invalid_user(request.path_params["user"])
        calendar = mailbox.calendars.get(request.path_params["calendar"])
        if calendar is None:
            return graph_error(
                404,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            )
        return JSONResponse(calendar.to_graph(default=calendar is mailbox.default))

    # -- outbound: handshakes and deliveries ---------------------------------------

    async def deliver(
        self,
        subscription_id: str,
        *,
        change_type: str = "updated",
        event_id: str | None = None,
    ) -> httpx.Response:
        """POST one change notification to the subscription's notificationUrl."""
        subscription = self.subscriptions[subscription_id]
        item = change_notification(
            subscription, self.tenant_id, change_type, event_id or uuid.uuid4().hex
        )
        return await self._post(subscription.notification_url, {"value": [item]})

    async def deliver_lifecycle(
        self, subscription_id: str, event: str
    ) -> httpx.Response:
        """POST a lifecycle notification (e.g. "reauthorizationRequired")."""
        subscription = self.subscriptions[subscription_id]
        item = lifecycle_notification(subscription, self.tenant_id, event)
        url = subscription.lifecycle_url or subscription.notification_url
        return await self._post(url, {"value": [item]})

    async def _post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        async with outbound_client(self.handshake_client) as client:
            return await client.post(url, json=body, timeout=10.0)

    async def _validate(self, url: str) -> str | None:
        async with outbound_client(self.handshake_client) as client:
            record, failure = await validate(client, url, self.handshake_timeout)
        self.handshakes.append(record)
        return failure

    # -- expiry -------------------------------------------------------------------

    def _expiry_problem(self, value: Any) -> str | None:
        try:
            asked = parse_datetime(value)
        except (TypeError, ValueError):
            return "Invalid expirationDateTime."
        limit = datetime.now(UTC) + timedelta(minutes=self.max_expiration_minutes)
        if asked > limit:
            return (
                "Subscription expiration can only be "
                f"{self.max_expiration_minutes} minutes in the future."
            )
        return None

    def _clamped(self, value: Any) -> datetime:
        # Graph raises anything under 45 minutes to 45 minutes.
        return max(parse_datetime(value), datetime.now(UTC) + timedelta(minutes=45))
