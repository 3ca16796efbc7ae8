"""Benchmark the worker's drain: a notification backlog through `bridge worker`.

For each size, a fresh SQLite database gets `--connections` active connections, each
with its CoworkerMsOfficeCalendar record seeded in the fake Nexudus (a `--stale` share
of them out of date, so they need one PUT). `--notifications` Graph change
notifications, a `--duplicates` share of them Graph's extra copies of a change (same
etag), go through the real ingest path (`graph.notifications.parse`, then
`store.inbox.ingest`, one transaction per POST body). Then `bridge worker` runs as a
subprocess against the fake Nexudus, served by uvicorn on 127.0.0.1 with `--latency`
per call and the documented limits enforced (1 call per 100 ms, 60 writes per
minute, 409 + Retry-After beyond them), until no item is pending or processing.

Reports Nexudus calls per distinct change and per action, writes beyond the needed
ones per duplicate, the drain time against the lower bound the limits allow, and the
worker's peak RSS (VmHWM). Every record is checked at the end.

`--database postgres` runs on a throwaway PostgreSQL cluster with fsync on
(bench/database.py) instead of a SQLite file; `--workers N` runs N `bridge worker`
processes on it at once. They share one Nexudus client id, so the fake's limits
(which it keeps per client) are one budget for all of them, and the lower bound is
the same as for one worker.

Two workers must never act on one connection at once. A trigger that the benchmark
adds to the inbox logs every lease taken and given up (item, connection, worker,
time); each worker reaches the fake through a port of its own, so every Nexudus call
is known by the worker that made it. The run checks that no connection was leased
to two workers at once, that every call about a record came from the worker holding
its connection's lease at that moment, and that no record was created twice.

    python -m bench.drain [--database sqlite|postgres] [--workers 1]
                          [--connections 1000] [--notifications 1250 10000]
                          [--stale 0.1] [--duplicates 0.2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from bench import database, leases
from bridge.graph.notifications import parse
from bridge.nexudus import format_nexudus_datetime
from bridge.store import connections, db
from bridge.store.inbox import ItemState, Outcome, ingest
from bridge.store.schema import inbox, utcnow
from bridge.web.ingest import incoming
from tests.fakes.nexudus import PASSWORD, USERNAME, Call, FakeNexudus
from tests.fakes.server import serve
from tests.processes import free_port

HERE = Path(__file__).parent
# The documented Nexudus limits (/work/shared/docs/nexudus.md) the fake enforces.
MIN_INTERVAL = 0.1
WRITE_LIMIT = 60
WRITE_WINDOW = 60.0
# Polling the inbox is a cheap indexed count; seldom enough not to add jitter to
# the fake's timing, which shares this process.
POLL_SECONDS = 0.25
# The fake's call times and the database's lease times come from two clocks of one
# machine, compared through an offset taken once: a call's time may be off by this.
CLOCK_SLACK = 0.05
# Also published, not enforced by the fake: all calls 120 per minute.
CALLS_PER_MINUTE = 120
TENANT = "5e0b2c7d-91a4-4f36-8d2e-a7c9b14f3e60"


@dataclass(frozen=True)
class Seeded:
    """One connection as stored, and the record Nexudus must hold at the end."""

    connection_id: int
    record_id: int
    subscription_id: str
    client_state: str
    user_id: str
    expected: dict[str, Any]
    stale: bool


@dataclass
class Worker:
    """One `bridge worker` process's share of a run."""

    name: str
    actions: int  # records it read (one GET per action)
    calls: int
    throttled: int
    peak_rss_mb: float
    cpu_seconds: float


@dataclass
class Run:
    database: str
    workers: int
    connections: int
    notifications: int
    distinct: int
    duplicates: int
    connections_with_work: int
    ingest_seconds: float
    api_calls: int
    gets: int
    puts: int
    posts: int
    searches: int
    throttled: int
    token_calls: int
    max_gets_per_record: int
    max_puts_per_record: int
    needed_calls: int
    needed_writes: int
    extra_writes: int
    calls_per_change: float
    calls_per_action: float
    writes_per_duplicate: float
    drain_seconds: float
    busy_seconds: float
    lower_bound_seconds: float
    ratio: float
    published_bound_seconds: float
    peak_rss_mb: float
    worker_cpu_seconds: float
    items_done: int
    items_retried: int
    items_dead: int
    records_wrong: int
    # Leases of two workers on one connection that overlap in time: must be 0.
    connections_leased_twice: int = 0
    # Calls about a record by a worker not holding its connection's lease: must be 0.
    calls_without_lease: int = 0
    # Records acted on by two workers one after the other (a retry elsewhere).
    records_acted_on_by_two: int = 0
    records_created: int = 0
    subscriptions_with_two_records: int = 0
    per_worker: list[Worker] = field(default_factory=list)


def windows(count: int, per_window: int) -> int:
    """Full 60 s windows that must pass before the last of `count` calls."""
    return (count - 1) // per_window if count else 0


def lower_bound(calls: int, writes: int) -> float:
    """The least time the fake's limits allow for `calls` calls, `writes` of them
    writes: one call per 100 ms, and 60 writes in any 60 s."""
    return max(calls * MIN_INTERVAL, windows(writes, WRITE_LIMIT) * WRITE_WINDOW)


def published_bound(calls: int, writes: int) -> float:
    """The same with the published 120 calls per minute as well (real Nexudus)."""
    per_minute = windows(calls, CALLS_PER_MINUTE) * WRITE_WINDOW
    return max(lower_bound(calls, writes), per_minute)


def seed(
    engine: Engine,
    fake: FakeNexudus,
    count: int,
    stale_share: float,
    expires: datetime,
    rng: random.Random,
) -> list[Seeded]:
    """Connections with their records in the fake; a share of the records stale."""
    now = utcnow()
    stale = set(rng.sample(range(count), round(count * stale_share)))
    seeded = []
    with db.writing(engine) as conn:
        for n in range(count):
            subscription_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            secret = f"{rng.getrandbits(192):048x}"
            resource_id, coworker_id = 1000 + n, 5000 + n
            name, calendar_id = f"Meeting room {n}", f"AAMkAGcal{n:05d}="
            connection = connections.insert(
                conn,
                state=connections.State.ACTIVE,
                resource_id=resource_id,
                coworker_id=coworker_id,
                user_id=user_id,
                calendar_id=calendar_id,
                name=name,
                subscription_id=subscription_id,
                subscription_expires_at=expires,
                client_state=secret,
                now=now,
            )
            expected: dict[str, Any] = {
                "ResourceId": resource_id,
                "CoworkerId": coworker_id,
                "Name": name,
                "SubscriptionId": subscription_id,
                "CalendarId": calendar_id,
                "SubscriptionExpireDate": format_nexudus_datetime(expires),
                "SystemId": f"kept-{n}",  # not the bridge's: a PUT must keep it
            }
            held = dict(expected)
            if n in stale:  # half renamed in Nexudus, half with an older expiry
                if n % 2:
                    held["Name"] = f"Old name {n}"
                else:
                    older = expires - timedelta(days=2)
                    held["SubscriptionExpireDate"] = format_nexudus_datetime(older)
            record_id = fake.add_record(**held)
            connections.update(conn, connection.id, now, nexudus_record_id=record_id)
            seeded.append(
                Seeded(
                    connection.id,
                    record_id,
                    subscription_id,
                    secret,
                    user_id,
                    expected,
                    n in stale,
                )
            )
    return seeded


def notifications(
    seeded: list[Seeded],
    total: int,
    duplicate_share: float,
    expires: datetime,
    rng: random.Random,
) -> tuple[list[dict[str, Any]], set[int]]:
    """Graph change notifications in arrival order, and the connections they touch.

    Every distinct change has its own etag; a duplicate repeats an earlier change's
    item exactly, as Graph does when it delivers a change more than once. The first
    changes go one to each connection, the rest at random: sizes with at least as
    many distinct changes as connections then ask Nexudus for the same work.
    """
    duplicates = round(total * duplicate_share)
    targets = rng.sample(seeded, len(seeded))
    changes: list[dict[str, Any]] = []
    touched: set[int] = set()
    # Graph writes seven fractional digits; the stored expiry has none.
    expiry = expires.strftime("%Y-%m-%dT%H:%M:%S") + ".4177893+00:00"
    for k in range(total - duplicates):
        target = targets[k] if k < len(targets) else rng.choice(seeded)
        touched.add(target.connection_id)
        event = f"AAMkAGI2TG93AAA-event-{k:07d}="
        resource = f"Users/{target.user_id}/Events/{event}"
        changes.append(
            {
                "subscriptionId": target.subscription_id,
                "subscriptionExpirationDateTime": expiry,
                "changeType": rng.choice(("created", "updated", "updated", "deleted")),
                "resource": resource,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Event",
                    "@odata.id": resource,
                    "@odata.etag": f'W/"DwAAABYAAAAXxlVK8zI/{k:08x}"',
                    "id": event,
                },
                "clientState": target.client_state,
                "tenantId": TENANT,
            }
        )
    items = changes + [rng.choice(changes) for _ in range(duplicates)]
    rng.shuffle(items)
    return items, touched


def store(engine: Engine, items: list[dict[str, Any]], batch: int) -> Counter[Outcome]:
    """POST bodies of `batch` items through the ingest path, one transaction each."""
    outcomes: Counter[Outcome] = Counter()
    for start in range(0, len(items), batch):
        body = json.dumps({"value": items[start : start + batch]}).encode()
        parsed = [incoming(received) for received in parse(body)]
        with db.writing(engine) as conn:
            outcomes.update(ingest(conn, parsed, utcnow()))
    return outcomes


def worker_env(database_url: str, nexudus_url: str) -> dict[str, str]:
    """The worker's environment: ours only, nothing inherited for the bridge."""
    ours = ("BRIDGE_", "GRAPH_", "NEXUDUS_", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    nowhere = free_port()  # Graph is never needed; a call would fail and show
    env.update(
        {
            "PYTHONPATH": str(HERE.parent),
            "DATABASE_URL": database_url,
            "NEXUDUS_API_URL": nexudus_url,
            "NEXUDUS_USERNAME": USERNAME,
            "NEXUDUS_PASSWORD": PASSWORD,
            "GRAPH_TENANT_ID": TENANT,
            "GRAPH_CLIENT_ID": "bench-client",
            "GRAPH_CLIENT_SECRET": "bench-secret",
            "GRAPH_AUTHORITY_URL": f"https://127.0.0.1:{nowhere}",
            "GRAPH_API_URL": f"http://127.0.0.1:{nowhere}/v1.0",
            "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{nowhere}",
            # Subscriptions expire in 3 days: no renewal falls due.
            "BRIDGE_RENEW_BEFORE_MINUTES": "60",
            "BRIDGE_LOG_LEVEL": "warning",
        }
    )
    return env


def unsettled(engine: Engine) -> int:
    active = [ItemState.PENDING.value, ItemState.PROCESSING.value]
    with db.reading(engine) as conn:
        count = conn.execute(
            select(func.count()).select_from(inbox).where(inbox.c.state.in_(active))
        ).scalar_one()
    return int(count)


def item_states(engine: Engine) -> tuple[Counter[str], int]:
    """Items per state, and how many took more than one attempt."""
    with db.reading(engine) as conn:
        states = Counter(
            {
                state: int(count)
                for state, count in conn.execute(
                    select(inbox.c.state, func.count()).group_by(inbox.c.state)
                )
            }
        )
        retried = conn.execute(
            select(func.count()).select_from(inbox).where(inbox.c.attempts > 1)
        ).scalar_one()
    return states, int(retried)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    if found is None:
        raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
    return int(found.group(1)) / 1024


@dataclass
class Drained:
    seconds: float
    first_call: float  # seconds from the start to the first Nexudus call
    workers: list[Worker]
    # The port each worker reached the fake on: calls are told apart by it.
    hosts: dict[str, str]
    pids: dict[str, int]


async def drain(
    engine: Engine,
    database_url: str,
    fake: FakeNexudus,
    workdir: Path,
    args: argparse.Namespace,
) -> Drained:
    """Run `--workers` `bridge worker` processes until the inbox is settled."""
    names = [f"worker-{n}" for n in range(1, args.workers + 1)]
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve(fake.app)) for _ in names]
        hosts = {
            name: url.split("://", 1)[1] for name, url in zip(names, urls, strict=True)
        }
        processes: dict[str, asyncio.subprocess.Process] = {}
        started = time.monotonic()
        try:
            for name, url in zip(names, urls, strict=True):
                with (workdir / f"{name}.log").open("w") as log:
                    processes[name] = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "bridge",
                        "worker",
                        cwd=workdir,  # no .env of the checkout is read
                        env=worker_env(database_url, url),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
            while await asyncio.to_thread(unsettled, engine):
                for name, process in processes.items():
                    if process.returncode is not None:
                        log_text = (workdir / f"{name}.log").read_text()
                        raise RuntimeError(
                            f"{name} exited with {process.returncode}: "
                            f"{log_text[-2000:]}"
                        )
                if time.monotonic() - started > args.timeout:
                    raise RuntimeError(f"not drained within {args.timeout:g}s")
                await asyncio.sleep(POLL_SECONDS)
            seconds = time.monotonic() - started
            usage = {
                name: (peak_rss_mb(process.pid), cpu_seconds(process.pid))
                for name, process in processes.items()
            }
        finally:
            for process in processes.values():
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    async with asyncio.timeout(30):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
    first_call = min((call.at for call in fake.api_calls), default=started)
    workers = []
    for name in names:
        calls = [call for call in fake.api_calls if host(call) == hosts[name]]
        throttled = sum(1 for call in calls if call.status == 409)
        actions = sum(1 for call in calls if is_record_read(call))
        rss, cpu = usage[name]
        workers.append(Worker(name, actions, len(calls), throttled, rss, cpu))
    pids = {name: process.pid for name, process in processes.items()}
    return Drained(seconds, first_call - started, workers, hosts, pids)


def host(call: Call) -> str:
    return call.headers.get("host", "")


def is_record_read(call: Call) -> bool:
    """A GET of one record (not a search), served: the first call of an action."""
    return call.method == "GET" and call.query == {} and call.status == 200


def record_id(call: Call) -> int | None:
    """The record a GET or PUT is about (the path's last part, or the body's Id)."""
    if call.method == "PUT" and isinstance(call.body, dict):
        return int(call.body["Id"]) if "Id" in call.body else None
    last = call.path.rstrip("/").rsplit("/", 1)[-1]
    return int(last) if call.method == "GET" and last.isdigit() else None


def lease_checks(
    fake: FakeNexudus,
    drained: Drained,
    held: list[leases.Lease],
    connection_of: dict[int, int],
    wall_offset: float,
) -> tuple[int, int]:
    """Calls about a record made by a worker that did not hold its connection's
    lease at that moment, and records that two workers acted on (one after the
    other, or they would count in the first figure or in `leased_at_once`)."""
    # A worker's lease holder id carries its pid: `worker:HOST:PID:RANDOM`.
    name_of_pid = {pid: name for name, pid in drained.pids.items()}
    spans: dict[tuple[int, str], list[leases.Lease]] = {}
    for lease in held:
        name = name_of_pid.get(int(lease.worker.split(":")[2]), lease.worker)
        spans.setdefault((lease.connection_id, name), []).append(lease)
    name_of_host = {host: name for name, host in drained.hosts.items()}
    without = 0
    workers_of_record: dict[int, set[str]] = {}
    for call in fake.api_calls:
        found = record_id(call)
        if found is None:
            continue
        name = name_of_host.get(host(call), "?")
        workers_of_record.setdefault(found, set()).add(name)
        at = call.at + wall_offset
        mine = spans.get((connection_of.get(found, -1), name), [])
        if not any(
            lease.start - CLOCK_SLACK <= at <= lease.end + CLOCK_SLACK for lease in mine
        ):
            without += 1
    by_two = sum(1 for names in workers_of_record.values() if len(names) > 1)
    return without, by_two


def wrong_records(
    fake: FakeNexudus, seeded: list[Seeded], touched: set[int]
) -> list[int]:
    """Connections whose record is not what it should be (a stale record that no
    notification touched is expected to stay stale)."""
    wrong = []
    for one in seeded:
        record = fake.records.get(one.record_id)
        if record is None:
            wrong.append(one.connection_id)
            continue
        held = {key: record.get(key) for key in one.expected}
        if one.connection_id in touched or not one.stale:
            if held != one.expected:
                wrong.append(one.connection_id)
        elif held == one.expected:
            wrong.append(one.connection_id)  # fixed with no notification?
    if len(fake.records) != len(seeded):
        wrong.append(-1)  # a record was created or deleted
    return wrong


async def measure(args: argparse.Namespace, total: int) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    try:
        with database.fresh(args.database, workdir) as fresh:
            return await measure_on(args, total, fresh, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def measure_on(
    args: argparse.Namespace, total: int, fresh: database.Database, workdir: Path
) -> Run:
    rng = random.Random(args.seed)
    engine = fresh.engine
    fake = FakeNexudus(
        latency=args.latency, write_limit=WRITE_LIMIT, min_interval=MIN_INTERVAL
    )
    expires = (utcnow() + timedelta(days=3)).replace(microsecond=0)
    seeded = seed(engine, fake, args.connections, args.stale, expires, rng)
    items, touched = notifications(seeded, total, args.duplicates, expires, rng)
    began = time.perf_counter()
    outcomes = store(engine, items, args.batch)
    ingest_seconds = time.perf_counter() - began
    distinct = outcomes[Outcome.STORED]
    duplicates = outcomes[Outcome.DUPLICATE]
    if distinct + duplicates != total:
        raise RuntimeError(f"ingest did not store or dedupe everything: {outcomes}")

    leases.install(engine)
    # The fake's clock (the bench's monotonic time) against the database's.
    wall_offset = time.time() - time.monotonic()
    drained = await drain(engine, fresh.url, fake, workdir, args)
    seconds = drained.seconds
    held = leases.read(engine)
    connection_of = {one.record_id: one.connection_id for one in seeded}
    without_lease, by_two = lease_checks(
        fake, drained, held, connection_of, wall_offset
    )
    records_per_subscription = Counter(
        record.get("SubscriptionId") for record in fake.records.values()
    )

    calls = fake.api_calls
    served = [call for call in calls if call.status != 409]
    throttled = len(calls) - len(served)
    gets = Counter(
        call.path for call in served if call.method == "GET" and call.query == {}
    )
    puts = Counter(
        call.body.get("Id") for call in served if call.method == "PUT" and call.body
    )
    posts = sum(1 for call in served if call.method == "POST")
    searches = sum(1 for call in served if call.method == "GET" and call.query)
    stale_touched = sum(1 for s in seeded if s.stale and s.connection_id in touched)
    needed_calls = len(touched) + stale_touched
    writes = sum(puts.values()) + posts
    extra_writes = writes - stale_touched
    bound = lower_bound(needed_calls, stale_touched)
    states, retried = item_states(engine)
    return Run(
        database=args.database,
        workers=args.workers,
        connections=args.connections,
        notifications=total,
        distinct=distinct,
        duplicates=duplicates,
        connections_with_work=len(touched),
        ingest_seconds=ingest_seconds,
        api_calls=len(calls),
        gets=sum(gets.values()),
        puts=sum(puts.values()),
        posts=posts,
        searches=searches,
        throttled=throttled,
        token_calls=len(fake.token_calls),
        max_gets_per_record=max(gets.values(), default=0),
        max_puts_per_record=max(puts.values(), default=0),
        needed_calls=needed_calls,
        needed_writes=stale_touched,
        extra_writes=extra_writes,
        calls_per_change=len(calls) / distinct,
        calls_per_action=len(calls) / len(touched),
        writes_per_duplicate=extra_writes / duplicates if duplicates else 0.0,
        drain_seconds=seconds,
        busy_seconds=seconds - drained.first_call,
        lower_bound_seconds=bound,
        ratio=seconds / bound,
        published_bound_seconds=published_bound(needed_calls, stale_touched),
        peak_rss_mb=max(worker.peak_rss_mb for worker in drained.workers),
        worker_cpu_seconds=sum(worker.cpu_seconds for worker in drained.workers),
        items_done=states[ItemState.DONE.value],
        items_retried=retried,
        items_dead=states[ItemState.DEAD.value],
        records_wrong=len(wrong_records(fake, seeded, touched)),
        connections_leased_twice=len(leases.leased_at_once(held)),
        calls_without_lease=without_lease,
        records_acted_on_by_two=by_two,
        records_created=posts,
        subscriptions_with_two_records=sum(
            1 for count in records_per_subscription.values() if count > 1
        ),
        per_worker=drained.workers,
    )


def report(runs: list[Run]) -> None:
    columns: tuple[tuple[str, Callable[[Run], str]], ...] = (
        ("notif.", lambda r: f"{r.notifications:,}"),
        ("distinct", lambda r: f"{r.distinct:,}"),
        ("dups", lambda r: f"{r.duplicates:,}"),
        ("conns", lambda r: f"{r.connections_with_work:,}"),
        ("GET", lambda r: f"{r.gets:,}"),
        ("PUT", lambda r: f"{r.puts:,}"),
        ("other", lambda r: f"{r.posts + r.searches}"),
        ("409", lambda r: f"{r.throttled}"),
        ("calls/chg", lambda r: f"{r.calls_per_change:.3f}"),
        ("calls/act", lambda r: f"{r.calls_per_action:.3f}"),
        ("wr/dup", lambda r: f"{r.writes_per_duplicate:.3f}"),
        ("drain s", lambda r: f"{r.drain_seconds:.1f}"),
        ("bound s", lambda r: f"{r.lower_bound_seconds:.1f}"),
        ("ratio", lambda r: f"{r.ratio:.2f}"),
        ("RSS MB", lambda r: f"{r.peak_rss_mb:.1f}"),
        ("wrong", lambda r: f"{r.records_wrong}"),
    )
    print("".join(f"{title:>10}" for title, _ in columns))
    for run in runs:
        print("".join(f"{show(run):>10}" for _, show in columns))
    for run in runs:
        print(
            f"{run.notifications:,} notifications: ingest {run.ingest_seconds:.1f}s; "
            f"first Nexudus call to drained {run.busy_seconds:.1f}s "
            f"({run.busy_seconds / run.lower_bound_seconds:.2f}x the bound); "
            f"{run.token_calls} token call(s); most GETs of one record "
            f"{run.max_gets_per_record}, most PUTs {run.max_puts_per_record}; "
            f"needed writes {run.needed_writes}, extra {run.extra_writes}; "
            f"items done {run.items_done:,}, retried {run.items_retried}, "
            f"dead {run.items_dead}; worker CPU {run.worker_cpu_seconds:.1f}s; "
            f"bound with 120 calls/min (not enforced by the fake) "
            f"{run.published_bound_seconds:.0f}s"
        )
        print(
            f"  {run.database}, {run.workers} worker(s): connections leased to two "
            f"workers at once {run.connections_leased_twice}; calls about a record "
            f"without its connection's lease {run.calls_without_lease}; records "
            f"acted on by two workers one after the other "
            f"{run.records_acted_on_by_two}; records created {run.records_created}, "
            f"subscriptions with two records {run.subscriptions_with_two_records}"
        )
        for worker in run.per_worker:
            print(
                f"  {worker.name}: {worker.actions} actions, {worker.calls} calls, "
                f"{worker.throttled} refused with 409, peak RSS "
                f"{worker.peak_rss_mb:.1f} MB, CPU {worker.cpu_seconds:.1f}s"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=database.CHOICES, default="sqlite")
    parser.add_argument(
        "--workers", type=int, default=1, help="bridge worker processes at once"
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument(
        "--notifications",
        type=int,
        nargs="+",
        default=[1250, 10000],
        help="one run per size, each on a fresh database and a fresh fake",
    )
    parser.add_argument("--stale", type=float, default=0.1, help="share of records")
    parser.add_argument(
        "--duplicates", type=float, default=0.2, help="share of notifications"
    )
    parser.add_argument("--latency", type=float, default=0.02, help="seconds a call")
    parser.add_argument("--batch", type=int, default=20, help="items per POST body")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if min(args.connections, args.workers, *args.notifications) < 1:
        parser.error("--connections, --workers and --notifications must be at least 1")

    runs = [asyncio.run(measure(args, total)) for total in args.notifications]
    report(runs)
    if args.json:
        figures = {"runs": [asdict(run) for run in runs], "at": time.time()}
        args.json.write_text(json.dumps(figures, indent=2))
    failed = [
        run
        for run in runs
        if run.records_wrong
        or run.items_dead
        or run.connections_leased_twice
        or run.calls_without_lease
        or run.records_created
        or run.subscriptions_with_two_records
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
