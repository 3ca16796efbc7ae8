"""Errors raised by the Nexudus client.

Callers decide what to do from the class, never from a status code:

    NexudusError
    ├── RetryLater               the call may succeed later; schedule a retry
    │   ├── Throttled            409 or 429; `retry_after` seconds to wait
    │   ├── Unavailable          5xx
    │   └── TransportFailure     no usable answer arrived
    │       ├── TimedOut         a write may still have been applied
    │       └── ConnectionFailed
    └── GiveUp                   retrying the same call will fail the same way
        ├── ValidationFailed     400, or WasSuccessful: false; `field_errors`
        ├── Unauthorized         401/403 after one fresh token, or a refused login
        ├── NotFound             404 for a record id
        └── UnexpectedResponse   a non-JSON body, an undocumented status or shape

Every `str()` is a single line meant for an operator. No message ever holds a
password, a token or an Authorization header.
"""

from __future__ import annotations

__all__ = [
    "ConnectionFailed",
    "GiveUp",
    "NexudusError",
    "NotFound",
    "RetryLater",
    "Throttled",
    "TimedOut",
    "TransportFailure",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "ValidationFailed",
]


def _one_line(text: str) -> str:
    return " ".join(text.split())


class NexudusError(Exception):
    """Base of every error raised by the Nexudus client."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(_one_line(message))
        self.status_code = status_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class RetryLater(NexudusError):
    """The call failed for a reason that is expected to pass."""


class Throttled(RetryLater):
    """Nexudus asked us to wait; the client sends nothing sooner than that."""

    def __init__(
        self, message: str, *, retry_after: float, status_code: int | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class Unavailable(RetryLater):
    """Nexudus answered with a server error."""


class TransportFailure(RetryLater):
    """The request failed below HTTP: no answer, or no complete one."""


class TimedOut(TransportFailure):
    """No answer within the timeout.

    The server may still have applied a write, so a caller retrying a create
    should first search for the record it meant to create.
    """


class ConnectionFailed(TransportFailure):
    """The connection could not be made or broke (DNS, TCP, TLS, protocol)."""


class GiveUp(NexudusError):
    """The call will fail again unless something else changes first."""


class ValidationFailed(GiveUp):
    """Nexudus rejected the data; `field_errors` holds (property, message) pairs."""

    def __init__(
        self,
        message: str,
        *,
        field_errors: list[tuple[str, str]] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.field_errors: list[tuple[str, str]] = list(field_errors or [])


class Unauthorized(GiveUp):
    """Credentials refused, or the API user lacks the role the call needs."""

    def __init__(
        self,
        message: str,
        *,
        required_role: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.required_role = required_role


class NotFound(GiveUp):
    """The record does not exist (any more)."""


class UnexpectedResponse(GiveUp):
    """An answer the client cannot interpret; `excerpt` shows its start."""

    def __init__(
        self, message: str, *, excerpt: str = "", status_code: int | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.excerpt = excerpt
