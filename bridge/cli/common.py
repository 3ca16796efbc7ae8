"""What every command shares: the user-error type, the database, and output."""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bridge.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

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


def table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], as_json: bool
) -> None:
    """Many objects: a JSON list for scripts, else a table of `columns`."""
    if as_json:
        print(json.dumps(list(rows), indent=2))  # noqa: T201
        return
    if not rows:
        print("(none)")  # noqa: T201
        return
    cells = [
        [("-" if row[c] is None else str(row[c])) for c in columns] for row in rows
    ]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    for line in (list(columns), *cells):
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())  # noqa: T201


@contextmanager
def transaction(settings: Settings, *, write: bool = False) -> Iterator[Connection]:
    """One transaction on the configured database (for commands that need no more)."""
    from bridge.store import db

    engine = open_database(settings)
    try:
        with (db.writing if write else db.reading)(engine) as conn:
            yield conn
    finally:
        engine.dispose()


def show(data: Mapping[str, Any], as_json: bool) -> None:
    """One object: JSON for scripts, else aligned `key  value` lines."""
    if as_json:
        print(json.dumps(data, indent=2))  # noqa: T201
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")  # noqa: T201


def one_line(text: str, limit: int = 200) -> str:
    """`text` squashed onto one line, cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def connect_reason(error: BaseException) -> str:
    """Why a connection failed, in one line: the operating system's words
    ("Connection refused") or the TLS verdict ("TLS failed: ...") when the cause
    chain holds them, else the error's own message."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            detail = getattr(seen, "verify_message", None) or seen.reason or seen
            return one_line(f"TLS failed: {detail}")
        if isinstance(seen, socket.gaierror) and seen.strerror:
            return f"cannot resolve the host: {seen.strerror}"
        if isinstance(seen, OSError) and seen.errno is not None:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    return one_line(str(error) or type(error).__name__)


def connect_hint(reason: str) -> str:
    return " (is SSL_CERT_FILE right?)" if reason.startswith("TLS") else ""
