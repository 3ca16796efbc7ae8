"""What can go wrong talking to Microsoft Graph and its identity authority.

A caller decides by class, not by status code: `RetryLater` means the same call may
succeed later (wait at least `Throttled.retry_after`); `GiveUp` means it will fail
the same way until something changes (a recreate, an operator's fix). Messages say
what to fix and never contain the client secret, an access token or a clientState.

    GraphError
    ├── RetryLater
    │   ├── Throttled (retry_after)        429, or 503 with Retry-After
    │   ├── Unavailable                    5xx; an answer that is not what Graph sends
    │   └── TransportFailure               connect/read failure, timeout
    └── GiveUp
        ├── NotFound                       404: the subscription is gone, recreate it
        ├── Conflict                       409: same resource + changeType exists
        ├── BadRequest                     400 and other refusals of the request
        │   ├── ExpirationTooFar (max_minutes)
        │   └── ValidationFailed           the notification URL failed the handshake
        ├── Unauthorized                   401: Graph refused the access token
        ├── Forbidden                      403: consent missing or revoked
        │   └── SubscriptionLimitReached   403: 1,000 subscriptions per mailbox
        └── TokenError (aadsts_code, description)
                                           the authority refused to issue a token
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Conflict",
    "ExpirationTooFar",
    "Forbidden",
    "GiveUp",
    "GraphError",
    "NotFound",
    "RetryLater",
    "SubscriptionLimitReached",
    "Throttled",
    "TokenError",
    "TransportFailure",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]


class GraphError(Exception):
    """Base class. `status_code`, `code` (Graph's error code) and `request_id`
    are set when Graph answered; they help a support ticket, not a decision."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id


class RetryLater(GraphError):
    """The same call may succeed later."""


class Throttled(RetryLater):
    """Graph asked us to slow down; no request goes out for `retry_after` seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, code=code, request_id=request_id
        )
        self.retry_after = retry_after


class Unavailable(RetryLater):
    """Graph or the authority failed on its side (5xx) or answered nonsense."""


class TransportFailure(RetryLater):
    """No answer: the connection failed or timed out."""


class GiveUp(GraphError):
    """Retrying the same call will not help until something changes."""


class NotFound(GiveUp):
    """The subscription (or calendar, or mailbox) does not exist."""


class Conflict(GiveUp):
    """A subscription for the same resource and changeType already exists."""


class BadRequest(GiveUp):
    """Graph refused the request as given."""


class ExpirationTooFar(BadRequest):
    """The expiry asked for is beyond what Graph allows for this resource."""

    def __init__(
        self,
        message: str,
        *,
        max_minutes: int | None,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, code=code, request_id=request_id
        )
        self.max_minutes = max_minutes


class ValidationFailed(BadRequest):
    """Graph could not validate notificationUrl or lifecycleNotificationUrl."""


class Unauthorized(GiveUp):
    """Graph refused our access token even after a fresh one was fetched."""


class Forbidden(GiveUp):
    """Graph refused access: consent for Calendars.Read missing or revoked."""


class SubscriptionLimitReached(Forbidden):
    """The mailbox has reached its 1,000 active subscriptions (all apps together)."""


_FIXES: dict[int, str] = {
    7000215: "check GRAPH_CLIENT_SECRET: use the secret's value, not its id",
    7000218: "set GRAPH_CLIENT_SECRET: the request carried no client secret",
    7000222: "GRAPH_CLIENT_SECRET has expired: create a new secret and set it",
    90002: "check GRAPH_TENANT_ID: no such tenant (or it is in another cloud)",
    900023: "check GRAPH_TENANT_ID: it is not a valid tenant id or domain",
    90023: "check GRAPH_TENANT_ID and GRAPH_AUTHORITY_URL",
    700016: "check GRAPH_CLIENT_ID: no such application in this tenant "
    "(or it was never consented to here)",
    7000229: "grant admin consent in this tenant: the application has no service "
    "principal there",
    65001: "grant admin consent for the application permission Calendars.Read",
    500011: "check GRAPH_API_URL: the authority does not know that resource",
    70011: "check GRAPH_API_URL: the token scope is not valid",
    7000112: "the application is disabled in the tenant: enable it",
    53003: "a Conditional Access policy blocks the application: ask the tenant admin",
}


_GENERIC_FIX = (
    "check GRAPH_TENANT_ID, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET and "
    "GRAPH_AUTHORITY_URL"
)


class TokenError(GiveUp):
    """The identity authority refused to issue a token.

    `aadsts_code` is Entra's AADSTS number (7000215 for a wrong secret) when known;
    `description` is the authority's own first line, kept for the operator.
    """

    def __init__(
        self,
        aadsts_code: int | None,
        description: str,
        *,
        correlation_id: str | None = None,
        status_code: int | None = None,
    ) -> None:
        fix = _FIXES.get(aadsts_code or 0, _GENERIC_FIX)
        label = f"AADSTS{aadsts_code}" if aadsts_code else "no token"
        super().__init__(
            f"Graph sign-in failed ({label}): {fix}. The authority said: {description}",
            status_code=status_code,
            code=label,
            request_id=correlation_id,
        )
        self.aadsts_code = aadsts_code
        self.description = description
        self.correlation_id = correlation_id
