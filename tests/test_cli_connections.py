"""`bridge connections ...` and `bridge inbox ...` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.store import db
from bridge.store.schema import inbox, utcnow
from tests.processes import run_bridge
from tests.seeds import (
    CONNECTION_KEYS,
    SUBSCRIPTION_A,
    fixture,
    seed_fixture_connections,
)


def seeded(url: str) -> dict[str, str]:
    """The database at `url` with connections A and B and one dead item for A."""
    engine = db.create(url)
    try:
        ids = seed_fixture_connections(engine)
        with db.writing(engine) as conn:
            conn.execute(
                inbox.insert().values(
                    state="dead",
                    kind="change",
                    subscription_id=SUBSCRIPTION_A,
                    connection_id=ids[SUBSCRIPTION_A],
                    received_at=utcnow(),
                    attempts=3,
                    raw=fixture("event-created.json").decode(),
                    dedupe_key="k" * 64,
                    last_error="Nexudus refused the record: Name: is not valid",
                )
            )
    finally:
        engine.dispose()
    return {"DATABASE_URL": url}


def test_connections_list_and_show(tmp_path: Path, database_url: str) -> None:
    env = seeded(database_url)
    listed = run_bridge("connections", "list", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["state"] for row in rows] == ["active", "active"]
    assert set(rows[0]) == CONNECTION_KEYS
    table = run_bridge(
        "connections", "list", "--state", "active", cwd=tmp_path, env=env
    )
    assert table.stdout.splitlines()[0].split()[:3] == ["id", "state", "resource_id"]
    assert len(table.stdout.splitlines()) == 3
    one = run_bridge("connections", "show", str(rows[1]["id"]), cwd=tmp_path, env=env)
    assert one.returncode == 0
    assert "resource_id" in one.stdout
    none = run_bridge("connections", "show", "999", cwd=tmp_path, env=env)
    assert (none.returncode, none.stderr) == (1, "bridge: no connection 999\n")


def test_inbox_list_and_retry(tmp_path: Path, database_url: str) -> None:
    env = seeded(database_url)
    dead = run_bridge(
        "inbox", "list", "--state", "dead", "--json", cwd=tmp_path, env=env
    )
    [item] = json.loads(dead.stdout)
    assert "Name: is not valid" in item["last_error"]
    retried = run_bridge(
        "inbox", "retry", str(item["id"]), "--json", cwd=tmp_path, env=env
    )
    assert retried.returncode == 0, retried.stderr
    shown = json.loads(retried.stdout)
    assert (shown["state"], shown["attempts"]) == ("pending", 0)
    again = run_bridge("inbox", "retry", str(item["id"]), cwd=tmp_path, env=env)
    assert again.returncode == 1
    assert again.stderr == f"bridge: inbox item {item['id']} is pending, not dead\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["inbox", "retry", str(2**63)], f"no inbox item {2**63}"),
        (["connections", "show", str(10**20)], f"no connection {10**20}"),
        (["connections", "renew", str(10**20)], f"no connection {10**20}"),
        (["connections", "disconnect", str(10**20)], f"no connection {10**20}"),
        (
            ["connect", "--resource-id", str(2**63), "--user", "a@contoso.test"],
            "--resource-id: Input should be less than or equal to",
        ),
    ],
)
def test_an_id_beyond_what_the_database_holds_is_one_line(
    tmp_path: Path, args: list[str], says: str
) -> None:
    result = run_bridge(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"bridge: {says}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_listing_mistakes_are_one_line(tmp_path: Path) -> None:
    for args in (
        ["connections", "list", "--state", "asleep"],
        ["inbox", "list", "--limit", "5000"],
        ["inbox", "retry", "x"],
        ["connections"],
        ["connections", "list", "--offset", "99999999999999999999"],
    ):
        result = run_bridge(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
