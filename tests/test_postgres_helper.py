"""tests/postgres.py, the throwaway cluster of `make test`: when PostgreSQL cannot
start, the run fails with the reason (it never passes without PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import postgres


def leftovers() -> set[Path]:
    return set(Path("/tmp").glob("bridge-pg-*"))


def test_a_server_that_cannot_start_fails_the_run_and_leaves_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    binaries = tmp_path / "bin"
    binaries.mkdir()
    for program in postgres.PROGRAMS:
        script = binaries / program
        script.write_text("#!/bin/sh\necho 'broken on purpose'\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setattr(postgres, "find_binaries", lambda: binaries)
    before = leftovers()

    status = postgres.main(["true"])

    assert status == 1
    said = capsys.readouterr().err
    assert "PostgreSQL is not available, so the PostgreSQL run FAILS" in said
    assert leftovers() == before


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert postgres.main([]) == 2
    assert "usage: python -m tests.postgres COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("durable", [False, True])
def test_only_the_test_cluster_turns_durability_off(
    tmp_path: Path, durable: bool
) -> None:
    (tmp_path / "postgresql.conf").write_text("")

    postgres._configure(tmp_path, tmp_path, durable=durable)

    conf = (tmp_path / "postgresql.conf").read_text()
    turned_off = {
        "fsync = 'off'",
        "synchronous_commit = 'off'",
        "full_page_writes = 'off'",
    }
    assert turned_off.isdisjoint(conf.splitlines()) is durable
    assert "listen_addresses = '127.0.0.1'" in conf
