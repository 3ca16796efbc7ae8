"""Connections and the inbox: `bridge connect`, `bridge connections ...`,
`bridge inbox ...`. The same store and service calls as the admin API."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from bridge.cli.common import UserError, open_database, show, table, transaction
from bridge.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from bridge.sync.operator import Outcome
    from bridge.sync.upstreams import Upstreams


T = TypeVar("T")

# The CLI's names for the request's fields, for error messages.
_OPTIONS = {
    "resource_id": "--resource-id",
    "user_id": "--user",
    "calendar_id": "--calendar-id",
    "name": "--name",
    "coworker_id": "--coworker-id",
}


def _with_upstreams(
    settings: Settings, work: Callable[[Engine, Upstreams], Awaitable[T]]
) -> T:
    """Run `work` with the database and the upstream clients, then close them.
    Upstream failures a user can act on become one line."""
    from bridge.graph._errors import GraphError
    from bridge.nexudus import NexudusError
    from bridge.sync.connect import Refused
    from bridge.sync.operator import NoSuchConnection, NotAllowed
    from bridge.sync.upstreams import Unconfigured, Upstreams

    engine = open_database(settings)

    async def run() -> T:
        upstreams = Upstreams.from_settings(settings)
        try:
            return await work(engine, upstreams)
        finally:
            await upstreams.aclose()

    try:
        return asyncio.run(run())
    except Unconfigured as error:
        raise UserError(f"not configured: {error}") from None
    except (Refused, GraphError, NexudusError, NoSuchConnection, NotAllowed) as error:
        raise UserError(str(error)) from None
    finally:
        engine.dispose()


def connect_command(settings: Settings, args: argparse.Namespace) -> None:
    from datetime import timedelta

    from pydantic import ValidationError

    from bridge.sync.connect import ConnectRequest, connect, first_problem

    try:
        request = ConnectRequest(
            resource_id=args.resource_id,
            user_id=args.user,
            calendar_id=args.calendar_id,
            name=args.name,
            coworker_id=args.coworker_id,
        )
    except ValidationError as error:
        field, message = first_problem(error)
        raise UserError(f"{_OPTIONS.get(field, field)}: {message}") from None
    lifetime = timedelta(minutes=settings.subscription_lifetime_minutes)
    connected = _with_upstreams(
        settings,
        lambda engine, upstreams: connect(
            engine, upstreams, request, lifetime=lifetime
        ),
    )
    show(connected.connection.to_json(), args.json)


def _row_id(number: int, what: str) -> int:
    """`number`, unless no row can have it: the database would fail on it."""
    from bridge.store.schema import MAX_ID

    if not 0 < number <= MAX_ID:
        raise UserError(f"no {what} {number}")
    return number


def renew_connection(settings: Settings, args: argparse.Namespace) -> None:
    from bridge.sync.operator import Operator

    _row_id(args.id, "connection")
    outcome = _with_upstreams(
        settings,
        lambda engine, upstreams: Operator(engine, settings, upstreams).renew(args.id),
    )
    if outcome.result in ("done", "queued"):
        show(outcome.connection.to_json(), args.json)
        _note_queued(outcome)
        return
    verb = "waits" if outcome.result == "wait" else "failed"
    raise UserError(f"renewal {verb}: {outcome.reason}{_AFTERWARDS[outcome.result]}")


def disconnect_connection(settings: Settings, args: argparse.Namespace) -> None:
    from bridge.sync.operator import Operator

    _row_id(args.id, "connection")
    outcome = _with_upstreams(
        settings,
        lambda engine, upstreams: Operator(engine, settings, upstreams).disconnect(
            args.id
        ),
    )
    # Disconnected it is, whatever happened upstream: say what is left to do.
    show(outcome.connection.to_json(), args.json)
    _note_queued(outcome)
    if outcome.result not in ("done", "queued"):
        raise UserError(
            "disconnected, but deleting upstream failed: "
            f"{outcome.reason}{_AFTERWARDS[outcome.result]}"
        )


# What becomes of an operator's action that did not finish.
_AFTERWARDS = {
    "retry": " (the worker tries again)",
    "unsettled": " (the worker tries again)",
    "wait": " (the worker tries again once that is fixed)",
    "dead": " (fix the cause, then `bridge inbox retry` the dead item)",
}


def _note_queued(outcome: Outcome) -> None:
    if outcome.result == "queued":
        print(f"bridge: queued: {outcome.reason}", file=sys.stderr)  # noqa: T201


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

    _row_id(args.id, "connection")
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

    _row_id(args.id, "inbox item")
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
    if not text.isdigit() or int(text) > 10**12:
        raise argparse.ArgumentTypeError(f"must be from 0 to 10**12, got {text!r}")
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

    group = commands.add_parser(
        "connections", help="list, show, renew and disconnect connections"
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listed = actions.add_parser("list", help="connections, oldest first")
    _listing(listed, [s.value for s in State])
    listed.set_defaults(handler=list_connections)
    one = actions.add_parser("show", help="one connection")
    one.add_argument("id", type=int)
    one.add_argument("--json", action="store_true", help="print JSON")
    one.set_defaults(handler=show_connection)
    renew = actions.add_parser(
        "renew", help="renew the subscription now (recreated if Graph lost it)"
    )
    renew.add_argument("id", type=int)
    renew.add_argument("--json", action="store_true", help="print JSON")
    renew.set_defaults(handler=renew_connection)
    drop = actions.add_parser(
        "disconnect", help="stop syncing; delete the subscription and the record"
    )
    drop.add_argument("id", type=int)
    drop.add_argument("--json", action="store_true", help="print JSON")
    drop.set_defaults(handler=disconnect_connection)

    inbox = commands.add_parser("inbox", help="list inbox items, retry dead ones")
    steps = inbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    items = steps.add_parser("list", help="inbox items, oldest first")
    _listing(items, [s.value for s in ItemState])
    items.set_defaults(handler=list_inbox)
    again = steps.add_parser("retry", help="put a dead item back to pending")
    again.add_argument("id", type=int)
    again.add_argument("--json", action="store_true", help="print JSON")
    again.set_defaults(handler=retry_item)
