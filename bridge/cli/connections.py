"""Connections and the inbox: `bridge connect`, `bridge connections ...`,
`bridge inbox ...`. The same store and service calls as the admin API."""

from __future__ import annotations

import argparse
import asyncio

from bridge.cli.common import UserError, open_database, show, table, transaction
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


CONNECTION_COLUMNS = (
    "id",
    "state",
    "resource_id",
    "user_id",
    "subscription_expires_at",
    "nexudus_record_id",
    "last_error",
)
ITEM_COLUMNS = (
    "id",
    "state",
    "kind",
    "connection_id",
    "received_at",
    "attempts",
    "next_attempt_at",
    "last_error",
)


def list_connections(settings: Settings, args: argparse.Namespace) -> None:
    from bridge.store import connections
    from bridge.store.connections import State

    state = State(args.state) if args.state else None
    with transaction(settings) as conn:
        found, _ = connections.page(conn, state, args.limit, args.offset)
    table([c.to_json() for c in found], CONNECTION_COLUMNS, args.json)


def show_connection(settings: Settings, args: argparse.Namespace) -> None:
    from bridge.store import connections

    with transaction(settings) as conn:
        found = connections.get(conn, args.id)
    if found is None:
        raise UserError(f"no connection {args.id}")
    show(found.to_json(), args.json)


def list_inbox(settings: Settings, args: argparse.Namespace) -> None:
    from bridge.store import queue
    from bridge.store.inbox import ItemState

    state = ItemState(args.state) if args.state else None
    with transaction(settings) as conn:
        found, _ = queue.entries(conn, state, args.limit, args.offset)
    table([e.to_json() for e in found], ITEM_COLUMNS, args.json)


def retry_item(settings: Settings, args: argparse.Namespace) -> None:
    from bridge.store import queue
    from bridge.store.schema import utcnow

    with transaction(settings, write=True) as conn:
        revived = queue.revive(conn, args.id, utcnow())
        found = queue.entry(conn, args.id)
    if found is None:
        raise UserError(f"no inbox item {args.id}")
    if not revived:
        raise UserError(f"inbox item {args.id} is {found.state}, not dead")
    show(found.to_json(), args.json)


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"must be from 1 to 1000, got {text!r}")
    return int(text)


def _offset(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return int(text)


def _listing(parser: argparse.ArgumentParser, states: list[str]) -> None:
    parser.add_argument("--state", choices=states, help="only items in this state")
    parser.add_argument(
        "--limit", type=_limit, default=100, metavar="N", help="at most N (1-1000)"
    )
    parser.add_argument(
        "--offset", type=_offset, default=0, metavar="N", help="skip the first N"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


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

    from bridge.store.connections import State
    from bridge.store.inbox import ItemState

    group = commands.add_parser("connections", help="list and show connections")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listed = actions.add_parser("list", help="connections, oldest first")
    _listing(listed, [s.value for s in State])
    listed.set_defaults(handler=list_connections)
    one = actions.add_parser("show", help="one connection")
    one.add_argument("id", type=int)
    one.add_argument("--json", action="store_true", help="print JSON")
    one.set_defaults(handler=show_connection)

    inbox = commands.add_parser("inbox", help="list inbox items, retry dead ones")
    steps = inbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    items = steps.add_parser("list", help="inbox items, oldest first")
    _listing(items, [s.value for s in ItemState])
    items.set_defaults(handler=list_inbox)
    again = steps.add_parser("retry", help="put a dead item back to pending")
    again.add_argument("id", type=int)
    again.add_argument("--json", action="store_true", help="print JSON")
    again.set_defaults(handler=retry_item)
