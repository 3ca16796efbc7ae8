"""Typed settings: the contract's environment variables, read once per process.

Missing upstream credentials never stop the process: `missing()` says, per capability,
what is still to be set, for `/readyz` and `bridge doctor`. Invalid values do stop it,
with one line naming the variable (see `load`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge import logs

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

Capability = Literal["graph", "nexudus", "public_url"]


class ConfigError(Exception):
    """A configuration value is invalid; the message is one line for the operator."""


def _https_url(value: str, *, allow_local_http: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {value!r}")
    local = parts.hostname in LOCAL_HOSTS
    if parts.scheme == "http" and not (allow_local_http and local):
        only = "plain http only for localhost" if allow_local_http else "https only"
        raise ValueError(f"must use https ({only}), got {value!r}")
    return value.rstrip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_by_name=True,
    )

    database_url: str = Field("sqlite:///var/bridge.db", alias="DATABASE_URL")
    port: int = Field(8000, alias="PORT", ge=1, le=65535)
    bridge_public_url: str | None = Field(None, alias="BRIDGE_PUBLIC_URL")
    bridge_admin_token: SecretStr | None = Field(None, alias="BRIDGE_ADMIN_TOKEN")
    subscription_lifetime_minutes: int = Field(
        4200, alias="BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES", ge=45, le=10080
    )
    renew_before_minutes: int = Field(1440, alias="BRIDGE_RENEW_BEFORE_MINUTES", ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", alias="BRIDGE_LOG_LEVEL"
    )
    log_format: Literal["json", "console"] = Field("json", alias="BRIDGE_LOG_FORMAT")
    max_body_bytes: int = Field(1_048_576, alias="BRIDGE_MAX_BODY_BYTES", ge=1024)
    # A request's whole body must arrive within this (408 beyond); Graph gives up
    # on an answer after 10 s, so a body still trickling in then is not Graph's.
    body_timeout_seconds: float = Field(
        10.0, alias="BRIDGE_BODY_TIMEOUT_SECONDS", gt=0, le=300
    )
    # The worker's tuning. The default attempts with the default backoff keep a
    # failing item alive for at least 24 hours (tests/sync/test_retry.py).
    max_attempts: int = Field(140, alias="BRIDGE_MAX_ATTEMPTS", ge=1)
    retry_base_seconds: float = Field(5.0, alias="BRIDGE_RETRY_BASE_SECONDS", gt=0)
    retry_max_seconds: float = Field(900.0, alias="BRIDGE_RETRY_MAX_SECONDS", gt=0)
    lease_seconds: float = Field(300.0, alias="BRIDGE_LEASE_SECONDS", ge=1)
    worker_concurrency: int = Field(8, alias="BRIDGE_WORKER_CONCURRENCY", ge=1, le=256)
    # `bridge worker` has no web app: with a port set it serves /metrics there.
    metrics_port: int | None = Field(None, alias="BRIDGE_METRICS_PORT", ge=1, le=65535)

    graph_tenant_id: str | None = Field(None, alias="GRAPH_TENANT_ID")
    graph_client_id: str | None = Field(None, alias="GRAPH_CLIENT_ID")
    graph_client_secret: SecretStr | None = Field(None, alias="GRAPH_CLIENT_SECRET")
    graph_authority_url: str = Field(
        "https://login.microsoftonline.com", alias="GRAPH_AUTHORITY_URL"
    )
    graph_api_url: str = Field(
        "https://graph.microsoft.com/v1.0", alias="GRAPH_API_URL"
    )

    nexudus_api_url: str = Field("https://spaces.nexudus.com", alias="NEXUDUS_API_URL")
    nexudus_username: str | None = Field(None, alias="NEXUDUS_USERNAME")
    nexudus_password: SecretStr | None = Field(None, alias="NEXUDUS_PASSWORD")
    nexudus_client_id: str = Field("graph-bridge", alias="NEXUDUS_CLIENT_ID")

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "bridge_public_url",
        "graph_tenant_id",
        "graph_client_id",
        "graph_client_secret",
        "nexudus_username",
        "nexudus_password",
        "bridge_admin_token",
        "metrics_port",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # PaaS dashboards often keep a variable with an empty value: that means unset.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError("not a URL")
        # PaaS hosts hand out postgres:// URLs; SQLAlchemy wants a dialect+driver.
        if scheme in ("postgres", "postgresql"):
            return f"postgresql+psycopg://{rest}"
        if scheme.startswith("postgresql+") or scheme == "sqlite":
            return value
        raise ValueError(f"must be sqlite:// or postgres(ql)://, got {scheme}://")

    @field_validator("bridge_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _https_url(value, allow_local_http=True)

    @field_validator("graph_authority_url")
    @classmethod
    def _authority_url(cls, value: str) -> str:
        # msal accepts nothing but https for the authority.
        return _https_url(value, allow_local_http=False)

    @field_validator("graph_api_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        return _https_url(value, allow_local_http=True)

    @field_validator("nexudus_api_url")
    @classmethod
    def _nexudus_url(cls, value: str) -> str:
        return _https_url(value, allow_local_http=True)

    @model_validator(mode="after")
    def _renewal_window(self) -> Settings:
        # Otherwise every subscription would be due again the moment it is renewed.
        if self.renew_before_minutes >= self.subscription_lifetime_minutes:
            raise ValueError(
                "BRIDGE_RENEW_BEFORE_MINUTES must be less than "
                "BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES"
            )
        return self

    @property
    def sqlite_path(self) -> Path | None:
        """The database file for a file-backed SQLite URL, else None."""
        if not self.database_url.startswith("sqlite:///"):
            return None
        path = self.database_url.removeprefix("sqlite:///").split("?")[0]
        return Path(path) if path and path != ":memory:" else None

    @property
    def graph_scope(self) -> str:
        parts = urlsplit(self.graph_api_url)
        return f"{parts.scheme}://{parts.netloc}/.default"

    @property
    def notification_url(self) -> str | None:
        if self.bridge_public_url is None:
            return None
        return f"{self.bridge_public_url}/graph/notifications"

    @property
    def lifecycle_url(self) -> str | None:
        if self.bridge_public_url is None:
            return None
        return f"{self.bridge_public_url}/graph/lifecycle"

    def secret_values(self) -> list[str]:
        """The configured secrets, which no log line may contain."""
        secrets = (
            self.graph_client_secret,
            self.nexudus_password,
            self.bridge_admin_token,
        )
        return [secret.get_secret_value() for secret in secrets if secret is not None]

    def missing(self, capability: Capability) -> list[str]:
        """The unset variables that `capability` needs, in the contract's names."""
        needed: dict[Capability, dict[str, object]] = {
            "graph": {
                "GRAPH_TENANT_ID": self.graph_tenant_id,
                "GRAPH_CLIENT_ID": self.graph_client_id,
                "GRAPH_CLIENT_SECRET": self.graph_client_secret,
            },
            "nexudus": {
                "NEXUDUS_USERNAME": self.nexudus_username,
                "NEXUDUS_PASSWORD": self.nexudus_password,
            },
            "public_url": {"BRIDGE_PUBLIC_URL": self.bridge_public_url},
        }
        return [name for name, value in needed[capability].items() if value is None]


def _one_line(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    name = ".".join(str(part) for part in first["loc"]) or "configuration"
    message = first["msg"].removeprefix("Value error, ")
    more = error.error_count() - 1
    suffix = f" (and {more} more)" if more else ""
    return f"invalid configuration: {name}: {message}{suffix}"


def load() -> Settings:
    """Read the settings, or raise ConfigError with one line naming the variable.

    The credentials read are handed to the log redactor at once, so that no line
    logged afterwards can contain them.
    """
    try:
        settings = Settings()
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None
    logs.keep_secret(*settings.secret_values())
    return settings
