"""Schema migrations with Alembic, driven from code (`bridge migrate`, start-up).

Every start checks the schema before it listens, so that check stays off Alembic:
importing Alembic costs a fifth of `bridge serve`'s start (docs/benchmarks.md), and
Graph gives a notification URL 10 s to answer its first validation request. The
revision a database is at is read from `alembic_version` directly, the newest one
from the migration scripts' own `revision`/`down_revision` lines (Alembic decides
when those do not name exactly one head), and Alembic itself is imported only when
there is something to upgrade. `tests/store/test_migrate.py` holds both answers to
Alembic's.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPTS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"

_REVISION = re.compile(r"""^revision\s*(?::[^=]+)?=\s*["']([^"']+)["']""", re.M)
_DOWN_REVISION = re.compile(
    r"""^down_revision\s*(?::[^=]+)?=\s*(?:["']([^"']+)["']|None)\s*$""", re.M
)


def _config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["engine"] = engine
    return config


@cache
def head() -> str | None:
    """The newest revision of the migration scripts."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (SCRIPTS / "versions").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return alembic_head()
        revisions.add(revision.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else alembic_head()


def alembic_head() -> str | None:
    """The newest revision as Alembic reads it (merges, branches and all)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        found = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608
        versions = list(found.scalars())
    if len(versions) > 1:
        raise RuntimeError(f"the database is at several revisions: {versions}")
    return versions[0] if versions else None


def is_up_to_date(engine: Engine) -> bool:
    return current(engine) == head()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it is already there."""
    if is_up_to_date(engine):
        return
    from alembic import command

    command.upgrade(_config(engine), "head")
