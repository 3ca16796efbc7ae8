"""The command line, through the real entry point in a separate process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bridge.store import migrate
from tests.databases import Databases
from tests.processes import run_bridge, serving


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_bridge("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "worker", "migrate", "connect"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["serve", "--bogus"], {}, "unrecognized arguments: --bogus"),
        (["connect", "--user", "u"], {}, "--resource-id"),
        (["connect", "--resource-id", "x", "--user", "u"], {}, "invalid int value"),
        (
            ["connect", "--resource-id", "7", "--user", "u"],
            {},
            "not configured: GRAPH_TENANT_ID, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET "
            "not set",
        ),
        (
            ["connect", "--resource-id", "0", "--user", "u"],
            {},
            "--resource-id: Input should be greater than 0",
        ),
        (
            ["connect", "--resource-id", "-3", "--user", "u"],
            {},
            "--resource-id: Input should be greater than 0",
        ),
        (["connect", "--resource-id", "7", "--user", ""], {}, "--user: String should"),
        (["connect", "--resource-id", "7", "--user", "a b"], {}, "--user: String"),
        (
            ["connect", "--resource-id", "7", "--user", "u", "--name", " "],
            {},
            "--name: String should match",
        ),
        (
            ["connect", "--resource-id", "7", "--user", "u", "--coworker-id", "0"],
            {},
            "--coworker-id: Input should be greater than 0",
        ),
        (["connections", "renew", "99"], {}, "no connection 99"),
        (["connections", "disconnect", "99"], {}, "no connection 99"),
        (["connections", "renew", "x"], {}, "invalid int value"),
        (["serve", "--port", "eighty"], {}, "invalid int value"),
        (["frobnicate"], {}, "invalid choice"),
        ([], {}, "required"),
        (
            ["migrate"],
            {"BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES": "x"},
            "BRIDGE_SUBSCRIPTION_LIFETIME_MINUTES",
        ),
        (["serve"], {"BRIDGE_PUBLIC_URL": "http://public.example"}, "must use https"),
    ],
)
def test_a_mistake_is_one_line_and_a_nonzero_exit(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    result = run_bridge(*args, cwd=tmp_path, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr


def test_migrate_creates_the_default_database(tmp_path: Path) -> None:
    first = run_bridge("migrate", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"upgraded: empty -> {migrate.head()}" in first.stdout
    assert (tmp_path / "var" / "bridge.db").exists()
    again = run_bridge("migrate", cwd=tmp_path)
    assert f"up to date (revision {migrate.head()})" in again.stdout


def test_serve_starts_with_no_configuration_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as (base, process):
        assert (tmp_path / "var" / "bridge.db").exists(), "serve migrates SQLite"
        token = httpx.post(f"{base}/graph/notifications?validationToken=a%2Bb+c")
        assert token.text == "a+b c"
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "ok"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=25) == 0
        assert time.monotonic() - started < 25
        assert process.stdout is not None
        assert "Application shutdown complete" in process.stdout.read()


def test_worker_waits_without_configuration_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker"],
        cwd=tmp_path,
        env={**os.environ, "BRIDGE_LOG_FORMAT": "console"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "worker started" in line:
            break
    output = "".join(lines)
    assert "waits until NEXUDUS_USERNAME, NEXUDUS_PASSWORD is set" in output
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=25) == 0
    assert time.monotonic() - started < 5
    assert "worker stopped" in process.stdout.read()
    process.stdout.close()


def test_a_new_database_is_migrated_by_the_release_phase_then_served(
    databases: Databases, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": databases.fresh(tmp_path, migrated=False)}
    # PostgreSQL: the release phase migrates, the processes only check (SQLite:
    # `bridge serve` migrates the schema itself).
    postgres = databases.backend == "postgresql"
    for command in (["serve", "--no-worker"], ["worker"]) if postgres else ():
        refused = run_bridge(*command, cwd=tmp_path, env=env)
        assert refused.returncode != 0
        assert refused.stderr.strip().splitlines() == [
            "bridge: the database schema is not up to date: run `bridge migrate`"
        ]
    released = run_bridge("migrate", cwd=tmp_path, env=env)
    assert released.returncode == 0, released.stderr
    assert f"upgraded: empty -> {migrate.head()}" in released.stdout
    with serving(tmp_path, env, "--no-worker") as (base, _process):
        ready = httpx.get(f"{base}/readyz")
        assert ready.json()["checks"]["database"] == "ok"
