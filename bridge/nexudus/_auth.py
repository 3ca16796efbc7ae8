"""Access tokens for the Nexudus API: password grant, refresh, rotation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from ._errors import NexudusError, RetryLater, Unauthorized, UnexpectedResponse
from ._responses import error_for_status, read_json

__all__ = ["TokenManager"]

logger = logging.getLogger(__name__)

PostForm = Callable[[Mapping[str, str]], Awaitable[httpx.Response]]

# Renew this long before the announced expiry (or a tenth of the lifetime for
# short-lived tokens), so that a token does not die between check and use.
MAX_RENEW_MARGIN = 300.0


class TokenManager:
    """Keeps one access token for the client and renews it once for everyone.

    Concurrent callers share a lock, so fifty callers without a token cause a
    single token request. A refresh rotates the refresh token; when a refresh
    is refused the manager logs in again with the password.
    """

    def __init__(
        self,
        post_form: PostForm,
        *,
        username: str,
        password: str,
        monotonic: Callable[[], float],
    ) -> None:
        self._post_form = post_form
        self._username = username
        self._password = password
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._access_token: str | None = None
        self._renew_at = 0.0
        self._refresh_token: str | None = None

    def __repr__(self) -> str:
        state = "valid" if self._usable() else "none"
        return f"<TokenManager access_token={state}>"

    async def token(self) -> str:
        """A usable access token, fetched or renewed if needed."""
        token = self._usable()
        if token is not None:
            return token
        async with self._lock:
            token = self._usable()
            if token is None:
                token = await self._renew()
            return token

    def discard(self, rejected: str) -> None:
        """Forget `rejected` (answered 401) unless a newer token replaced it."""
        if self._access_token == rejected:
            self._access_token = None

    def _usable(self) -> str | None:
        if self._access_token is not None and self._monotonic() < self._renew_at:
            return self._access_token
        return None

    async def _renew(self) -> str:
        if self._refresh_token is not None:
            try:
                return await self._grant(
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": self._refresh_token,
                    }
                )
            except RetryLater:
                raise
            except NexudusError as exc:
                logger.info("Nexudus token refresh refused (%s); logging in again", exc)
                self._refresh_token = None
        return await self._grant(
            {
                "grant_type": "password",
                "username": self._username,
                "password": self._password,
            }
        )

    async def _grant(self, form: Mapping[str, str]) -> str:
        grant = form["grant_type"]
        started = self._monotonic()
        response = await self._post_form(form)
        body = _token_answer(response, grant)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise UnexpectedResponse(
                f"Nexudus token answer ({grant}) has no access_token",
                status_code=response.status_code,
            )
        lifetime = _lifetime(body.get("expires_in"))
        self._access_token = access
        self._renew_at = started + lifetime - min(MAX_RENEW_MARGIN, lifetime / 10)
        refresh = body.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            self._refresh_token = refresh
        logger.info("Nexudus token obtained (%s), valid %.0fs", grant, lifetime)
        return access


def _lifetime(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str) and value.isdigit():
        return float(value)
    # No lifetime given: assume a short one so it is renewed early.
    return 300.0


def _token_answer(response: httpx.Response, grant: str) -> Mapping[str, Any]:
    status = response.status_code
    what = f"Nexudus token request ({grant})"
    if status in (400, 401):
        body = read_json(response, what)
        error = body.get("error") if isinstance(body, Mapping) else None
        description = (
            body.get("error_description") if isinstance(body, Mapping) else None
        )
        detail = ": ".join(str(part) for part in (error, description) if part)
        raise Unauthorized(
            f"Nexudus login refused ({detail or f'HTTP {status}'})",
            status_code=status,
        )
    if status == 404:
        # Not "no such record": the token route itself is missing.
        raise UnexpectedResponse(
            f"{what}: HTTP 404, check the Nexudus API URL", status_code=status
        )
    if status >= 300:
        raise error_for_status(response, what)
    body = read_json(response, what)
    if not isinstance(body, Mapping):
        raise UnexpectedResponse(f"{what}: answer is not an object", status_code=status)
    return body
