"""The databases tests run on: SQLite files by default, PostgreSQL when
`BRIDGE_TEST_DATABASE_URL` names a server (`python -m tests.postgres` sets it).

Every test that asks gets a database of its own, migrated and empty: a copy of a
template migrated once per session (a file copy on SQLite, CREATE DATABASE ...
TEMPLATE on PostgreSQL), so each test starts as a freshly migrated service would.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol

import psycopg
from sqlalchemy.engine import make_url

from bridge.store import db, migrate
from tests.postgres import ENVIRONMENT_VARIABLE


class Databases(Protocol):
    backend: str

    def fresh(self, folder: Path, *, migrated: bool = True) -> str:
        """The URL of a new, empty database (migrated unless told otherwise)."""

    def discard(self, url: str) -> None:
        """Drop a database `fresh` made (its connections are closed first)."""

    def close(self) -> None: ...


def _migrate(url: str) -> None:
    engine = db.create(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


class SqliteDatabases:
    backend = "sqlite"

    def __init__(self, folder: Path) -> None:
        self._template = folder / "template.db"
        _migrate(f"sqlite:///{self._template}")
        self._names = itertools.count(1)

    def fresh(self, folder: Path, *, migrated: bool = True) -> str:
        number = next(self._names)
        path = folder / ("bridge.db" if number == 1 else f"bridge-{number}.db")
        while path.exists():
            path = path.with_name(f"bridge-{uuid.uuid4().hex[:8]}.db")
        if migrated:
            # The engine was disposed, so the WAL is checkpointed into the file.
            shutil.copyfile(self._template, path)
        return f"sqlite:///{path}"

    def discard(self, url: str) -> None:
        pass  # the file goes with the test's temporary folder

    def close(self) -> None:
        pass


class PostgresDatabases:
    backend = "postgresql"

    def __init__(self, server_url: str) -> None:
        self._server = make_url(server_url).set(drivername="postgresql+psycopg")
        # One session per test run: runs sharing a server do not meet.
        self._prefix = f"bridge_test_{uuid.uuid4().hex[:8]}"
        self._names = itertools.count(1)
        self._admin = psycopg.connect(server_url, autocommit=True)
        version = self._admin.info.server_version
        # 15+: copying files beats WAL-logging every page for a template this small.
        self._strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
        self._template = f"{self._prefix}_template"
        self._admin.execute(f'CREATE DATABASE "{self._template}"')
        _migrate(self._url(self._template))

    def _url(self, name: str) -> str:
        return self._server.set(database=name).render_as_string(hide_password=False)

    def fresh(self, folder: Path, *, migrated: bool = True) -> str:
        name = f"{self._prefix}_{next(self._names)}"
        template = self._template if migrated else "template0"
        self._admin.execute(
            f'CREATE DATABASE "{name}" TEMPLATE "{template}"{self._strategy}'
        )
        return self._url(name)

    def discard(self, url: str) -> None:
        name = make_url(url).database or ""
        assert name.startswith(self._prefix), url
        # FORCE: a process the test started may still hold a connection.
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self._admin.execute(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')
        self._admin.close()


def open_databases(folder: Path) -> Databases:
    server = os.environ.get(ENVIRONMENT_VARIABLE)
    if server:
        return PostgresDatabases(server)
    return SqliteDatabases(folder)
