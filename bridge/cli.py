"""The `bridge` command. Thin: parse, load settings, call the service, report.

A user mistake (a bad flag, invalid configuration, an outdated schema) is one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from bridge import settings as settings_module
from bridge.settings import Settings


class UserError(Exception):
    """Something the operator can fix; the message says what."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from bridge.app import create_app
    from bridge.store import db, migrate

    engine = db.create(settings.database_url)
    try:
        if engine.dialect.name == "sqlite":
            migrate.upgrade(engine)
        elif not migrate.is_up_to_date(engine):
            raise UserError(
                "the database schema is not up to date: run `bridge migrate`"
            )
        uvicorn.run(
            create_app(settings, engine),
            host=args.host,
            port=args.port if args.port is not None else settings.port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=20,
        )
    finally:
        engine.dispose()


def migrate_command(settings: Settings, _args: argparse.Namespace) -> None:
    from bridge.store import db, migrate

    engine = db.create(settings.database_url)
    try:
        before = migrate.current(engine)
        migrate.upgrade(engine)
        after = migrate.current(engine)
    finally:
        engine.dispose()
    if before == after:
        print(f"database schema is up to date (revision {after})")  # noqa: T201
    else:
        print(f"database schema upgraded: {before or 'empty'} -> {after}")  # noqa: T201


Command = Callable[[Settings, argparse.Namespace], None]


def parser() -> argparse.ArgumentParser:
    root = _Parser(
        prog="bridge", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "serve", help="run the web app (and, by default, the worker)"
    )
    run.add_argument("--host", default="0.0.0.0", help="interface (default 0.0.0.0)")  # noqa: S104
    run.add_argument("--port", type=int, help="port (default $PORT, else 8000)")
    run.add_argument(
        "--no-worker",
        action="store_true",
        help="web only; run `bridge worker` separately",
    )
    run.set_defaults(handler=serve)

    upgrade = commands.add_parser(
        "migrate", help="bring the database schema up to date"
    )
    upgrade.set_defaults(handler=migrate_command)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Command = args.handler
    try:
        settings = settings_module.load()
        from bridge import logs

        logs.configure(settings.log_level, settings.log_format)
        handler(settings, args)
    except (UserError, settings_module.ConfigError) as problem:
        print(f"bridge: {problem}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
