"""The fake Graph's records: what it holds, what it saw, how it answers errors."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.authority import CALENDARS_READ, FakeAuthority

_MAILBOX = re.compile(r"^/?users(?:/|\(')([^/'()]+)", re.IGNORECASE)
_CALENDAR = re.compile(r"/calendars(?:/|\(')([^/'()]+)", re.IGNORECASE)


def mailbox_in(resource_or_path: str) -> str | None:
    match = _MAILBOX.match(resource_or_path)
    return match.group(1).lower() if match else None


def graph_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Graph's error shape, with the request id in the body and a header."""
    request_id = str(uuid.uuid4())
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": request_id,
            },
        }
    }
    return JSONResponse(
        body, status_code=status, headers={"request-id": request_id, **(headers or {})}
    )


@dataclass(frozen=True)
class FakeCalendar:
    id: str
    name: str

    def to_graph(self, *, default: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "color": "auto",
            "isDefaultCalendar": default,
            "canEdit": True,
            "owner": {"name": "Room", "address": "room@example.com"},
        }


@dataclass
class Mailbox:
    user_id: str
    default: FakeCalendar
    calendars: dict[str, FakeCalendar]

    def has_resource(self, resource: str) -> bool:
        """Whether a subscription resource names a calendar this mailbox has."""
        match = _CALENDAR.search(resource)
        return match is None or match.group(1) in self.calendars


@dataclass
class FakeSubscription:
    id: str
    resource: str
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: datetime
    app_id: str

    def same_target(self, resource: str, change_type: str) -> bool:
        def changes(value: str) -> set[str]:
            return {part.strip().lower() for part in value.split(",")}

        return self.resource.strip("/").lower() == resource.strip("/").lower() and (
            changes(self.change_type) == changes(change_type)
        )

    def to_graph(self, *, with_secret: bool) -> dict[str, Any]:
        # Graph writes seven fractional digits; the client must cope.
        expiry = self.expires_at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": self.change_type,
            "clientState": self.client_state if with_secret else None,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": expiry,
            "creatorId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.app_id)),
            "latestSupportedTlsVersion": "v1_2",
            "includeResourceData": False,
            "encryptionCertificate": None,
            "notificationQueryOptions": None,
        }


@dataclass
class Fault:
    status: int
    code: str
    message: str
    headers: dict[str, str]
    hang: bool
    method: str | None
    path: str | None
    times: int

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path.startswith(self.path)
        )


class Faults:
    """Queued failures; each answers `times` matching requests, in order."""

    def __init__(self) -> None:
        self._queue: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._queue.append(fault)

    def pending(self) -> int:
        """Requests the queued faults have yet to answer."""
        return sum(fault.times for fault in self._queue)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self._queue:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._queue.remove(fault)
                return fault
        return None


def check_bearer(
    authorization: str,
    authority: FakeAuthority | None,
    *,
    accept: str,
    consent_revoked: bool,
) -> Response | None:
    """Graph's answer to a bad or under-privileged token; None when it may pass.

    With an authority, its live grants are the truth (and their roles); without
    one, only `accept` is a valid token and it carries Calendars.Read.
    """
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
    roles: frozenset[str] = frozenset({CALENDARS_READ})
    if authority is not None:
        grant = authority.grant_for(token)
        if grant is None:
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        roles = grant.roles
    elif token != accept:
        return graph_error(
            401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed."
        )
    if consent_revoked or CALENDARS_READ not in roles:
        return graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )
    return None


@dataclass
class Handshake:
    """One validation request the fake made, and what came back."""

    url: str
    token: str
    status: int | None = None
    content_type: str | None = None
    body: str | None = None
    error: str | None = None
    ok: bool = False
    seconds: float = field(default=0.0)


def parse_datetime(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def missing_field(body: dict[str, Any]) -> str | None:
    """Graph's complaint about a create body, if any."""
    for key in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"{key} is required."
    state = body.get("clientState")
    if state is not None and (not isinstance(state, str) or len(state) > 128):
        return "clientState must be a string of at most 128 characters."
    return None


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def not_found() -> Response:
    return graph_error(404, "ResourceNotFound", "The object was not found.")


def invalid_user(user: str) -> Response:
    return graph_error(
        404, "ErrorInvalidUser", f"The requested user '{user}' is invalid."
    )
