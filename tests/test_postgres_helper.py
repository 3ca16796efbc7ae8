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
