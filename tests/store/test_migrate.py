"""The start-up's schema check without Alembic gives Alembic's answers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from bridge.store import db, migrate


def alembic_current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_head_is_alembics_head() -> None:
    assert migrate.head() is not None
    assert migrate.head() == migrate.alembic_head()


def test_current_is_alembics_current_at_every_revision(tmp_path: Path) -> None:
    engine = db.create(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        assert migrate.current(engine) is None
        assert alembic_current(engine) is None
        assert not migrate.is_up_to_date(engine)
        command.upgrade(migrate._config(engine), "0001")
        assert migrate.current(engine) == alembic_current(engine) == "0001"
        assert not migrate.is_up_to_date(engine)
        migrate.upgrade(engine)
        assert migrate.current(engine) == alembic_current(engine) == migrate.head()
        assert migrate.is_up_to_date(engine)
    finally:
        engine.dispose()


def test_scripts_that_do_not_name_one_head_are_left_to_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.SCRIPTS, scripts)
    # A second branch from the first revision: two heads.
    (scripts / "versions" / "0002b_branch.py").write_text(
        'revision = "0002b"\ndown_revision = "0001"\n'
    )
    monkeypatch.setattr(migrate, "SCRIPTS", scripts)
    monkeypatch.setattr(migrate, "alembic_head", lambda: "alembic decides")
    assert migrate.head.__wrapped__() == "alembic decides"
