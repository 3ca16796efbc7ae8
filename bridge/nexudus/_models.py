"""CoworkerMsOfficeCalendar records, the fields the bridge owns, and dates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._errors import UnexpectedResponse

__all__ = [
    "CalendarFields",
    "CalendarRecord",
    "format_nexudus_datetime",
    "parse_nexudus_datetime",
]


def format_nexudus_datetime(value: datetime) -> str:
    """Render an aware datetime as Nexudus expects it: UTC, whole seconds, `Z`."""
    if value.tzinfo is None:
        raise ValueError("Nexudus dates must be timezone-aware")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="seconds") + "Z"


def parse_nexudus_datetime(text: str) -> datetime:
    """Parse a Nexudus date, with or without `Z`, an offset or fractions.

    A date without an offset is UTC: Nexudus stores these dates in UTC and
    sometimes leaves the `Z` off.
    """
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _to_second(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class CalendarFields:
    """The fields of a CoworkerMsOfficeCalendar record that the bridge owns.

    `coworker_id=None` means "unknown": the bridge then leaves CoworkerId as
    it is on update and omits it on create.
    """

    resource_id: int
    name: str
    subscription_id: str
    calendar_id: str
    subscription_expires_at: datetime
    coworker_id: int | None = None

    def __post_init__(self) -> None:
        if self.subscription_expires_at.tzinfo is None:
            raise ValueError("subscription_expires_at must be timezone-aware")

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ResourceId": self.resource_id,
            "Name": self.name,
            "SubscriptionId": self.subscription_id,
            "CalendarId": self.calendar_id,
            "SubscriptionExpireDate": format_nexudus_datetime(
                self.subscription_expires_at
            ),
        }
        if self.coworker_id is not None:
            body["CoworkerId"] = self.coworker_id
        return body


@dataclass(frozen=True)
class CalendarRecord:
    """A CoworkerMsOfficeCalendar record as Nexudus returned it.

    `raw` keeps every field, including those the bridge does not own
    (SystemId, CustomFields, ...), so that an update can send them back.
    Records from a search are partial rows: read them, never PUT them.
    """

    id: int
    raw: Mapping[str, Any] = field(repr=False, hash=False, compare=True)

    @classmethod
    def from_api(cls, data: object) -> CalendarRecord:
        if not isinstance(data, Mapping):
            raise UnexpectedResponse(
                f"Nexudus sent a calendar record that is not an object: {data!r:.80}"
            )
        record_id = _as_int(data.get("Id"))
        if record_id is None:
            raise UnexpectedResponse("Nexudus sent a calendar record without an Id")
        return cls(id=record_id, raw=dict(data))

    @property
    def resource_id(self) -> int | None:
        return _as_int(self.raw.get("ResourceId"))

    @property
    def coworker_id(self) -> int | None:
        return _as_int(self.raw.get("CoworkerId"))

    @property
    def name(self) -> str | None:
        return _as_str(self.raw.get("Name"))

    @property
    def subscription_id(self) -> str | None:
        return _as_str(self.raw.get("SubscriptionId"))

    @property
    def calendar_id(self) -> str | None:
        return _as_str(self.raw.get("CalendarId"))

    @property
    def system_id(self) -> str | None:
        return _as_str(self.raw.get("SystemId"))

    @property
    def subscription_expires_at(self) -> datetime | None:
        text = _as_str(self.raw.get("SubscriptionExpireDate"))
        if not text:
            return None
        try:
            return parse_nexudus_datetime(text)
        except ValueError:
            return None

    def matches(self, fields: CalendarFields) -> bool:
        """True when the record already holds `fields` (expiry to the second)."""
        expires = self.subscription_expires_at
        return (
            self.resource_id == fields.resource_id
            and self.name == fields.name
            and self.subscription_id == fields.subscription_id
            and self.calendar_id == fields.calendar_id
            and expires is not None
            and _to_second(expires) == _to_second(fields.subscription_expires_at)
            and (fields.coworker_id is None or self.coworker_id == fields.coworker_id)
        )

    def updated_with(self, fields: CalendarFields) -> dict[str, Any]:
        """The full PUT body: every field as read, with the bridge's fields set."""
        return {**self.raw, **fields.to_api(), "Id": self.id}
