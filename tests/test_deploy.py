"""The deployment descriptions agree with the contract and with each other:
the Procfile's three commands, and every contract variable in app.json (Heroku)
and render.yaml (Render), with the same defaults as the code."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.cli import parser
from bridge.settings import Settings

ROOT = Path(__file__).parents[1]
# The contract's commands for each process type (docs/product.md, "Deployment").
PROCFILE = {
    "web": "bridge serve --no-worker --port $PORT",
    "worker": "bridge worker",
    "release": "bridge migrate",
}
# The contract's variables (docs/product.md, "Configuration").
CONTRACT = (
    "DATABASE_URL",
    "PORT",
    "BRIDGE_PUBLIC_URL",
    "BRIDGE_ADMIN_TOKEN",
    "BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES",
    "BRIDGE_RENEW_BEFORE_MINUTES",
    "BRIDGE_LOG_LEVEL",
    "BRIDGE_LOG_FORMAT",
    "BRIDGE_MAX_BODY_BYTES",
    "GRAPH_TENANT_ID",
    "GRAPH_CLIENT_ID",
    "GRAPH_CLIENT_SECRET",
    "GRAPH_AUTHORITY_URL",
    "GRAPH_API_URL",
    "NEXUDUS_API_URL",
    "NEXUDUS_USERNAME",
    "NEXUDUS_PASSWORD",
    "NEXUDUS_CLIENT_ID",
)
SECRETS = ("BRIDGE_ADMIN_TOKEN", "GRAPH_CLIENT_SECRET", "NEXUDUS_PASSWORD")
# Set by the platform: its port, and the database it provisions.
FROM_PLATFORM = ("PORT", "DATABASE_URL")


def defaults() -> dict[str, str]:
    """Each variable's default as the code has it, as an environment value."""
    return {
        field.alias: str(field.default)
        for field in Settings.model_fields.values()
        if field.alias and field.default is not None
    }


def test_the_contract_variables_are_the_settings() -> None:
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert set(CONTRACT) <= aliases


def test_the_procfile_runs_the_contract_commands() -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    found = dict(line.split(": ", 1) for line in lines if line.strip())
    assert found == PROCFILE
    for command in found.values():
        argv = shlex.split(command.replace("$PORT", "8000"))
        assert argv[0] == "bridge"
        parser().parse_args(argv[1:])  # exits on an unknown command or flag


def test_app_json_describes_web_worker_postgresql_and_every_variable() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert set(app["formation"]) == {"web", "worker"}
    plans = [addon["plan"] for addon in app["addons"]]
    assert any(plan.startswith("heroku-postgresql") for plan in plans)
    env: dict[str, dict[str, Any]] = app["env"]
    assert set(env) == set(CONTRACT) - set(FROM_PLATFORM)
    for name, spec in env.items():
        assert spec["description"], name
        if name in SECRETS or "value" not in spec:
            assert "value" not in spec, f"{name}: no secret in app.json"
        else:
            assert spec["value"] == defaults()[name], name


def render_env(service: dict[str, Any], groups: dict[str, Any]) -> dict[str, Any]:
    """A service's variables, its environment groups' included."""
    env: dict[str, Any] = {}
    for entry in service["envVars"]:
        if "fromGroup" in entry:
            for grouped in groups[entry["fromGroup"]]:
                env[grouped["key"]] = grouped
        else:
            env[entry["key"]] = entry
    return env


@pytest.fixture(scope="module")
def render() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "render.yaml").read_text())
    return loaded


def test_render_yaml_runs_the_procfiles_commands(render: dict[str, Any]) -> None:
    services = {service["type"]: service for service in render["services"]}
    assert set(services) == {"web", "worker"}
    assert services["web"]["startCommand"] == PROCFILE["web"]
    assert services["web"]["preDeployCommand"] == PROCFILE["release"]
    assert services["worker"]["startCommand"] == PROCFILE["worker"]
    assert services["web"]["healthCheckPath"] == "/healthz"


def test_render_yaml_gives_both_services_every_variable(
    render: dict[str, Any],
) -> None:
    databases = {database["name"] for database in render["databases"]}
    groups = {group["name"]: group["envVars"] for group in render["envVarGroups"]}
    services = {service["name"]: service for service in render["services"]}
    for service in services.values():
        env = render_env(service, groups)
        needed = set(CONTRACT) - {"PORT"}
        if service["type"] == "worker":
            needed.remove("BRIDGE_ADMIN_TOKEN")  # the admin API is the web's
        assert needed <= set(env), service["name"]
        assert env["DATABASE_URL"]["fromDatabase"]["name"] in databases
        for name, entry in env.items():
            if name in SECRETS:
                assert "value" not in entry, f"{name}: no secret in render.yaml"
            if "value" in entry and name in defaults():
                assert str(entry["value"]) == defaults()[name], name
            if "fromService" in entry:
                source = services[entry["fromService"]["name"]]
                assert entry["fromService"]["envVarKey"] in render_env(source, groups)


def test_the_build_installs_the_bridge_and_a_postgresql_driver() -> None:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    wanted = [line for line in lines if line and not line.startswith("#")]
    assert wanted == ["."]
    # Settings rewrite postgres:// to postgresql+psycopg://: the bridge's own
    # dependencies must bring the driver.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("psycopg[binary]") for dep in project["dependencies"])
    assert (ROOT / ".python-version").read_text().strip() == "3.11"
