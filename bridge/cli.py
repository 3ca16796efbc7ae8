"""The `bridge` command. Thin: parse, load settings, call the service, report.

A user mistake (a bad flag, invalid configuration, an outdated schema) is one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import uvicorn

from bridge import settings as settings_module
from bridge.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from bridge.sync.worker import Worker

log = logging.getLogger("bridge")


class UserError(Exception):
    """Something the operator can fix; the message says what."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _Server(uvicorn.Server):
    """uvicorn, telling the embedded worker to wind down as soon as a signal comes,
    so that it finishes its actions while the connections drain (not after)."""

    def __init__(self, config: uvicorn.Config, worker: Worker | None) -> None:
        super().__init__(config)
        self._worker = worker

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._worker is not None:
            # A signal handler may not touch asyncio objects directly.
            asyncio.get_event_loop().call_soon_threadsafe(self._worker.stop)


def _open_database(settings: Settings) -> Engine:
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


def _worker(engine: Engine, settings: Settings) -> Worker:
    from bridge.sync.upstreams import Upstreams
    from bridge.sync.worker import Worker

    for capability in ("nexudus", "graph", "public_url"):
        if missing := settings.missing(capability):
            log.warning(
                "work that needs %s waits until %s is set",
                capability,
                ", ".join(missing),
            )
    return Worker(engine, settings, Upstreams.from_settings(settings))


def serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from bridge.app import create_app

    engine = _open_database(settings)
    try:
        worker = None if args.no_worker else _worker(engine, settings)
        config = uvicorn.Config(
            create_app(settings, engine, worker=worker),
            host=args.host,
            port=args.port if args.port is not None else settings.port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=20,
        )
        _Server(config, worker).run()
    finally:
        engine.dispose()


def worker_command(settings: Settings, _args: argparse.Namespace) -> None:
    engine = _open_database(settings)
    try:
        asyncio.run(_work(_worker(engine, settings)))
    finally:
        engine.dispose()


async def _work(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    await worker.run()


def connect_command(settings: Settings, args: argparse.Namespace) -> None:
    from datetime import timedelta

    from bridge.graph._errors import GraphError
    from bridge.nexudus import NexudusError
    from bridge.sync.connect import ConnectRequest, Refused, connect
    from bridge.sync.upstreams import Unconfigured, Upstreams

    request = ConnectRequest(
        resource_id=args.resource_id,
        user_id=args.user,
        calendar_id=args.calendar_id,
        name=args.name,
        coworker_id=args.coworker_id,
    )
    engine = _open_database(settings)

    async def run() -> dict[str, object]:
        upstreams = Upstreams.from_settings(settings)
        try:
            connection = await connect(
                engine,
                upstreams,
                request,
                lifetime=timedelta(minutes=settings.subscription_lifetime_minutes),
            )
        finally:
            await upstreams.aclose()
        return connection.to_json()

    try:
        shown = asyncio.run(run())
    except Unconfigured as error:
        raise UserError(f"cannot connect: {error}") from None
    except (Refused, GraphError, NexudusError) as error:
        raise UserError(str(error)) from None
    finally:
        engine.dispose()
    _show(shown, args.json)


def _show(data: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2))  # noqa: T201
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")  # noqa: T201


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

    work = commands.add_parser(
        "worker", help="run the worker alone (queue consumer and renewal scheduler)"
    )
    work.set_defaults(handler=worker_command)

    link = commands.add_parser(
        "connect",
        help="connect a calendar: Graph subscription, connection, Nexudus record",
    )
    link.add_argument("--resource-id", type=int, required=True, help="Nexudus resource")
    link.add_argument("--user", required=True, help="mailbox: user id or address")
    link.add_argument("--calendar-id", help="calendar (default: the mailbox's default)")
    link.add_argument("--name", help="record name (default: the calendar's name)")
    link.add_argument("--coworker-id", type=int, help="Nexudus coworker, when known")
    link.add_argument("--json", action="store_true", help="print JSON")
    link.set_defaults(handler=connect_command)

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
