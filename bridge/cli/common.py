"""What every command shares: the user-error type, the database, and output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bridge.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

Command = Callable[[Settings, argparse.Namespace], None]


class UserError(Exception):
    """Something the operator can fix; the message says what."""


def open_database(settings: Settings) -> Engine:
    """The engine, with the schema brought up to date (SQLite) or checked (PostgreSQL,
    where the release phase migrates)."""
    from bridge.store import db, migrate

    engine = db.create(settings.database_url)
    try:
        if engine.dialect.name == "sqlite":
            migrate.upgrade(engine)
        elif not migrate.is_up_to_date(engine):
            raise UserError(
                "the database schema is not up to date: run `bridge migrate`"
            )
    except BaseException:
        engine.dispose()
        raise
    return engine


def show(data: Mapping[str, Any], as_json: bool) -> None:
    """One object: JSON for scripts, else aligned `key  value` lines."""
    if as_json:
        print(json.dumps(data, indent=2))  # noqa: T201
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")  # noqa: T201
