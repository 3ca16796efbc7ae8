"""Turn Graph's error answers into the error tree in `_errors`."""

from __future__ import annotations

import re
from typing import Any

import httpx

from bridge.graph._errors import (
    BadRequest,
    Conflict,
    ExpirationTooFar,
    Forbidden,
    GiveUp,
    GraphError,
    NotFound,
    SubscriptionLimitReached,
    Throttled,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from bridge.upstream import retry_after_seconds

# Graph often answers 429 without Retry-After; its guidance is then to back off.
DEFAULT_RETRY_AFTER = 5.0

_MAX_MINUTES = re.compile(r"(\d+)\s*minutes", re.IGNORECASE)
_LIMIT_WORDS = ("maximum number", "too many subscriptions", "subscription limit")


def error_for(response: httpx.Response, action: str) -> GraphError:
    """The error for a non-2xx answer; `action` says what we were doing."""
    status = response.status_code
    code, message, request_id = _graph_error(response)
    said = f"{action}: Graph answered {status}"
    said += f" ({code}): {message}" if code or message else ""
    facts: dict[str, Any] = {
        "status_code": status,
        "code": code,
        "request_id": request_id,
    }
    lowered = message.lower()
    retry_after = response.headers.get("retry-after")

    if status == 429 or (status == 503 and retry_after is not None):
        seconds = retry_after_seconds(retry_after, default=DEFAULT_RETRY_AFTER)
        return Throttled(
            f"{said}; retry after {seconds:.0f}s", retry_after=seconds, **facts
        )
    if status >= 500:
        return Unavailable(f"{said}; retry later", **facts)
    if status == 400 and ("validation" in lowered or code == "ValidationError"):
        return ValidationFailed(
            f"{said}. Graph could not validate the notification URLs: they must "
            "be reachable from the internet over https (BRIDGE_PUBLIC_URL) and "
            "answer the handshake within 10 s",
            **facts,
        )
    if status == 400 and "expiration" in lowered:
        found = _MAX_MINUTES.search(message)
        return ExpirationTooFar(
            said, max_minutes=int(found.group(1)) if found else None, **facts
        )
    if status == 401:
        return Unauthorized(
            f"{said}. Graph refused the access token: check that GRAPH_TENANT_ID is "
            "the mailbox's tenant and that GRAPH_API_URL and GRAPH_AUTHORITY_URL "
            "belong to the same cloud",
            **facts,
        )
    if status == 403 and any(words in lowered for words in _LIMIT_WORDS):
        return SubscriptionLimitReached(
            f"{said}. The mailbox has reached Graph's 1,000 active subscriptions "
            "(all applications together): delete unused subscriptions",
            **facts,
        )
    if status == 403:
        return Forbidden(
            f"{said}. Access denied: grant (or grant again) admin consent for the "
            "application permission Calendars.Read, and check that no application "
            "access policy excludes this mailbox",
            **facts,
        )
    if status == 404:
        return NotFound(said, **facts)
    if status == 409:
        return Conflict(said, **facts)
    if 400 <= status < 500:
        return BadRequest(said, **facts)
    return GiveUp(f"{said}: not an answer Graph gives", **facts)


def _graph_error(response: httpx.Response) -> tuple[str | None, str, str | None]:
    """(code, message, request id) from `{"error": {...}}`, tolerating junk."""
    request_id = response.headers.get("request-id")
    try:
        body = response.json()
    except ValueError:
        return None, "", request_id
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, "", request_id
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    inner = error.get("innerError")
    if request_id is None and isinstance(inner, dict):
        found = inner.get("request-id")
        request_id = found if isinstance(found, str) else None
    return code, message or "", request_id
