"""The async Nexudus client: CoworkerMsOfficeCalendar records over REST."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from bridge.upstream import UpstreamClient, retry_after_seconds

from ._auth import TokenManager
from ._errors import (
    ConnectionFailed,
    NotFound,
    Throttled,
    TimedOut,
    Unauthorized,
    UnexpectedResponse,
)
from ._models import CalendarFields, CalendarRecord
from ._pacing import Clock, Pacer, SystemClock
from ._responses import check_envelope, error_for_status, read_json

__all__ = ["NexudusClient"]

logger = logging.getLogger(__name__)

CALENDARS = "/api/spaces/coworkermsofficecalendars"
TOKEN_PATH = "/api/token"  # noqa: S105 (a route, not a secret)
ENTITY = "CoworkerMsOfficeCalendar"
THROTTLE_STATUSES = frozenset({409, 429})
# The `operation` label of each call in the metrics.
OPERATIONS = {
    "List": "list_calendars",
    "Read": "get_calendar",
    "Create": "create_calendar",
    "Edit": "update_calendar",
    "Delete": "delete_calendar",
}
# A runaway pager (a server that always claims another page) must end.
MAX_PAGES = 10_000

JsonParams = Mapping[str, str | int]

# Nexudus allows one call per 100 ms, measured as calls arrive; calls sent exactly
# 100 ms apart arrive closer now and then and each such one costs a 409 and a
# second's hold for every call. A tenth more spacing made those rare (bench/drain:
# 600 refusals and 6.6x the lower bound at 0.100 s, 1-2 and 1.12x at 0.110 s).
MIN_INTERVAL = 0.11


class NexudusClient(UpstreamClient):
    """Typed access to the Nexudus API for the bridge.

    Throttling: a 409 or 429 closes the pacer's gate for Retry-After seconds,
    so nothing from this client goes out sooner. When that wait is at most
    `max_retry_wait` the client waits and sends the call once more (the
    throttled call was not executed, so this is safe for writes too);
    otherwise it raises `Throttled` and the caller schedules the retry.
    Server errors and transport failures are never retried here: a timed-out
    write may have been applied, and only the caller knows how to check.
    """

    upstream = "nexudus"
    throttle_statuses = THROTTLE_STATUSES

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        client_id: str = "graph-bridge",
        *,
        http: httpx.AsyncClient | None = None,
        min_interval: float = MIN_INTERVAL,
        writes_per_minute: int | None = 60,
        timeout: float = 15.0,
        max_retry_wait: float = 2.0,
        default_retry_after: float = 10.0,
        page_size: int = 100,
        clock: Clock | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        super().__init__(http, timeout)
        self._timeout = timeout
        self._max_retry_wait = max_retry_wait
        self._default_retry_after = default_retry_after
        self._page_size = page_size
        self._clock: Clock = clock or SystemClock()
        self._pacer = Pacer(
            self._clock, min_interval=min_interval, writes_per_minute=writes_per_minute
        )
        self._auth = TokenManager(
            self._post_token_form,
            username=username,
            password=password,
            monotonic=self._clock.monotonic,
        )

    def __repr__(self) -> str:
        return f"<NexudusClient {self._base_url!r} client_id={self._client_id!r}>"

    async def check_login(self) -> None:
        """Get a token now; raises `Unauthorized` when the login is refused."""
        await self._auth.token()

    async def search_calendars(
        self,
        *,
        resource_id: int | None = None,
        coworker_id: int | None = None,
        name: str | None = None,
        subscription_id: str | None = None,
        calendar_id: str | None = None,
    ) -> list[CalendarRecord]:
        """Every record matching all given filters exactly, over all pages.

        Nexudus may match string filters by substring, so each row is checked
        here as well. Rows are partial records: use `get_calendar` before
        changing one.
        """
        wanted: dict[str, str | int] = {
            key: value
            for key, value in (
                ("Resource", resource_id),
                ("Coworker", coworker_id),
                ("Name", name),
                ("SubscriptionId", subscription_id),
                ("CalendarId", calendar_id),
            )
            if value is not None
        }
        filters = {f"{ENTITY}_{key}": value for key, value in wanted.items()}
        found: dict[int, CalendarRecord] = {}
        for page in range(1, MAX_PAGES + 1):
            params = {**filters, "page": page, "size": self._page_size, "orderBy": "Id"}
            try:
                body = await self._call("GET", CALENDARS, "List", params=params)
            except NotFound as exc:
                raise UnexpectedResponse(
                    f"{exc}: the list route is missing; check the Nexudus API URL",
                    status_code=exc.status_code,
                ) from exc
            rows, more = _page_of(body)
            for row in rows:
                record = CalendarRecord.from_api(row)
                if _confirms(record, wanted):
                    found.setdefault(record.id, record)
            if not rows or not more:
                return list(found.values())
        raise UnexpectedResponse(f"Nexudus search did not end after {MAX_PAGES} pages")

    async def find_by_subscription_id(
        self, subscription_id: str
    ) -> list[CalendarRecord]:
        return await self.search_calendars(subscription_id=subscription_id)

    async def get_calendar(self, record_id: int) -> CalendarRecord | None:
        """The full record, or None when Nexudus has no record with this id."""
        try:
            body = await self._call("GET", f"{CALENDARS}/{record_id}", "Read")
        except NotFound:
            return None
        if body is None:
            return None
        return CalendarRecord.from_api(body)

    async def create_calendar(self, fields: CalendarFields) -> int:
        body = await self._call(
            "POST", CALENDARS, "Create", json=fields.to_api(), write=True
        )
        value = body.get("Value") if isinstance(body, Mapping) else None
        new_id = value.get("Id") if isinstance(value, Mapping) else None
        if not isinstance(new_id, int) or isinstance(new_id, bool):
            raise UnexpectedResponse(
                f"Nexudus POST {CALENDARS}: answer has no Value.Id", status_code=200
            )
        return new_id

    async def update_calendar(self, record_id: int, fields: CalendarFields) -> bool:
        """Bring the record to `fields`; True when a PUT was needed and sent.

        Nexudus has no PATCH and a PUT replaces the whole record, so the full
        record is read first and sent back whole with the bridge's fields set.
        Raises `NotFound` when the record no longer exists.
        """
        current = await self.get_calendar(record_id)
        if current is None:
            raise NotFound(
                f"Nexudus GET {CALENDARS}/{record_id}: not found (HTTP 404)",
                status_code=404,
            )
        if current.matches(fields):
            return False
        body = current.updated_with(fields)
        await self._call("PUT", CALENDARS, "Edit", json=body, write=True)
        return True

    async def delete_calendar(self, record_id: int) -> bool:
        """Delete the record; False when it was already gone."""
        try:
            await self._call("DELETE", f"{CALENDARS}/{record_id}", "Delete", write=True)
        except NotFound:
            return False
        return True

    async def _call(
        self,
        method: str,
        path: str,
        action: str,
        *,
        params: JsonParams | None = None,
        json: Any = None,
        write: bool = False,
    ) -> Any:
        what = f"Nexudus {method} {path}"
        role = f"{ENTITY}-{action}"
        retried_401 = False
        while True:
            token = await self._auth.token()
            response = await self._exchange(
                OPERATIONS[action],
                method,
                path,
                write=write,
                headers={"Authorization": f"Bearer {token}"},
                params=params,
                json=json,
            )
            status = response.status_code
            if status == 401 and not retried_401:
                # Tokens may die early (revoked, rotated server-side): one new
                # token tells a stale token from a real refusal.
                logger.info("%s answered 401; retrying once with a new token", what)
                self._auth.discard(token)
                retried_401 = True
                continue
            if status in (401, 403):
                raise Unauthorized(
                    f"{what}: HTTP {status}, bad credentials or missing role ({role})",
                    required_role=role,
                    status_code=status,
                )
            if status >= 300:
                raise error_for_status(response, what)
            body = read_json(response, what, allow_empty=method == "DELETE")
            check_envelope(body, what, status)
            return body

    async def _post_token_form(self, form: Mapping[str, str]) -> httpx.Response:
        return await self._exchange(
            "token",
            "POST",
            TOKEN_PATH,
            write=False,
            headers={"client_id": self._client_id},
            data=form,
        )

    async def _exchange(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        write: bool,
        headers: Mapping[str, str],
        params: JsonParams | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one call through the pacer; a throttle answer raises or waits."""
        waited = False
        while True:
            await self._pacer.acquire(write=write)
            response = await self._send(
                operation,
                method,
                path,
                headers=headers,
                params=params,
                json=json,
                data=data,
            )
            status = response.status_code
            if status not in THROTTLE_STATUSES:
                return response
            retry_after = retry_after_seconds(
                response.headers.get("retry-after"),
                default=self._default_retry_after,
                now=self._clock.now(),
            )
            self._pacer.hold_for(retry_after)
            retry_after = max(
                retry_after, self._pacer.not_before - self._clock.monotonic()
            )
            logger.warning(
                "Nexudus %s %s throttled (HTTP %d); no calls for %.1fs",
                method,
                path,
                status,
                retry_after,
            )
            if not waited and retry_after <= self._max_retry_wait:
                waited = True
                continue
            raise Throttled(
                f"Nexudus {method} {path}: throttled (HTTP {status}), "
                f"retry after {retry_after:.1f}s",
                retry_after=retry_after,
                status_code=status,
            )

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: JsonParams | None,
        json: Any,
        data: Mapping[str, str] | None,
    ) -> httpx.Response:
        what = f"Nexudus {method} {path}"
        try:
            return await self._request(
                operation,
                method,
                self._base_url + path,
                deadline=self._timeout,
                headers={"Accept": "application/json", **headers},
                params=params,
                json=json,
                data=data,
            )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TimedOut(f"{what}: no answer within {self._timeout:g}s") from exc
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise ConnectionFailed(f"{what}: {detail:.200}") from exc


def _page_of(body: Any) -> tuple[list[Any], bool]:
    if not isinstance(body, Mapping) or not isinstance(body.get("Records"), list):
        raise UnexpectedResponse(
            f"Nexudus GET {CALENDARS}: answer is not a list envelope"
        )
    rows: list[Any] = body["Records"]
    more = body.get("HasNextPage")
    if isinstance(more, bool):
        return rows, more
    current, total = body.get("CurrentPage"), body.get("TotalPages")
    if isinstance(current, int) and isinstance(total, int):
        return rows, current < total
    return rows, False


def _confirms(record: CalendarRecord, wanted: Mapping[str, str | int]) -> bool:
    actual: dict[str, str | int | None] = {
        "Resource": record.resource_id,
        "Coworker": record.coworker_id,
        "Name": record.name,
        "SubscriptionId": record.subscription_id,
        "CalendarId": record.calendar_id,
    }
    return all(actual[key] == value for key, value in wanted.items())
