"""Turning Nexudus answers into values or errors of the tree in `_errors`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from ._errors import (
    NexudusError,
    NotFound,
    Unavailable,
    UnexpectedResponse,
    ValidationFailed,
)

__all__ = ["check_envelope", "error_for_status", "excerpt", "read_json"]

EXCERPT_LENGTH = 120
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)


def excerpt(response: httpx.Response, limit: int = EXCERPT_LENGTH) -> str:
    """The start of a body as one short line, with HTML tags removed."""
    text = " ".join(_TAG.sub(" ", response.text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_json(response: httpx.Response, what: str, *, allow_empty: bool = False) -> Any:
    if allow_empty and not response.content.strip():
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        pass
    content_type = response.headers.get("content-type", "no content type")
    short = excerpt(response)
    raise UnexpectedResponse(
        f"{what}: HTTP {response.status_code} answer is not JSON "
        f"({content_type}): {short or '(empty body)'}",
        excerpt=short,
        status_code=response.status_code,
    )


def _field_errors(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    errors = body.get("Errors")
    if not isinstance(errors, list):
        return []
    pairs: list[tuple[str, str]] = []
    for item in errors:
        if isinstance(item, Mapping):
            prop = item.get("PropertyName")
            pairs.append((str(prop or ""), str(item.get("Message") or "")))
    return pairs


def validation_failed(body: object, what: str, status: int) -> ValidationFailed:
    fields: list[tuple[str, str]] = []
    message = ""
    if isinstance(body, Mapping):
        fields = _field_errors(body)
        message = str(body.get("Message") or "")
    if not message and fields:
        message = "; ".join(f"{prop}: {text}" for prop, text in fields)
    return ValidationFailed(
        f"{what} rejected (HTTP {status}): {message or 'no reason given'}",
        field_errors=fields,
        status_code=status,
    )


def check_envelope(body: object, what: str, status: int) -> None:
    """Raise when a 2xx answer still says WasSuccessful: false."""
    if isinstance(body, Mapping) and body.get("WasSuccessful") is False:
        raise validation_failed(body, what, status)


def error_for_status(response: httpx.Response, what: str) -> NexudusError:
    """The error for a failed status other than 401, 403, 409 and 429."""
    status = response.status_code
    if status == 404:
        return NotFound(f"{what}: not found (HTTP 404)", status_code=status)
    if status >= 500:
        short = excerpt(response)
        return Unavailable(
            f"{what}: Nexudus unavailable (HTTP {status}): {short or '(empty body)'}",
            status_code=status,
        )
    if status == 400:
        return validation_failed(read_json(response, what), what, status)
    short = excerpt(response)
    return UnexpectedResponse(
        f"{what}: unexpected HTTP {status}: {short or '(empty body)'}",
        excerpt=short,
        status_code=status,
    )
