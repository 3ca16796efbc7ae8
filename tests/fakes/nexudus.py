"""A fake Nexudus: the token endpoint and CoworkerMsOfficeCalendar, as documented.

It follows /work/shared/docs/nexudus.md, including the awkward parts a client
must survive: form-only token requests, rotating refresh tokens, partial list
rows, substring filters, PUT replacing the whole record, HTML 401 pages, 409
throttles with Retry-After. Tests steer it through `FakeNexudus` and read
`calls` afterwards. Drive it in-process through `httpx.ASGITransport(app=...)`
or over the network with `tests.fakes.server.serve(fake.app)`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import secrets
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bridge.nexudus import Clock, SystemClock

USERNAME = "bridge-api@example.com"
PASSWORD = "correct horse battery staple"
ENTITY = "CoworkerMsOfficeCalendar"
ALL_ROLES = frozenset(
    f"{ENTITY}-{action}" for action in ("List", "Read", "Create", "Edit", "Delete")
)
CALENDARS = "/api/spaces/coworkermsofficecalendars"
TOKEN_PATH = "/api/token"
REQUIRED = (
    "ResourceId",
    "Name",
    "SubscriptionId",
    "CalendarId",
    "SubscriptionExpireDate",
)
WRITABLE = (*REQUIRED, "CoworkerId", "SystemId", "CustomFields")
# List rows are partial: SystemId, CustomFields and others are left out on purpose.
LIST_FIELDS = (
    "Id", "ResourceId", "CoworkerId", "CoworkerFullName", "Name", "SubscriptionId",
    "CalendarId", "SubscriptionExpireDate", "UniqueId", "CreatedOn", "UpdatedOn",
    "IsNew", "ToStringText",
)  # fmt: skip
STRING_FILTERS = {
    f"{ENTITY}_Name": "Name",
    f"{ENTITY}_SubscriptionId": "SubscriptionId",
    f"{ENTITY}_CalendarId": "CalendarId",
    f"{ENTITY}_Coworker_FullName": "CoworkerFullName",
    f"{ENTITY}_SubscriptionExpireDate": "SubscriptionExpireDate",
}
INT_FILTERS = {f"{ENTITY}_Resource": "ResourceId", f"{ENTITY}_Coworker": "CoworkerId"}
SECRET_FIELDS = frozenset({"password", "refresh_token"})
HIDDEN_HEADERS = frozenset({"authorization", "cookie"})
UNAUTHORIZED_PAGE = (
    "<!DOCTYPE html><html><head><title>401 - Unauthorized: Access is denied due to "
    "invalid credentials.</title></head><body><h1>Server Error</h1><h2>401 - "
    "Unauthorized</h2></body></html>"
)

Handler = Callable[[Request, Any], Awaitable[Response]]


class VirtualClock:
    """A `Clock` whose sleeps return at once and move time forward instead."""

    def __init__(self, start: datetime = datetime(2030, 1, 1, tzinfo=UTC)) -> None:
        self.time = 0.0
        self._start = start

    def monotonic(self) -> float:
        return self.time

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.time)

    async def sleep(self, seconds: float) -> None:
        deadline = self.time + max(0.0, seconds)
        await asyncio.sleep(0)
        self.time = max(self.time, deadline)

    def advance(self, seconds: float) -> None:
        self.time += seconds


@dataclass
class Call:
    """One request as the fake saw it; secrets are masked, auth headers dropped."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    at: float
    peer: tuple[str, int] | None = None
    status: int = 0


@dataclass
class _Fault:
    kind: str
    remaining: int
    status: int = 500
    retry_after: str = "1"
    html: bool = False
    seconds: float = 0.0
    method: str | None = None
    path: str | None = None

    def applies(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path.startswith(self.path)
        )


@dataclass
class _Refresh:
    token: str
    expires_at: float


@dataclass
class _Access:
    user: str
    expires_at: float
    revoked: bool = False


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error_envelope(errors: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "Message": ", ".join(f"{prop}: {text}" for prop, text in errors),
        "Value": None,
        "Errors": [
            {"AttemptedValue": None, "Message": text, "PropertyName": prop}
            for prop, text in errors
        ],
        "WasSuccessful": False,
    }


class FakeNexudus:
    """State and switches of the fake; `app` is the ASGI application.

    Faults (`throttle_next`, `fail_next`, `hang_next`) apply to the next `n`
    matching calls, token calls included; `method`/`path` (a prefix) narrow
    them. `write_limit` (writes per minute) and `min_interval` (seconds between
    calls) enforce the published limits with 409 + Retry-After when set.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        roles: Iterable[str] = ALL_ROLES,
        clock: Clock | None = None,
        token_lifetime: int = 604799,
        refresh_lifetime: float = 15 * 86400,
        latency: float = 0.0,
        write_limit: int | None = None,
        min_interval: float | None = None,
        substring_filters: bool = True,
        max_page_size: int = 1000,
    ) -> None:
        self.users = dict(users if users is not None else {USERNAME: PASSWORD})
        self.roles = set(roles)
        self.clock: Clock = clock or SystemClock()
        self.token_lifetime = token_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.latency = latency
        self.write_limit = write_limit
        self.min_interval = min_interval
        self.substring_filters = substring_filters
        self.max_page_size = max_page_size
        self.records: dict[int, dict[str, Any]] = {}
        self.coworker_names: dict[int, str] = {}
        self.calls: list[Call] = []
        # Every access and refresh token handed out, live or not.
        self.issued_tokens: list[str] = []
        self._ids = itertools.count(87654321)
        self._access: dict[str, _Access] = {}
        self._refresh: dict[tuple[str, str], _Refresh] = {}
        self._faults: list[_Fault] = []
        self._writes: deque[float] = deque()
        self._last_served = -math.inf
        self._hangs_released = False
        self.app = Starlette(
            routes=[
                Route(TOKEN_PATH, self._wrap(self._token), methods=["POST"]),
                Route(
                    CALENDARS,
                    self._wrap(self._collection),
                    methods=["GET", "POST", "PUT"],
                ),
                Route(
                    CALENDARS + "/{record_id:int}",
                    self._wrap(self._member),
                    methods=["GET", "DELETE"],
                ),
            ]
        )

    # Control surface

    def add_record(self, **fields: Any) -> int:
        """Seed a full record; fields not given get plausible values."""
        record_id = int(fields.pop("Id", next(self._ids)))
        now = _iso(self.clock.now())
        record: dict[str, Any] = {
            "ResourceId": 1,
            "CoworkerId": None,
            "Name": f"Calendar {record_id}",
            "SubscriptionId": str(uuid.uuid4()),
            "CalendarId": f"AAMk{record_id}",
            "SubscriptionExpireDate": "2030-01-03T00:00:00Z",
            "SystemId": f"sys-{record_id}",
            "CustomFields": {"Data": []},
            "CreatedOn": now,
            "UpdatedOn": now,
            "UpdatedBy": "seed",
            **fields,
            "Id": record_id,
            "UniqueId": str(uuid.uuid4()),
            "IsNew": False,
        }
        self.records[record_id] = record
        return record_id

    def throttle_next(
        self,
        n: int = 1,
        retry_after: float = 1,
        *,
        http_date: bool = False,
        status: int = 409,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        value = (
            format_datetime(self.clock.now() + timedelta(seconds=retry_after), True)
            if http_date
            else f"{retry_after:g}"
        )
        self._add(_Fault("throttle", n, status, value, method=method, path=path))

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        html: bool = False,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self._add(_Fault("fail", n, status, html=html, method=method, path=path))

    def hang_next(
        self,
        n: int = 1,
        seconds: float = 60.0,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Delay the next calls by `seconds` of real time (or until released).

        A call whose client gave up is still served afterwards, as on a slow
        server: a write that timed out on the client side may have happened.
        """
        self._hangs_released = False
        self._add(_Fault("hang", n, seconds=seconds, method=method, path=path))

    def release_hangs(self) -> None:
        self._hangs_released = True

    def revoke_access_tokens(self) -> None:
        for grant in self._access.values():
            grant.revoked = True

    def expire_refresh_tokens(self) -> None:
        self._refresh.clear()

    def pending_faults(self) -> int:
        """Calls that queued faults (`fail_next` and the like) have yet to answer."""
        return sum(fault.remaining for fault in self._faults)

    def calls_to(
        self, method: str | None = None, path: str | None = None
    ) -> list[Call]:
        return [
            call
            for call in self.calls
            if (method is None or call.method == method)
            and (path is None or call.path == path)
        ]

    @property
    def access_tokens(self) -> list[str]:
        return list(self._access)

    @property
    def refresh_tokens(self) -> list[str]:
        return [refresh.token for refresh in self._refresh.values()]

    @property
    def token_calls(self) -> list[Call]:
        return self.calls_to("POST", TOKEN_PATH)

    @property
    def api_calls(self) -> list[Call]:
        return [call for call in self.calls if call.path != TOKEN_PATH]

    # Request handling

    def _add(self, fault: _Fault) -> None:
        self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.applies(method, path):
                fault.remaining -= 1
                return fault
        return None

    def _wrap(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            call = self._record(request, raw)
            response = await self._serve(request, raw, call, handler)
            call.status = response.status_code
            return response

        return endpoint

    def _record(self, request: Request, raw: bytes) -> Call:
        body: Any = None
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            body = {
                key: "***" if key in SECRET_FIELDS else value
                for key, value in parse_qsl(raw.decode())
            }
        elif raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        call = Call(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            body=body,
            headers={
                key: value
                for key, value in request.headers.items()
                if key not in HIDDEN_HEADERS
            },
            at=self.clock.monotonic(),
            peer=(request.client.host, request.client.port) if request.client else None,
        )
        self.calls.append(call)
        return call

    async def _serve(
        self, request: Request, raw: bytes, call: Call, handler: Handler
    ) -> Response:
        if self.latency:
            await self.clock.sleep(self.latency)
        fault = self._take_fault(call.method, call.path)
        if fault is not None and fault.kind == "hang":
            await self._hang(request, fault.seconds)
        elif fault is not None and fault.kind == "throttle":
            return self._throttled(fault.status, fault.retry_after)
        elif fault is not None:
            return self._failure(fault.status, fault.html)
        limited = self._limit(call)
        if limited is not None:
            return limited
        return await handler(request, raw)

    async def _hang(self, request: Request, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline and not self._hangs_released:
            if await request.is_disconnected():
                return
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    def _limit(self, call: Call) -> Response | None:
        now = self.clock.monotonic()
        # A microsecond of slack: sums of 0.1 s land a hair short of the limit.
        slack = 1e-6
        if (
            self.min_interval is not None
            and now - self._last_served + slack < self.min_interval
        ):
            return self._throttled(409, "1")
        is_write = call.method in ("POST", "PUT", "DELETE") and call.path != TOKEN_PATH
        if is_write and self.write_limit is not None:
            while self._writes and self._writes[0] <= now - 60 + slack:
                self._writes.popleft()
            if len(self._writes) >= self.write_limit:
                wait = math.ceil(self._writes[0] + 60 - now)
                return self._throttled(409, str(max(1, wait)))
            self._writes.append(now)
        self._last_served = now
        return None

    @staticmethod
    def _throttled(status: int, retry_after: str) -> Response:
        return JSONResponse(
            {"Message": "You must wait before accessing this url again."},
            status_code=status,
            headers={"Retry-After": retry_after},
        )

    @staticmethod
    def _failure(status: int, html: bool) -> Response:
        if html:
            page = f"<html><head><title>Error {status}</title></head><body>oops</body>"
            return HTMLResponse(page + "</html>", status_code=status)
        if status == 200:
            return JSONResponse(
                {
                    "Status": 200,
                    "Message": "The operation could not be completed.",
                    "Value": None,
                    "Errors": None,
                    "WasSuccessful": False,
                }
            )
        if status == 400:
            return JSONResponse(_error_envelope([("Name", "is not valid")]), 400)
        return JSONResponse({"Message": "An error has occurred."}, status_code=status)

    # Token endpoint

    async def _token(self, request: Request, raw: bytes) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        form = dict(parse_qsl(raw.decode()))
        client_id = request.headers.get("client_id", "")
        grant = form.get("grant_type")
        if grant == "password":
            user = form.get("username", "")
            if not user or self.users.get(user) != form.get("password"):
                return self._invalid_grant("The user name or password is incorrect.")
            return self._issue(user, client_id)
        if grant == "refresh_token":
            given = form.get("refresh_token", "")
            now = self.clock.monotonic()
            for (user, owner), current in self._refresh.items():
                if current.token == given and owner == client_id:
                    if current.expires_at <= now:
                        break
                    return self._issue(user, client_id)
            return self._invalid_grant("The refresh token is invalid or expired.")
        return JSONResponse({"error": "unsupported_grant_type"}, 400)

    @staticmethod
    def _invalid_grant(description: str) -> Response:
        body = {"error": "invalid_grant", "error_description": description}
        return JSONResponse(body, 400)

    def _issue(self, user: str, client_id: str) -> Response:
        now = self.clock.monotonic()
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        self.issued_tokens += [access, refresh]
        self._access[access] = _Access(user, now + self.token_lifetime)
        # One refresh token per client_id: this replaces (invalidates) the old one.
        self._refresh[(user, client_id)] = _Refresh(
            refresh, now + self.refresh_lifetime
        )
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": self.token_lifetime,
                "refresh_token": refresh,
            }
        )

    def _authorize(self, request: Request, role: str) -> Response | str:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        user: str | None = None
        if scheme.lower() == "bearer":
            grant = self._access.get(credential)
            if (
                grant
                and not grant.revoked
                and grant.expires_at > self.clock.monotonic()
            ):
                user = grant.user
        elif scheme.lower() == "basic":
            name, _, password = base64.b64decode(credential).decode().partition(":")
            user = name if self.users.get(name) == password else None
        if user is None:
            return HTMLResponse(UNAUTHORIZED_PAGE, status_code=401)
        if role not in self.roles:
            message = "Authorization has been denied for this request."
            return JSONResponse({"Message": message}, status_code=401)
        return user

    # CoworkerMsOfficeCalendar

    async def _collection(self, request: Request, raw: bytes) -> Response:
        if request.method == "GET":
            return self._list(request)
        action = "Create" if request.method == "POST" else "Edit"
        user = self._authorize(request, f"{ENTITY}-{action}")
        if isinstance(user, Response):
            return user
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse(_error_envelope([("", "The request is invalid.")]), 400)
        if request.method == "POST":
            return self._create(body, user)
        return self._replace(body, user)

    async def _member(self, request: Request, raw: bytes) -> Response:
        record_id: int = request.path_params["record_id"]
        action = "Read" if request.method == "GET" else "Delete"
        user = self._authorize(request, f"{ENTITY}-{action}")
        if isinstance(user, Response):
            return user
        record = self.records.get(record_id)
        if record is None:
            return JSONResponse({"Message": "Record not found."}, status_code=404)
        if request.method == "GET":
            return JSONResponse(self._full(record))
        del self.records[record_id]
        return self._written(record_id, "deleted", user)

    def _list(self, request: Request) -> Response:
        user = self._authorize(request, f"{ENTITY}-List")
        if isinstance(user, Response):
            return user
        query = request.query_params
        try:
            page = max(1, int(query.get("page", "1")))
            size = min(self.max_page_size, max(1, int(query.get("size", "25"))))
        except ValueError:
            return JSONResponse(_error_envelope([("page", "is not valid")]), 400)
        order = query.get("orderBy") or "Name"
        descending = query.get("dir") == "-1"
        rows = sorted(
            (self._full(record) for record in self._matching(query)),
            key=lambda row: _sort_key(row.get(order)),
            reverse=descending,
        )
        total = len(rows)
        pages = max(1, math.ceil(total / size))
        chosen = rows[(page - 1) * size : page * size]
        return JSONResponse(
            {
                "Records": [{k: row.get(k) for k in LIST_FIELDS} for row in chosen],
                "CurrentPage": page,
                "CurrentPageSize": size,
                "CurrentOrderField": order,
                "CurrentSortDirection": 1 if descending else 0,
                "FirstItem": (page - 1) * size + 1 if chosen else 0,
                "LastItem": (page - 1) * size + len(chosen),
                "TotalItems": total,
                "TotalPages": pages,
                "HasNextPage": page < pages,
                "HasPreviousPage": page > 1,
            }
        )

    def _matching(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        # Filter by filter with comprehensions: the benchmarks search a
        # thousand records thousands of times.
        found = list(self.records.values())
        if ids := query.get("id"):
            wanted = {int(part) for part in ids.strip("[]").split(",") if part}
            found = [record for record in found if record["Id"] in wanted]
        for param, name in INT_FILTERS.items():
            if param in query:
                number = query[param]
                found = [record for record in found if str(record.get(name)) == number]
        for param, name in STRING_FILTERS.items():
            if param not in query:
                continue
            text = query[param].lower()
            values = (
                (record, str(self._value(record, name) or "").lower())
                for record in found
            )
            if self.substring_filters:
                found = [record for record, value in values if text in value]
            else:
                found = [record for record, value in values if text == value]
        return found

    def _value(self, record: Mapping[str, Any], name: str) -> Any:
        if name == "CoworkerFullName":
            return self._full(record)[name]
        return record.get(name)

    def _full(self, record: Mapping[str, Any]) -> dict[str, Any]:
        coworker = record.get("CoworkerId")
        return {
            **record,
            "CoworkerFullName": (
                self.coworker_names.get(coworker, f"Coworker {coworker}")
                if coworker
                else None
            ),
            "ToStringText": record.get("Name"),
            "LocalizationDetails": None,
        }

    def _create(self, body: Mapping[str, Any], user: str) -> Response:
        errors = _validate(body)
        if errors:
            return JSONResponse(_error_envelope(errors), 400)
        fields = {key: body.get(key) for key in WRITABLE}
        fields["SubscriptionExpireDate"] = _normal_date(body["SubscriptionExpireDate"])
        record_id = self.add_record(**fields, UpdatedBy=user)
        return self._written(record_id, "created", user)

    def _replace(self, body: Mapping[str, Any], user: str) -> Response:
        record_id = body.get("Id")
        if not isinstance(record_id, int):
            return JSONResponse(_error_envelope([("Id", "is a required field")]), 400)
        record = self.records.get(record_id)
        if record is None:
            return JSONResponse({"Message": "Record not found."}, status_code=404)
        errors = _validate(body)
        if errors:
            return JSONResponse(_error_envelope(errors), 400)
        # PUT replaces the whole record: writable fields left out are cleared.
        record.update({key: body.get(key) for key in WRITABLE})
        record["SubscriptionExpireDate"] = _normal_date(body["SubscriptionExpireDate"])
        record["UpdatedOn"] = _iso(self.clock.now())
        record["UpdatedBy"] = user
        return self._written(record_id, "updated", user)

    def _written(self, record_id: int, verb: str, user: str) -> Response:
        return JSONResponse(
            {
                "Status": 200,
                "Message": f"{ENTITY} was successfully {verb}.",
                "Value": {"Id": record_id},
                "OpenInDialog": False,
                "OpenInWindow": False,
                "RedirectURL": None,
                "JavaScript": None,
                "UpdatedOn": _iso(self.clock.now()),
                "UpdatedBy": user,
                "Errors": None,
                "WasSuccessful": True,
            }
        )


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value or ""))


def _normal_date(text: str) -> str:
    parsed = datetime.fromisoformat(text)
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validate(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for name in REQUIRED:
        value = body.get(name)
        expected = int if name == "ResourceId" else str
        if value is None or value == "":
            errors.append((name, "is a required field"))
        elif not isinstance(value, expected) or isinstance(value, bool):
            errors.append((name, "is not valid"))
    coworker = body.get("CoworkerId")
    if coworker is not None and not isinstance(coworker, int):
        errors.append(("CoworkerId", "is not valid"))
    date = body.get("SubscriptionExpireDate")
    if isinstance(date, str) and date:
        try:
            _normal_date(date)
        except ValueError:
            errors.append(("SubscriptionExpireDate", "is not valid"))
    return errors
