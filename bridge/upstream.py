"""HTTP plumbing shared by the upstream clients: Graph, its authority, Nexudus.

Every call out goes through `UpstreamClient._request` (or, for msal's synchronous
client, `count_call`), so the metrics count them all the same way: by upstream,
operation and answer, with throttling answers counted apart as well.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import ssl
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx

from bridge import metrics


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


def count_call(
    upstream: str,
    operation: str,
    answer: int | str,
    seconds: float,
    *,
    throttled: bool = False,
) -> None:
    """Count one call: `answer` is the HTTP status, or what happened instead."""
    metrics.UPSTREAM_CALLS.labels(upstream, operation, str(answer)).inc()
    metrics.UPSTREAM_SECONDS.labels(upstream, operation).observe(seconds)
    if throttled:
        metrics.UPSTREAM_THROTTLES.labels(upstream, operation).inc()


class UpstreamClient:
    """Base of the upstream clients: one httpx.AsyncClient, given or built here.

    A client passed in (tests pass one over an in-process fake) stays the caller's to
    close; one built here trusts `tls_verify()` and is closed by `aclose()`.
    """

    # The `upstream` label of this client's calls, and the statuses that mean
    # "you are over the limits" from it.
    upstream: ClassVar[str]
    throttle_statuses: ClassVar[frozenset[int]] = frozenset({429})

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

    async def _request(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One HTTP exchange, counted; `deadline` bounds it as a whole (httpx's
        timeouts bound each phase, and in-process transports ignore them)."""
        started = time.perf_counter()
        answer: int | str = "cancelled"
        try:
            async with asyncio.timeout(deadline):
                response = await self._http.request(method, url, **kwargs)
            answer = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            answer = "timeout"
            raise
        except httpx.TransportError:
            answer = "error"
            raise
        finally:
            count_call(
                self.upstream,
                operation,
                answer,
                time.perf_counter() - started,
                throttled=answer in self.throttle_statuses,
            )
        return response
