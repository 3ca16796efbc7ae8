"""The Graph calls that own a subscription's life, and the calendar look-ups.

`GraphClient` knows nothing of the database or the settings: it takes a base URL
and a token source. Each call either returns what Graph holds or raises one of
the errors in `bridge.graph._errors` (see the tree there). Two repairs happen
inside, each at most once per call, because every caller would otherwise
repeat them: a 409 on create replaces the existing subscription, and a 400
about the expiry retries with the longest lifetime Graph accepts.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from bridge.graph._errors import (
    Conflict,
    ExpirationTooFar,
    GraphError,
    NotFound,
    Throttled,
    TransportFailure,
    Unavailable,
)
from bridge.graph._limits import MAILBOX_CONCURRENCY, Limits
from bridge.graph._models import (
    Calendar,
    Subscription,
    format_datetime,
    mailbox_of,
)
from bridge.graph._responses import error_for
from bridge.graph.tokens import TokenSource
from bridge.upstream import UpstreamClient, retry_after_seconds

__all__ = [
    "CHANGE_TYPES",
    "Calendar",
    "GraphClient",
    "Subscription",
    "new_client_state",
]

logger = logging.getLogger(__name__)

CHANGE_TYPES = "created,updated,deleted"

# Outlook's enforced maximum lifetime, whatever the docs say (see docs/graph.md).
OUTLOOK_MAX_MINUTES = 4230
# Asked below the maximum by this much (at most a tenth of it) so that clock skew
# between us and Graph cannot push the retried expiry over: 4230 -> 4200.
EXPIRY_MARGIN_MINUTES = 30
_MAX_PAGES = 1000


def new_client_state() -> str:
    """A fresh clientState: 64 URL-safe characters from `secrets` (Graph: ≤ 128)."""
    return secrets.token_urlsafe(48)


class GraphClient(UpstreamClient):
    """Subscriptions and calendars, against one Graph base URL."""

    upstream = "graph"

    def __init__(
        self,
        api_url: str,
        tokens: TokenSource,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        per_mailbox: int = MAILBOX_CONCURRENCY,
    ) -> None:
        self._api = api_url.rstrip("/")
        self._origin = _origin(self._api)
        self._tokens = tokens
        # The create call waits for Graph's handshake with us (up to 10 s per
        # URL), so the default timeout is well above that.
        super().__init__(http, timeout)
        self._limits = Limits(per_mailbox)
        # Mailbox of each subscription seen, so renew and delete (which name only
        # the subscription) count against the right mailbox's concurrency.
        self._mailboxes: dict[str, str] = {}

    async def create_subscription(
        self,
        resource: str,
        notification_url: str,
        lifecycle_url: str | None,
        expires_at: datetime,
        client_state: str,
        *,
        change_type: str = CHANGE_TYPES,
    ) -> Subscription:
        """Create a subscription; Graph validates both URLs before it answers.

        On 409 the existing subscription for the same resource and changeType is
        found, deleted and created again (once): its clientState is unknown to us.
        """
        body: dict[str, Any] = {
            "changeType": change_type,
            "notificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": format_datetime(expires_at),
            "clientState": client_state,
            "latestSupportedTlsVersion": "v1_2",
        }
        if lifecycle_url is not None:
            body["lifecycleNotificationUrl"] = lifecycle_url
        action = f"create subscription for {resource}"
        replaced = shortened = False
        while True:
            try:
                answer = await self._send(
                    "POST",
                    "/subscriptions",
                    action,
                    operation="create_subscription",
                    mailbox=mailbox_of(resource),
                    json=body,
                    headers={"Prefer": 'IdType="ImmutableId"'},
                )
            except ExpirationTooFar as error:
                shorter = _shorter_expiry(error, expires_at)
                if shortened or shorter is None:
                    raise
                logger.warning("%s; asking for %s instead", error, shorter)
                body["expirationDateTime"] = format_datetime(shorter)
                shortened = True
                continue
            except Conflict:
                if replaced:
                    raise
                await self._delete_duplicate(resource, change_type, action)
                replaced = True
                continue
            return self._subscription(answer, action)

    async def renew_subscription(
        self, subscription_id: str, expires_at: datetime
    ) -> Subscription:
        """Move the expiry (this also reauthorizes); NotFound means recreate."""
        action = f"renew subscription {subscription_id}"
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        asked = expires_at
        for attempt in range(2):
            try:
                answer = await self._send(
                    "PATCH",
                    path,
                    action,
                    operation="renew_subscription",
                    mailbox=self._mailboxes.get(subscription_id),
                    json={"expirationDateTime": format_datetime(asked)},
                )
            except ExpirationTooFar as error:
                shorter = _shorter_expiry(error, asked)
                if attempt or shorter is None:
                    raise
                logger.warning("%s; asking for %s instead", error, shorter)
                asked = shorter
                continue
            return self._subscription(answer, action)
        raise AssertionError("unreachable")

    async def delete_subscription(self, subscription_id: str) -> None:
        """Delete; a subscription that is already gone counts as deleted."""
        action = f"delete subscription {subscription_id}"
        try:
            await self._send(
                "DELETE",
                f"/subscriptions/{quote(subscription_id, safe='')}",
                action,
                operation="delete_subscription",
                mailbox=self._mailboxes.get(subscription_id),
            )
        except NotFound:
            logger.info("%s: already gone", action)
        self._mailboxes.pop(subscription_id, None)

    async def list_subscriptions(self) -> list[Subscription]:
        """Every subscription this application holds, all pages."""
        found: list[Subscription] = []
        url = f"{self._api}/subscriptions"
        for _ in range(_MAX_PAGES):
            answer = await self._send(
                "GET", url, "list subscriptions", operation="list_subscriptions"
            )
            page = _json(answer, "list subscriptions")
            items = page.get("value")
            if not isinstance(items, list):
                raise Unavailable("list subscriptions: the answer has no value list")
            for item in items:
                try:
                    subscription = Subscription.from_graph(item)
                except ValueError as error:
                    raise Unavailable(f"list subscriptions: {error}") from None
                self._remember(subscription)
                found.append(subscription)
            next_link = page.get("@odata.nextLink")
            if not isinstance(next_link, str):
                return found
            if _origin(next_link) != self._origin:
                # The bearer token must never go to another host.
                raise Unavailable(f"list subscriptions: nextLink leaves {self._origin}")
            url = next_link
        raise Unavailable(f"list subscriptions: more than {_MAX_PAGES} pages")

    async def get_default_calendar(self, user_id: str) -> Calendar:
        path = f"/users/{quote(user_id, safe='@')}/calendar"
        return await self._calendar(path, user_id, f"default calendar of {user_id}")

    async def get_calendar(self, user_id: str, calendar_id: str) -> Calendar:
        path = (
            f"/users/{quote(user_id, safe='@')}/calendars/{quote(calendar_id, safe='')}"
        )
        return await self._calendar(path, user_id, f"calendar {calendar_id}")

    async def _calendar(self, path: str, user_id: str, action: str) -> Calendar:
        answer = await self._send(
            "GET",
            path,
            f"get {action}",
            operation="get_calendar",
            mailbox=user_id.lower(),
            params={"$select": "id,name"},
        )
        try:
            return Calendar.from_graph(_json(answer, action))
        except ValueError as error:
            raise Unavailable(f"get {action}: {error}") from None

    async def _delete_duplicate(
        self, resource: str, change_type: str, action: str
    ) -> None:
        for existing in await self.list_subscriptions():
            if existing.same_target(resource, change_type):
                logger.warning(
                    "%s: replacing existing subscription %s", action, existing.id
                )
                await self.delete_subscription(existing.id)
                return
        raise Conflict(
            f"{action}: Graph reports a duplicate that this application cannot "
            "see (another application's?)",
            status_code=409,
        )

    def _subscription(self, answer: httpx.Response, action: str) -> Subscription:
        try:
            subscription = Subscription.from_graph(_json(answer, action))
        except ValueError as error:
            raise Unavailable(f"{action}: {error}") from None
        self._remember(subscription)
        return subscription

    def _remember(self, subscription: Subscription) -> None:
        if mailbox := subscription.mailbox:
            self._mailboxes[subscription.id] = mailbox

    async def _send(
        self,
        method: str,
        path_or_url: str,
        action: str,
        *,
        operation: str,
        mailbox: str | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One Graph call within the limits; a 2xx answer or a `GraphError`.

        A 401 gets one more try with a freshly fetched token: the cached one may
        have been revoked before its expiry.
        """
        url = path_or_url if "://" in path_or_url else f"{self._api}{path_or_url}"
        async with self._limits.slot(mailbox):
            for attempt in range(2):
                self._limits.check()
                token = await self._tokens.token()
                request_headers = {
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/json",
                    **(headers or {}),
                }
                try:
                    answer = await self._request(
                        operation,
                        method,
                        url,
                        json=json,
                        headers=request_headers,
                        params=params,
                    )
                except httpx.TimeoutException:
                    raise TransportFailure(
                        f"{action}: Graph did not answer in time"
                    ) from None
                except httpx.TransportError as error:
                    raise TransportFailure(f"{action}: {error!r}") from None
                logger.debug("%s %s -> %s", method, url, answer.status_code)
                if answer.is_success:
                    return answer
                if answer.status_code == 401 and attempt == 0:
                    logger.info(
                        "%s: Graph refused the token; fetching a new one", action
                    )
                    self._tokens.invalidate()
                    continue
                raise self._refusal(answer, action)
        raise AssertionError("unreachable")

    def _refusal(self, answer: httpx.Response, action: str) -> GraphError:
        error = error_for(answer, action)
        if isinstance(error, Throttled):
            self._limits.hold_off(error.retry_after)
        elif (retry_after := answer.headers.get("retry-after")) is not None:
            self._limits.hold_off(retry_after_seconds(retry_after, default=0.0))
        return error


def _shorter_expiry(error: ExpirationTooFar, asked: datetime) -> datetime | None:
    """The longest expiry Graph should accept, if it is shorter than the one asked."""
    limit = error.max_minutes or OUTLOOK_MAX_MINUTES
    margin = min(EXPIRY_MARGIN_MINUTES, limit // 10)
    shorter = datetime.now(UTC) + timedelta(minutes=limit - margin)
    return shorter if shorter < asked else None


def _json(answer: httpx.Response, action: str) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        raise Unavailable(f"{action}: Graph answered with something not JSON") from None
    if not isinstance(body, dict):
        raise Unavailable(f"{action}: Graph answered with JSON that is not an object")
    return body


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
