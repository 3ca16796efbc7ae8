"""`make demo`: the bridge at work in under a minute, with no credentials.

It starts local stand-ins for Microsoft's identity authority, Graph and Nexudus (the
fakes the tests use, over TLS on 127.0.0.1), then a real `bridge serve` on SQLite,
and drives it with the real command line: connect two calendars, replay what Graph
would post (changes, a duplicate, a forged item, two lifecycle events), disconnect
one, and show what happened to the Nexudus records at each step.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.harness import USER, Bridge, Fakes, running_fakes
from tests.fakes.tls import TestCA

ROOM = "boardroom@contoso.test"
# Where the bridge logs what it makes of notifications and what it does about them
# (the rest of its log is plumbing).
TOLD = {"bridge.web.notifications", "bridge.sync.actions"}


def say(text: str) -> None:
    print(f"\n== {text}")


def shell(command: str, output: str) -> None:
    print(f"$ {command}")
    print(output.rstrip())


def records(fakes: Fakes) -> None:
    shown = sorted(fakes.nexudus.records.values(), key=lambda r: int(r["Id"]))
    if not shown:
        print("(no records)")
    for record in shown:
        print(
            f"  record {record['Id']}: resource {record['ResourceId']}, "
            f"{record['Name']!r}, subscription {record['SubscriptionId'][:8]}…, "
            f"expires {record['SubscriptionExpireDate']}"
        )


async def run(bridge: Bridge, *args: str) -> str:
    result = await bridge.cli(*args)
    shell(f"bridge {' '.join(args)}", result.stdout + result.stderr)
    if result.status != 0:
        raise SystemExit(f"demo: `bridge {args[0]}` failed")
    return result.stdout


async def connect(bridge: Bridge, resource_id: int, user: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(
        await run(
            bridge,
            "connect",
            "--resource-id",
            str(resource_id),
            "--user",
            user,
            "--json",
        )
    )
    return shown


def payloads(bridge: Bridge, adele: dict[str, Any], room: dict[str, Any]) -> Path:
    """What Graph would post, one file each, as `bridge replay` takes them."""
    folder = bridge.workdir / "payloads"
    folder.mkdir()
    adele_sub = bridge.subscription(adele["subscription_id"])
    room_sub = bridge.subscription(room["subscription_id"])
    change = bridge.change(adele_sub, "AAMkAGI-meeting-1")
    forged = bridge.change(room_sub)
    forged["value"][0]["clientState"] = "guessed"
    files = {
        "1-adele-event-updated.json": change,
        "2-adele-same-change-again.json": change,  # Graph sends copies
        "3-room-forged-client-state.json": forged,
        "4-room-reauthorization-required.json": bridge.lifecycle(
            room_sub, "reauthorizationRequired"
        ),
        "5-adele-subscription-removed.json": bridge.lifecycle(
            adele_sub, "subscriptionRemoved"
        ),
    }
    for name, body in files.items():
        (folder / name).write_text(json.dumps(body, indent=2))
    return folder


def told(bridge: Bridge, since: int) -> int:
    """Print what the bridge logged about its work since line `since`."""
    lines = bridge.log().splitlines()
    for line in lines[since:]:
        event = json.loads(line)
        if event.get("logger") in TOLD:
            about = (
                f"connection {event['connection_id']}"
                if "connection_id" in event
                else f"subscription {event.get('subscription_id', '?')[:8]}…"
            )
            print(f"  bridge log, {event['level']}: {event['event']} ({about})")
    return len(lines)


async def demo(workdir: Path) -> None:
    started = time.monotonic()
    ca = TestCA.create(workdir)
    # The fake Graph's own client (handshakes, deliveries) trusts what the bridge does.
    os.environ["SSL_CERT_FILE"] = str(ca.ca_file)
    os.environ.pop("SSL_CERT_DIR", None)
    async with running_fakes(ca) as fakes:
        fakes.graph.add_mailbox(ROOM)
        say("Local stand-ins started")
        print(f"  identity authority  {fakes.authority_url}")
        print(f"  Microsoft Graph     {fakes.graph_url}")
        print(f"  Nexudus             {fakes.nexudus_url}")
        bridge = Bridge(workdir, f"sqlite:///{workdir / 'bridge.db'}", fakes, ca)
        try:
            await bridge.start()
            say(f"bridge serve is up at {bridge.url} (SQLite: {workdir / 'bridge.db'})")

            say("Connect two calendars (the handshake goes through the bridge)")
            adele = await connect(bridge, 7, USER)
            room = await connect(bridge, 8, ROOM)
            print("Nexudus records:")
            records(fakes)
            seen = told(bridge, 0)

            say("Replay what Graph would post")
            # Graph's reauthorization requests within 10 minutes of a renewal are
            # answered once; as far as the bridge knows, the room connected an hour ago.
            an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
            await bridge.update_connection(room["id"], renewed_at=an_hour_ago)
            folder = payloads(bridge, adele, room)
            await run(bridge, "replay", str(folder), "--url", bridge.url)
            await bridge.settled()
            seen = told(bridge, seen)
            await run(bridge, "inbox", "list")
            print(
                "Nexudus records (Adele's has a new subscription, the room's renewed):"
            )
            records(fakes)

            say("Disconnect the boardroom")
            await run(bridge, "connections", "disconnect", str(room["id"]))
            told(bridge, seen)
            await run(bridge, "connections", "list")
            print("Nexudus records:")
            records(fakes)
        finally:
            await bridge.close()
    say(f"Done in {time.monotonic() - started:.1f} s")


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    try:
        asyncio.run(demo(workdir))
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        if "--keep" in sys.argv:
            print(f"Kept the database, payloads and the bridge's log in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
