"""Graph's notification collection: strict models for what arrives at our URLs.

Strict where a wrong type means the body is not from Graph (ids and secrets must be
strings, timestamps must be ISO 8601 strings with an offset), tolerant where Graph may
grow (extra fields, new `changeType` and `lifecycleEvent` values, a missing `id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import from_json, to_json

CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = frozenset(
    {"reauthorizationRequired", "subscriptionRemoved", "missed"}
)

_MAX_ERRORS_SHOWN = 5


def _iso_string(value: object) -> object:
    # Lax pydantic would take a number as a Unix time; Graph only sends ISO strings.
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string with a UTC offset")
    return value


def _in_utc(value: datetime) -> datetime:
    # Stored in UTC: an offset may carry a date at the calendar's edge past it.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside years 1 to 9999 in UTC") from None


def _no_nul(value: str) -> str:
    # No database text column takes U+0000 (PostgreSQL refuses it outright).
    if "\x00" in value:
        raise ValueError("must not contain U+0000")
    return value


Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_iso_string), AfterValidator(_in_utc)
]
# Lengths match the inbox's columns (Graph's ids are GUIDs, its values short). They
# sit in the string schema itself, so pydantic checks them in Rust: given to `Field`
# on a type that ends in a Python validator, they were checked in Python as well.
Text = Annotated[str, StringConstraints(strict=True), AfterValidator(_no_nul)]
Id = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=64),
    AfterValidator(_no_nul),
]
Short = Annotated[
    str, StringConstraints(strict=True, max_length=64), AfterValidator(_no_nul)
]
Etag = Annotated[
    str, StringConstraints(strict=True, max_length=255), AfterValidator(_no_nul)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ResourceData(_Model):
    id: Text | None = None
    etag: Etag | None = Field(None, alias="@odata.etag")


class Notification(_Model):
    """One item of a collection: a change notification or a lifecycle notification."""

    subscription_id: Id = Field(alias="subscriptionId")
    subscription_expires_at: Timestamp | None = Field(
        None, alias="subscriptionExpirationDateTime"
    )
    change_type: Short | None = Field(None, alias="changeType")
    lifecycle_event: Short | None = Field(None, alias="lifecycleEvent")
    resource: Text | None = None
    resource_data: ResourceData | None = Field(None, alias="resourceData")
    client_state: Text | None = Field(None, alias="clientState")
    tenant_id: Short | None = Field(None, alias="tenantId")

    @model_validator(mode="after")
    def _has_a_kind(self) -> Notification:
        if self.change_type is None and self.lifecycle_event is None:
            raise ValueError("has neither changeType nor lifecycleEvent")
        return self

    @property
    def is_lifecycle(self) -> bool:
        # Graph never sends both; if it did, the lifecycle meaning is the stronger one.
        return self.lifecycle_event is not None

    @property
    def resource_id(self) -> str | None:
        """The changed item's id: the same whichever path form `resource` takes."""
        if self.resource_data is not None and self.resource_data.id is not None:
            return self.resource_data.id
        return self.resource

    @property
    def etag(self) -> str | None:
        return self.resource_data.etag if self.resource_data is not None else None


class Collection(_Model):
    value: list[Notification]


class NotACollection(ValueError):
    """The body is not a Graph notification collection; the message says why."""


@dataclass(frozen=True, slots=True)
class Received:
    """A parsed item with its exact JSON text, kept for the inbox and for replay."""

    notification: Notification
    raw: str


def parse(body: bytes) -> list[Received]:
    """Parse a POSTed body, or raise NotACollection with a short, secret-free reason."""
    # pydantic-core's JSON reader and writer: the same results as the json module's
    # here, at a third of the cost on the ingest hot path (docs/benchmarks.md).
    try:
        document = from_json(body, cache_strings="keys")
    except ValueError as error:  # also invalid UTF-8
        if "recursion limit" in str(error):
            raise NotACollection("body is nested too deeply") from None
        raise NotACollection("body is not valid JSON") from None
    if not isinstance(document, dict):
        raise NotACollection("body must be a JSON object with a 'value' list")
    try:
        collection = Collection.model_validate(document)
    except ValidationError as error:
        raise NotACollection(_describe(error)) from None
    except RecursionError:
        raise NotACollection("body is nested too deeply") from None
    items: list[Any] = document["value"]
    return [
        Received(notification, to_json(item).decode())
        for notification, item in zip(collection.value, items, strict=True)
    ]


def _describe(error: ValidationError) -> str:
    # Inputs are left out on purpose: they may carry a clientState.
    parts = []
    for detail in error.errors(include_url=False, include_input=False)[
        :_MAX_ERRORS_SHOWN
    ]:
        where = ".".join(str(part) for part in detail["loc"]) or "body"
        parts.append(f"{where}: {detail['msg']}")
    more = error.error_count() - _MAX_ERRORS_SHOWN
    if more > 0:
        parts.append(f"and {more} more")
    return "not a notification collection: " + "; ".join(parts)
