"""Nexudus: the async API client, its error tree, and the calendar records."""

from ._client import NexudusClient
from ._errors import (
    ConnectionFailed,
    GiveUp,
    NexudusError,
    NotFound,
    RetryLater,
    Throttled,
    TimedOut,
    TransportFailure,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
    ValidationFailed,
)
from ._models import (
    CalendarFields,
    CalendarRecord,
    format_nexudus_datetime,
    parse_nexudus_datetime,
)
from ._pacing import Clock, SystemClock

__all__ = [
    "CalendarFields",
    "CalendarRecord",
    "Clock",
    "ConnectionFailed",
    "GiveUp",
    "NexudusClient",
    "NexudusError",
    "NotFound",
    "RetryLater",
    "SystemClock",
    "Throttled",
    "TimedOut",
    "TransportFailure",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "ValidationFailed",
    "format_nexudus_datetime",
    "parse_nexudus_datetime",
]
