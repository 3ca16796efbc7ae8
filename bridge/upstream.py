"""HTTP plumbing shared by the upstream clients: Graph, its authority, Nexudus."""

from __future__ import annotations

import email.utils
import math
import os
import ssl
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import httpx


def tls_verify() -> ssl.SSLContext | bool:
    """The trust to verify upstream certificates with, following `SSL_CERT_FILE`.

    httpx 0.28 trusts certifi's bundle and ignores SSL_CERT_FILE / SSL_CERT_DIR; a
    deployment behind a TLS-inspecting proxy relies on them, so every upstream (the
    identity authority included) is given the same explicitly built context.
    """
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        return True
    return ssl.create_default_context(cafile=cafile, capath=capath)


# A Retry-After of days is a misbehaving server, not advice: cap it (msal does too).
MAX_RETRY_AFTER = 3600.0


def retry_after_seconds(
    value: str | None, *, default: float, now: datetime | None = None
) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    text = (value or "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return default
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


class UpstreamClient:
    """Base of the upstream clients: one httpx.AsyncClient, given or built here.

    A client passed in (tests pass one over an in-process fake) stays the caller's to
    close; one built here trusts `tls_verify()` and is closed by `aclose()`.
    """

    def __init__(self, http: httpx.AsyncClient | None, timeout: float) -> None:
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            verify=tls_verify(), timeout=httpx.Timeout(timeout)
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
