"""A stand-in for the Microsoft identity platform (Entra ID), as msal sees it.

It serves what msal fetches for an authority host that is not Microsoft's, with
instance discovery off: the tenant's OpenID discovery document, then the v2.0 token
endpoint with the client-credentials grant. Failures have the real bodies' shape
(`error`, `error_description` starting "AADSTS<code>:", `error_codes`, trace ids).

Consent is modelled as Entra does it for app-only tokens: a token is issued either
way, carrying the application roles the tenant granted (`roles`); without
`Calendars.Read` the fake Graph answers 403.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CALENDARS_READ = "Calendars.Read"

# code: (HTTP status, OAuth error, description). Wording follows Entra's answers.
_ERRORS: dict[int, tuple[int, str, str]] = {
    90002: (
        400,
        "invalid_tenant",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant "
        "ID and are signing into the correct cloud.",
    ),
    900023: (
        400,
        "invalid_request",
        "Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a "
        "valid external domain.",
    ),
    700016: (
        400,
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory "
        "'{tenant}'. This can happen if the application has not been installed by "
        "the administrator of the tenant or consented to by any user in the tenant.",
    ),
    7000215: (
        401,
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request "
        "is the client secret value, not the client secret ID, for a secret added to "
        "app '{client_id}'.",
    ),
    7000222: (
        401,
        "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired.",
    ),
    500011: (
        400,
        "invalid_resource",
        "The resource principal named {resource} was not found in the tenant named "
        "{tenant}.",
    ),
    65001: (
        400,
        "invalid_grant",
        "The user or administrator has not consented to use the application with ID "
        "'{client_id}'. Send an interactive authorization request for this user and "
        "resource.",
    ),
}

_TENANT_SHAPE = re.compile(r"^[0-9a-fA-F-]{36}$|^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


@dataclass(frozen=True)
class Grant:
    """What an access token issued by the fake stands for."""

    tenant_id: str
    client_id: str
    audience: str
    roles: frozenset[str]
    expires_at: float


@dataclass
class FakeAuthority:
    """One tenant with one registered application and its one secret.

    Control surface for tests: `token_delay` (seconds the token endpoint takes,
    without blocking its loop), `fail_with` (an AADSTS code from the table above
    that the token endpoint answers with instead of a token), `outage` (a status
    such as 503 or 429 for the token endpoint, with `outage_retry_after`), `roles`
    (granted to tokens issued from now on), `revoke_tokens()`. Observations:
    `token_requests`, `discovery_requests`, `issued_tokens`, `grant_for(token)`.
    """

    tenant_id: str = "5e0b2c7d-91a4-4f36-8d2e-a7c9b14f3e60"
    client_id: str = "2b6f9c1e-7d3a-4e85-9b0c-4f1a6d8e2c57"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    audience: str = "https://graph.microsoft.com"
    roles: frozenset[str] = frozenset({CALENDARS_READ})
    token_lifetime: int = 3599
    token_delay: float = 0.0
    fail_with: int | None = None
    outage: int | None = None
    outage_retry_after: str | None = None
    token_requests: int = 0
    discovery_requests: int = 0
    issued_tokens: list[str] = field(default_factory=list)
    _grants: dict[str, Grant] = field(default_factory=dict, repr=False)

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/{tenant}/v2.0/.well-known/openid-configuration",
                    self._discovery,
                    methods=["GET"],
                ),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            ]
        )

    @property
    def scope(self) -> str:
        return f"{self.audience}/.default"

    def grant_for(self, token: str) -> Grant | None:
        """The grant behind a live token; None if unknown, revoked or expired."""
        grant = self._grants.get(token)
        if grant is None or grant.expires_at <= time.time():
            return None
        return grant

    def revoke_tokens(self) -> None:
        self._grants.clear()

    async def _discovery(self, request: Request) -> Response:
        self.discovery_requests += 1
        tenant = request.path_params["tenant"]
        if failure := self._tenant_failure(tenant):
            return failure
        base = str(request.base_url).rstrip("/")
        issuer_base = f"{base}/{self.tenant_id}"
        return JSONResponse(
            {
                "issuer": f"{issuer_base}/v2.0",
                "authorization_endpoint": f"{issuer_base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{issuer_base}/oauth2/v2.0/token",
                "jwks_uri": f"{issuer_base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                ],
                "tenant_region_scope": "EU",
            }
        )

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        raw = await request.body()  # before waiting: the wait listens for a hang-up
        if self.token_delay and await _client_left(request, self.token_delay):
            return Response(status_code=499)
        if self.outage is not None:
            headers = {}
            if self.outage_retry_after is not None:
                headers["Retry-After"] = self.outage_retry_after
            return _error(
                self.outage, "temporarily_unavailable", 50196, "Outage.", headers
            )
        tenant = request.path_params["tenant"]
        if failure := self._tenant_failure(tenant):
            return failure
        # Parsed by hand: starlette's form parser needs python-multipart.
        form = dict(parse_qsl(raw.decode()))
        client_id = form.get("client_id", "")
        secret = form.get("client_secret", "") or _basic_secret(request)
        scope = form.get("scope", "")
        facts = {"tenant": tenant, "client_id": client_id, "resource": scope}
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", 70003, "Unsupported grant.")
        if self.fail_with is not None:
            return _aadsts(self.fail_with, **facts)
        if client_id != self.client_id:
            return _aadsts(700016, **facts)
        if not secrets.compare_digest(secret, self.client_secret):
            return _aadsts(7000215, **facts)
        if scope != self.scope:
            facts["resource"] = scope.removesuffix("/.default")
            return _aadsts(500011, **facts)
        token = secrets.token_urlsafe(32)
        self.issued_tokens.append(token)
        self._grants[token] = Grant(
            tenant_id=self.tenant_id,
            client_id=client_id,
            audience=self.audience,
            roles=self.roles,
            expires_at=time.time() + self.token_lifetime,
        )
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            }
        )

    def _tenant_failure(self, tenant: str) -> Response | None:
        if not _TENANT_SHAPE.match(tenant):
            return _aadsts(900023, tenant=tenant)
        if tenant.lower() != self.tenant_id.lower():
            return _aadsts(90002, tenant=tenant)
        return None


async def _client_left(request: Request, seconds: float) -> bool:
    """Wait `seconds`, or less if the client hangs up (then True)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(0.02)
    return False


def _basic_secret(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    decoded = base64.b64decode(value).decode()
    return unquote(decoded.partition(":")[2].replace("+", " "))


def _aadsts(code: int, **facts: str) -> Response:
    status, error, template = _ERRORS[code]
    return _error(status, error, code, template.format_map(_Blank(facts)))


def _error(
    status: int,
    error: str,
    code: int,
    description: str,
    headers: dict[str, str] | None = None,
) -> Response:
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return JSONResponse(
        {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {description}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        status_code=status,
        headers=headers,
    )


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""
