"""The Graph objects the bridge reads back: subscriptions and calendars."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# "users/{id}/...", "/Users/{id}/..." and the OData key form "Users('{id}')/...".
_MAILBOX = re.compile(r"^/?users(?:/|\(')([^/'()]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Subscription:
    """A change-notification subscription as Graph holds it."""

    id: str
    resource: str
    change_type: str
    expires_at: datetime
    notification_url: str
    lifecycle_url: str | None
    # A secret: kept out of repr so it cannot reach a log line by accident.
    client_state: str | None = field(default=None, repr=False)

    @classmethod
    def from_graph(cls, body: Any) -> Subscription:
        """Read Graph's JSON; ValueError when it is not a subscription."""
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(
                id=_text(body, "id"),
                resource=_text(body, "resource"),
                change_type=_text(body, "changeType"),
                expires_at=parse_datetime(_text(body, "expirationDateTime")),
                notification_url=_text(body, "notificationUrl"),
                lifecycle_url=_optional_text(body, "lifecycleNotificationUrl"),
                client_state=_optional_text(body, "clientState"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a subscription: {error}") from None

    @property
    def mailbox(self) -> str | None:
        return mailbox_of(self.resource)

    def same_target(self, resource: str, change_type: str) -> bool:
        """True when Graph would call a new subscription for these a duplicate."""
        return _resource_key(self.resource) == _resource_key(resource) and (
            _change_key(self.change_type) == _change_key(change_type)
        )


@dataclass(frozen=True)
class Calendar:
    id: str
    name: str

    @classmethod
    def from_graph(cls, body: Any) -> Calendar:
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(id=_text(body, "id"), name=_text(body, "name"))
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a calendar: {error}") from None


def mailbox_of(resource_or_path: str) -> str | None:
    """The user id a Graph resource or path belongs to, lower-cased; else None."""
    match = _MAILBOX.match(resource_or_path)
    return match.group(1).lower() if match else None


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with `Z`, to the second (Graph's expirationDateTime)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("expected an aware datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: str) -> datetime:
    """Graph's timestamps (up to 7 fractional digits, any offset) as aware UTC."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _text(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def _resource_key(resource: str) -> str:
    return resource.strip("/").lower()


def _change_key(change_type: str) -> frozenset[str]:
    return frozenset(part.strip().lower() for part in change_type.split(","))
