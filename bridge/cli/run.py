"""Running the service: `bridge serve`, `bridge worker`, `bridge migrate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from bridge.cli.common import UserError, open_database
from bridge.settings import Settings
from bridge.sync.upstreams import Upstreams

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from bridge.sync.worker import Worker

log = logging.getLogger("bridge")


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


def _worker(engine: Engine, settings: Settings, upstreams: Upstreams) -> Worker:
    from bridge.sync.worker import Worker

    for capability in ("nexudus", "graph", "public_url"):
        if missing := settings.missing(capability):
            log.warning(
                "work that needs %s waits until %s is set",
                capability,
                ", ".join(missing),
            )
    return Worker(engine, settings, upstreams)


def serve(settings: Settings, args: argparse.Namespace) -> None:
    from bridge.app import create_app

    engine = open_database(settings)
    try:
        upstreams = Upstreams.from_settings(settings)
        worker = None if args.no_worker else _worker(engine, settings, upstreams)
        config = uvicorn.Config(
            create_app(settings, engine, upstreams, worker=worker),
            host=args.host,
            port=args.port if args.port is not None else settings.port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=20,
        )
        # uvicorn re-raises the signal it shut down on; exiting 0 then says the
        # shutdown was clean, as `bridge worker` does. Before uvicorn takes the
        # signal over (start-up), SIGTERM exits at once.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        _Server(config, worker).run()
    finally:
        engine.dispose()


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def worker_command(settings: Settings, _args: argparse.Namespace) -> None:
    engine = open_database(settings)
    try:
        stop_metrics = _serve_metrics(engine, settings.metrics_port)
        try:
            asyncio.run(_work(engine, settings))
        finally:
            stop_metrics()
    finally:
        engine.dispose()


def _serve_metrics(engine: Engine, port: int | None) -> Callable[[], None]:
    from bridge.web.health import start_metrics_server

    if port is None:
        return lambda: None
    try:
        return start_metrics_server(engine, port)
    except OSError as error:
        raise UserError(
            f"cannot serve metrics on BRIDGE_METRICS_PORT={port}: "
            f"{error.strerror or error}"
        ) from None


async def _work(engine: Engine, settings: Settings) -> None:
    async with Upstreams.from_settings(settings) as upstreams:
        worker = _worker(engine, settings, upstreams)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()


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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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

    upgrade = commands.add_parser(
        "migrate", help="bring the database schema up to date"
    )
    upgrade.set_defaults(handler=migrate_command)
