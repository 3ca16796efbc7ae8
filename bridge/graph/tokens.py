"""App-only access tokens for Graph from msal, without blocking the event loop.

One `ConfidentialClientApplication` per `GraphTokens`, built on first use (building
costs an OpenID discovery request) and kept, so msal's in-memory cache serves
tokens until they near expiry. msal is synchronous: every call into it runs in a
worker thread, one at a time. Its HTTP goes through a sync httpx client with the
same trust (`SSL_CERT_FILE`), proxies (`HTTPS_PROXY`) and timeout as every other
upstream call.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import anyio.to_thread
import httpx

from bridge.graph._errors import (
    GraphError,
    Throttled,
    TokenError,
    TransportFailure,
    Unavailable,
)
from bridge.upstream import count_call, retry_after_seconds, tls_verify

logger = logging.getLogger(__name__)

DEFAULT_AUTHORITY_URL = "https://login.microsoftonline.com"

# Hosts msal knows as Microsoft's; for any other, msal must not ask
# login.microsoftonline.com whether the authority is genuine (instance discovery).
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login-us.microsoftonline.com",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
    }
)

_AADSTS = re.compile(r"AADSTS(\d+)")
# How long msal replays a 429 or 5xx without Retry-After (confidential clients).
_MSAL_HOLD_SECONDS = 5.0


class TokenSource(Protocol):
    """What the Graph client needs from a token provider."""

    async def token(self) -> str: ...

    def invalidate(self) -> None:
        """Forget the cached token: Graph refused it."""


def scope_for(api_url: str) -> str:
    """The app-only scope for a Graph base URL: its origin plus `/.default`."""
    parts = urlsplit(api_url)
    return f"{parts.scheme}://{parts.netloc}/.default"


class _MsalHttp:
    """The requests-like client msal calls: `get`/`post` returning objects with
    `status_code`, `text`, `headers` and `raise_for_status()` (httpx responses
    have all four). Remembers the last failed answer, whose body msal drops
    when discovery fails."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self.last_failure: httpx.Response | None = None

    def get(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return self._send("GET", url, params, headers, None, kwargs)

    def post(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | str | bytes | None = None,
        headers: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return self._send("POST", url, params, headers, data, kwargs)

    def close(self) -> None:
        self._client.close()

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str | None] | None,
        data: Mapping[str, str] | str | bytes | None,
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        clean = {k: v for k, v in (headers or {}).items() if v is not None}
        extra: dict[str, Any] = {}
        if kwargs.get("timeout") is not None:
            extra["timeout"] = kwargs["timeout"]
        if isinstance(data, str | bytes):
            extra["content"] = data
        elif data is not None:
            extra["data"] = dict(data)
        started = time.perf_counter()
        answer: int | str = "error"
        try:
            response = self._client.request(
                method, url, params=params, headers=clean, **extra
            )
            answer = response.status_code
        except httpx.TimeoutException:
            answer = "timeout"
            raise
        finally:
            # msal reads the OpenID configuration (GET) and asks for tokens (POST).
            operation = "discovery" if method == "GET" else "token"
            count_call(
                "identity",
                operation,
                answer,
                time.perf_counter() - started,
                throttled=answer == 429,
            )
        logger.debug(
            "identity authority %s %s -> %s", method, url, response.status_code
        )
        if response.status_code >= 400:
            self.last_failure = response
        return response


class GraphTokens:
    """App-only tokens for one tenant and application (client credentials)."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        authority_url: str = DEFAULT_AUTHORITY_URL,
        scope: str = "https://graph.microsoft.com/.default",
        *,
        timeout: float = 10.0,
    ) -> None:
        self._authority = f"{authority_url.rstrip('/')}/{tenant_id}"
        self._host = urlsplit(authority_url).hostname or ""
        self._client_id = client_id
        self._secret = client_secret
        self._scope = scope
        self._timeout = timeout
        self._lock = threading.Lock()
        self._app: Any = None
        self._http: _MsalHttp | None = None
        self._stale = False
        self._closed = False
        self._held_until = 0.0

    def __repr__(self) -> str:
        return (
            f"GraphTokens(authority={self._authority!r}, client_id={self._client_id!r})"
        )

    @property
    def microsoft_authority(self) -> bool:
        return self._host.lower() in MICROSOFT_AUTHORITY_HOSTS

    async def token(self) -> str:
        """An access token for the scope; raises a `GraphError` when there is none."""
        return await anyio.to_thread.run_sync(self._token_in_thread)

    def invalidate(self) -> None:
        # Only a flag: taking the lock here could block the event loop while a
        # token request is in flight. The next token() drops msal's cached one.
        self._stale = True

    def close(self) -> None:
        self._closed = True
        if self._http is not None:
            self._http.close()

    def _token_in_thread(self) -> str:
        with self._lock:
            if self._closed:
                raise RuntimeError("GraphTokens is closed")
            if (left := self._held_until - time.monotonic()) > 0:
                raise Throttled(
                    f"the identity authority asked to wait; {left:.0f}s left",
                    retry_after=left,
                )
            if self._http is None:
                self._http = _MsalHttp(
                    httpx.Client(verify=tls_verify(), timeout=self._timeout)
                )
            self._http.last_failure = None
            try:
                app = self._app or self._build(self._http)
                self._app = app
                if self._stale:
                    self._stale = False
                    app.remove_tokens_for_client()
                result = app.acquire_token_for_client(scopes=[self._scope])
            except (httpx.HTTPError, ValueError) as error:
                raise self._failure(error, self._http.last_failure) from None
            except Exception as error:
                # msal's own error for a 5xx, fresh or replayed from its cache.
                if not isinstance(error, _msal_service_error()):
                    raise
                raise self._failure(error, self._http.last_failure) from None
        if not isinstance(result, dict):
            raise Unavailable("msal returned no token response")
        return self._access_token(result, self._http.last_failure)

    def _build(self, http: _MsalHttp) -> Any:
        import msal  # heavy, and needed once per process at most

        microsoft = self.microsoft_authority
        logger.info(
            "building the msal client for %s (instance discovery %s)",
            self._authority,
            "on" if microsoft else "off",
        )
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=self._secret,
            authority=self._authority,
            http_client=http,
            validate_authority=microsoft,
            instance_discovery=None if microsoft else False,
        )

    def _failure(self, error: Exception, answer: httpx.Response | None) -> GraphError:
        where = f"the identity authority at {self._host}"
        if isinstance(error, httpx.TimeoutException):
            return TransportFailure(f"{where} did not answer within {self._timeout}s")
        if isinstance(error, httpx.TransportError):
            hint = " (is SSL_CERT_FILE right?)" if "CERTIFICATE" in str(error) else ""
            return TransportFailure(f"could not reach {where}: {error}{hint}")
        if answer is not None and answer.status_code >= 500:
            self._hold_off(answer)
            return Unavailable(
                f"{where} answered {answer.status_code}; retry later",
                status_code=answer.status_code,
            )
        if answer is not None:
            return self._refusal(_json_object(answer), answer)
        if isinstance(error, _msal_service_error()):
            return Unavailable(f"{where} failed: {error}; retry later")
        # msal's own complaint: a malformed authority URL, a non-JSON answer.
        return TokenError(None, self._redact(str(error)))

    def _hold_off(self, answer: httpx.Response) -> float:
        """Stop asking for a while after a 429 or 5xx, as msal itself does.

        msal replays such an answer from its cache for Retry-After seconds (5 by
        default) without saying it did; waiting a second longer than it means we
        never mistake a replayed 429 for a refusal of our credentials.
        """
        seconds = retry_after_seconds(
            answer.headers.get("retry-after"), default=_MSAL_HOLD_SECONDS
        )
        self._held_until = time.monotonic() + seconds + 1
        return seconds

    def _access_token(
        self, result: dict[str, Any], answer: httpx.Response | None
    ) -> str:
        token = result.get("access_token")
        if isinstance(token, str) and token:
            return token
        raise self._refusal(result, answer)

    def _refusal(
        self, body: dict[str, Any], answer: httpx.Response | None
    ) -> GraphError:
        status = answer.status_code if answer is not None else None
        if answer is not None and status == 429:
            seconds = self._hold_off(answer)
            return Throttled(
                f"the identity authority throttled token requests; retry after "
                f"{seconds:.0f}s",
                retry_after=seconds,
                status_code=status,
            )
        if body.get("error") == "temporarily_unavailable":
            return Unavailable(
                "the identity authority is temporarily unavailable", status_code=status
            )
        description = str(body.get("error_description") or body.get("error") or "")
        codes = body.get("error_codes")
        code: int | None = None
        if isinstance(codes, list) and codes and isinstance(codes[0], int):
            code = codes[0]
        elif found := _AADSTS.search(description):
            code = int(found.group(1))
        first_line = description.splitlines()[0] if description else "no access token"
        first_line = _AADSTS.sub("", first_line, count=1).lstrip(": ")
        correlation = body.get("correlation_id")
        return TokenError(
            code,
            self._redact(first_line),
            correlation_id=correlation if isinstance(correlation, str) else None,
            status_code=status,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[secret]") if self._secret else text


def _json_object(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(answer.text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {
        "error_description": f"{answer.request.url} answered {answer.status_code} "
        "with something other than an identity platform's JSON"
    }


def _msal_service_error() -> type[Exception]:
    from msal.exceptions import MsalServiceError

    return cast(type[Exception], MsalServiceError)
