"""The database a benchmark runs on: a fresh SQLite file, or a fresh database on a
throwaway PostgreSQL cluster that the run starts and stops (tests/postgres.py).

The benchmark cluster keeps PostgreSQL's durable defaults (fsync, synchronous_commit
and full_page_writes on), unlike the test cluster: a notification is acknowledged
only once it is on disk, and that is what the benchmarks measure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from bridge.store import db, migrate
from tests import postgres

CHOICES = ("sqlite", "postgres")
NAME = "bench"


@dataclass(frozen=True)
class Database:
    """A migrated, empty database: the URL the bridge's processes get, and an
    engine for the benchmark's own seeding and counting."""

    url: str
    engine: Engine


@contextmanager
def fresh(kind: str, workdir: Path) -> Iterator[Database]:
    """A migrated, empty database of `kind`; disposed of (and its cluster stopped)
    afterwards."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bridge.db'}"
        engine = db.create(url)
        try:
            migrate.upgrade(engine)
            yield Database(url, engine)
        finally:
            engine.dispose()
        return
    if kind != "postgres":
        raise ValueError(f"no database kind {kind!r}; one of {CHOICES}")
    with postgres.cluster(durable=True) as server:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {NAME}")
        ours = make_url(server).set(database=NAME)
        engine = db.create(
            ours.set(drivername="postgresql+psycopg").render_as_string(False)
        )
        # As a PaaS hands it out; the bridge's settings pick the driver.
        url = ours.set(drivername="postgres").render_as_string(hide_password=False)
        try:
            migrate.upgrade(engine)
            yield Database(url, engine)
        finally:
            engine.dispose()
