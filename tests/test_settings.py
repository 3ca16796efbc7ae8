from __future__ import annotations

from pathlib import Path

import pytest

from bridge.settings import ConfigError, Settings, load


def test_defaults_need_no_configuration() -> None:
    settings = load()
    assert settings.database_url == "sqlite:///var/bridge.db"
    assert settings.sqlite_path == Path("var/bridge.db")
    assert settings.port == 8000
    assert settings.subscription_lifetime_minutes == 4200
    assert settings.renew_before_minutes == 1440
    assert settings.max_body_bytes == 1_048_576
    assert settings.graph_scope == "https://graph.microsoft.com/.default"
    assert settings.nexudus_client_id == "graph-bridge"
    assert settings.notification_url is None


def test_missing_is_reported_per_capability() -> None:
    settings = Settings(GRAPH_TENANT_ID="t", NEXUDUS_PASSWORD="p")
    assert settings.missing("graph") == ["GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET"]
    assert settings.missing("nexudus") == ["NEXUDUS_USERNAME"]
    assert settings.missing("public_url") == ["BRIDGE_PUBLIC_URL"]


def test_blank_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPH_CLIENT_SECRET", "  ")
    assert "GRAPH_CLIENT_SECRET" in load().missing("graph")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
        ("postgresql://u:p@db/app", "postgresql+psycopg://u:p@db/app"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
        ("sqlite:////data/bridge.db", "sqlite:////data/bridge.db"),
    ],
)
def test_database_urls(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    assert load().database_url == expected


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BRIDGE_PUBLIC_URL=https://bridge.example.com/\n")
    settings = load()
    assert settings.notification_url == "https://bridge.example.com/graph/notifications"
    assert settings.lifecycle_url == "https://bridge.example.com/graph/lifecycle"


def test_graph_scope_follows_the_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPH_API_URL", "https://graph.microsoft.us/v1.0")
    assert load().graph_scope == "https://graph.microsoft.us/.default"


@pytest.mark.parametrize("url", ["http://localhost:8000", "http://127.0.0.1:9"])
def test_plain_http_public_url_only_for_local_testing(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", url)
    assert load().bridge_public_url == url


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES", "three days", "valid integer"),
        ("BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES", "20", "greater than or equal to 45"),
        ("PORT", "http", "valid integer"),
        ("BRIDGE_PUBLIC_URL", "http://bridge.example.com", "must use https"),
        ("BRIDGE_PUBLIC_URL", "bridge.example.com", "not an absolute http(s) URL"),
        ("GRAPH_AUTHORITY_URL", "http://localhost:9", "https only"),
        ("NEXUDUS_API_URL", "ftp://spaces.nexudus.com", "not an absolute"),
        ("DATABASE_URL", "mysql://db/x", "must be sqlite:// or postgres(ql)://"),
        ("DATABASE_URL", "bridge.db", "not a URL"),
        ("BRIDGE_LOG_FORMAT", "xml", "'json' or 'console'"),
    ],
)
def test_invalid_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load()
    message = str(caught.value)
    assert message.startswith(f"invalid configuration: {name}: ")
    assert says in message
    assert "\n" not in message


def test_secrets_are_not_shown_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPH_CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.setenv("NEXUDUS_PASSWORD", "pa55-value")
    monkeypatch.setenv("BRIDGE_ADMIN_TOKEN", "t0ken-value")
    shown = repr(load())
    for secret in ("s3cr3t-value", "pa55-value", "t0ken-value"):
        assert secret not in shown


def test_renewals_must_fall_due_after_a_renewal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES", "600")
    monkeypatch.setenv("BRIDGE_RENEW_BEFORE_MINUTES", "600")
    with pytest.raises(ConfigError) as caught:
        load()
    message = str(caught.value)
    assert "\n" not in message
    assert "BRIDGE_RENEW_BEFORE_MINUTES must be less than" in message
    monkeypatch.setenv("BRIDGE_RENEW_BEFORE_MINUTES", "599")
    assert load().renew_before_minutes == 599
