"""`bridge doctor`, through the real entry point, against the fakes over real sockets:
the fake Nexudus (http), the fake identity authority (https, a throwaway CA trusted
through SSL_CERT_FILE) and a real `bridge serve` as the public URL."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.store import db, migrate
from tests.fakes.authority import FakeAuthority
from tests.fakes.nexudus import PASSWORD, USERNAME, FakeNexudus
from tests.fakes.server import serve
from tests.fakes.tls import TestCA
from tests.processes import free_port, run_bridge, serving


@dataclass
class Upstreams:
    nexudus: FakeNexudus
    authority: FakeAuthority
    env: dict[str, str]  # a complete configuration pointing at the fakes


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture
async def upstreams(test_ca: TestCA, database_url: str) -> AsyncIterator[Upstreams]:
    nexudus, authority = FakeNexudus(), FakeAuthority()
    async with (
        serve(nexudus.app) as nexudus_url,
        serve(authority.app, tls=test_ca) as authority_url,
    ):
        yield Upstreams(
            nexudus,
            authority,
            {
                "DATABASE_URL": database_url,
                "SSL_CERT_FILE": str(test_ca.ca_file),
                "NEXUDUS_API_URL": nexudus_url,
                "NEXUDUS_USERNAME": USERNAME,
                "NEXUDUS_PASSWORD": PASSWORD,
                "GRAPH_AUTHORITY_URL": authority_url,
                "GRAPH_TENANT_ID": authority.tenant_id,
                "GRAPH_CLIENT_ID": authority.client_id,
                "GRAPH_CLIENT_SECRET": authority.client_secret,
            },
        )


async def doctor(
    cwd: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Off the event loop, which serves the fakes meanwhile."""
    return await asyncio.to_thread(run_bridge, "doctor", *args, cwd=cwd, env=env)


def checks(stdout: str) -> dict[str, tuple[str, str]]:
    """{name: (mark, detail)} from doctor's lines."""
    found = {}
    for line in stdout.splitlines():
        mark, name, detail = line.split(maxsplit=2)
        found[name] = (mark, detail)
    return found


def one_stderr_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_without_configuration_every_check_says_what_to_set(tmp_path: Path) -> None:
    result = run_bridge("doctor", cwd=tmp_path)

    assert result.returncode == 1
    assert "5 of 5 checks failed" in one_stderr_line(result.stderr)
    found = checks(result.stdout)
    assert list(found) == [
        "configuration",
        "database",
        "nexudus",
        "graph",
        "handshake",
    ]
    assert {mark for mark, _ in found.values()} == {"✗"}
    configuration = found["configuration"][1]
    for variable in (
        "NEXUDUS_USERNAME",
        "NEXUDUS_PASSWORD",
        "GRAPH_TENANT_ID",
        "GRAPH_CLIENT_ID",
        "GRAPH_CLIENT_SECRET",
        "BRIDGE_PUBLIC_URL",
    ):
        assert variable in configuration
    database = found["database"][1]
    assert str(tmp_path / "var" / "bridge.db") in database
    assert "run `bridge migrate`" in database
    assert not (tmp_path / "var").exists(), "doctor creates no database"
    assert found["nexudus"][1] == "not checked: set NEXUDUS_USERNAME, NEXUDUS_PASSWORD"
    assert found["graph"][1] == (
        "not checked: set GRAPH_TENANT_ID, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET"
    )
    assert found["handshake"][1].startswith("not checked: set BRIDGE_PUBLIC_URL")

    as_json = run_bridge("doctor", "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    shown = json.loads(as_json.stdout)
    assert shown["ok"] is False
    assert [check["name"] for check in shown["checks"]] == list(found)
    assert [check["detail"] for check in shown["checks"]] == [
        detail for _, detail in found.values()
    ]


async def test_all_good(upstreams: Upstreams, tmp_path: Path) -> None:
    database = {"DATABASE_URL": upstreams.env["DATABASE_URL"]}
    # A migrated database (on PostgreSQL `bridge serve` would refuse any other).
    with serving(tmp_path, database, "--no-worker") as (base, _process):
        env = {**upstreams.env, "BRIDGE_PUBLIC_URL": base}
        result = await doctor(tmp_path, env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # no log lines either
    found = checks(result.stdout)
    assert {name: mark for name, (mark, _) in found.items()} == {
        "configuration": "✓",
        "database": "✓",
        "nexudus": "✓",
        "graph": "✓",
        "handshake": "✓",
    }
    assert f"revision {migrate.head()}" in found["database"][1]
    assert f"as {USERNAME}" in found["nexudus"][1]
    assert "echo the validation token" in found["handshake"][1]
    assert len(upstreams.nexudus.token_calls) == 1
    assert upstreams.authority.token_requests == 1
    assert PASSWORD not in result.stdout
    assert upstreams.authority.client_secret not in result.stdout


async def test_wrong_credentials_an_old_schema_and_no_bridge(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    engine = db.create(upstreams.env["DATABASE_URL"])
    with db.writing(engine) as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    env = {
        **upstreams.env,
        "NEXUDUS_PASSWORD": "not the password",
        "GRAPH_CLIENT_SECRET": "not the secret",
        "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{free_port()}",
    }

    result = await doctor(tmp_path, env)

    assert result.returncode == 1
    summary = one_stderr_line(result.stderr)
    assert "4 of 5 checks failed (database, nexudus, graph, handshake)" in summary
    found = checks(result.stdout)
    assert found["configuration"][0] == "✓"
    mark, detail = found["database"]
    assert mark == "✗"
    assert f"at revision 0001, this version needs {migrate.head()}" in detail
    assert "run `bridge migrate`" in detail
    mark, detail = found["nexudus"]
    assert mark == "✗"
    assert "Nexudus login refused" in detail
    assert "The user name or password is incorrect." in detail
    assert "check NEXUDUS_USERNAME and NEXUDUS_PASSWORD" in detail
    mark, detail = found["graph"]
    assert mark == "✗"
    assert "AADSTS7000215" in detail
    assert "check GRAPH_CLIENT_SECRET" in detail
    mark, detail = found["handshake"]
    assert mark == "✗"
    assert "could not connect: Connection refused" in detail
    public = env["BRIDGE_PUBLIC_URL"]
    assert f"is `bridge serve` running and reachable at {public}?" in detail
    for secret in ("not the password", "not the secret"):
        assert secret not in result.stdout


async def test_a_public_url_that_is_not_the_bridge(
    upstreams: Upstreams, tmp_path: Path
) -> None:
    # Something answers there, but not the bridge: Nexudus has no /graph routes.
    env = {**upstreams.env, "BRIDGE_PUBLIC_URL": upstreams.env["NEXUDUS_API_URL"]}

    result = await doctor(tmp_path, env, "--json")

    assert result.returncode == 1
    found = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    handshake = found["handshake"]
    assert handshake["ok"] is False
    assert "/graph/notifications?validationToken=… answered 404" in handshake["detail"]
    assert "is BRIDGE_PUBLIC_URL the bridge's base URL" in handshake["detail"]
    assert found["nexudus"]["ok"] is True
    assert found["graph"]["ok"] is True
