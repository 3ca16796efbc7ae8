"""Connections: `bridge connect` (and, with the operator surface, the rest)."""

from __future__ import annotations

import argparse
import asyncio

from bridge.cli.common import UserError, open_database, show
from bridge.settings import Settings


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
    engine = open_database(settings)

    async def run() -> dict[str, object]:
        upstreams = Upstreams.from_settings(settings)
        try:
            connected = await connect(
                engine,
                upstreams,
                request,
                lifetime=timedelta(minutes=settings.subscription_lifetime_minutes),
            )
        finally:
            await upstreams.aclose()
        return connected.connection.to_json()

    try:
        shown = asyncio.run(run())
    except Unconfigured as error:
        raise UserError(f"cannot connect: {error}") from None
    except (Refused, GraphError, NexudusError) as error:
        raise UserError(str(error)) from None
    finally:
        engine.dispose()
    show(shown, args.json)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
