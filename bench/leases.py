"""The lease log of a benchmark's database: who held which connection's items, when.

A trigger on the inbox (added by the benchmark, not part of the bridge's schema) logs
every lease taken and given up, with the database's own clock. From it a run can tell
whether two workers ever held one connection at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Engine

from bridge.store import db

# The lease log: a row each time an item's lease is taken or given up, with the
# database's own clock (seconds since the epoch) at that moment. Claims lease with
# one UPDATE and settle with another, so a lease runs from the claim's update to
# the settling update, each a little before its commit: intervals of two workers
# on one connection cannot overlap unless both held it at once.
_DDL = {
    "postgresql": [
        "CREATE TABLE bench_leases (item_id bigint, connection_id bigint, "
        "worker text, taken boolean, at double precision)",
        "CREATE FUNCTION bench_log_lease() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN "
        "IF OLD.claimed_by IS NOT NULL THEN "
        "INSERT INTO bench_leases VALUES (OLD.id, OLD.connection_id, "
        "OLD.claimed_by, false, extract(epoch FROM clock_timestamp())); END IF; "
        "IF NEW.claimed_by IS NOT NULL THEN "
        "INSERT INTO bench_leases VALUES (NEW.id, NEW.connection_id, "
        "NEW.claimed_by, true, extract(epoch FROM clock_timestamp())); END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER bench_log_lease AFTER UPDATE OF claimed_by ON inbox "
        "FOR EACH ROW WHEN (OLD.claimed_by IS DISTINCT FROM NEW.claimed_by) "
        "EXECUTE FUNCTION bench_log_lease()",
    ],
    "sqlite": [
        "CREATE TABLE bench_leases (item_id integer, connection_id integer, "
        "worker text, taken boolean, at real)",
        "CREATE TRIGGER bench_lease_given_up AFTER UPDATE OF claimed_by ON inbox "
        "WHEN OLD.claimed_by IS NOT NULL "
        "AND OLD.claimed_by IS NOT NEW.claimed_by BEGIN "
        "INSERT INTO bench_leases VALUES (OLD.id, OLD.connection_id, "
        "OLD.claimed_by, 0, (julianday('now') - 2440587.5) * 86400.0); END",
        "CREATE TRIGGER bench_lease_taken AFTER UPDATE OF claimed_by ON inbox "
        "WHEN NEW.claimed_by IS NOT NULL "
        "AND OLD.claimed_by IS NOT NEW.claimed_by BEGIN "
        "INSERT INTO bench_leases VALUES (NEW.id, NEW.connection_id, "
        "NEW.claimed_by, 1, (julianday('now') - 2440587.5) * 86400.0); END",
    ],
}


def install(engine: Engine) -> None:
    """Add the lease log to the benchmark's database (not the bridge's schema)."""
    with db.writing(engine) as conn:
        for statement in _DDL[engine.dialect.name]:
            conn.exec_driver_sql(statement)


@dataclass(frozen=True)
class Lease:
    connection_id: int
    worker: str  # the lease holder's id, as the worker wrote it
    start: float  # seconds since the epoch
    end: float


def read(engine: Engine) -> list[Lease]:
    """Every item lease of the run, from the lease log."""
    query = (
        "SELECT item_id, connection_id, worker, taken, at FROM bench_leases ORDER BY at"
    )
    taken: dict[tuple[int, str], tuple[int, float]] = {}
    found = []
    with db.reading(engine) as conn:
        for item_id, connection_id, worker, is_taken, at in conn.exec_driver_sql(query):
            if is_taken:
                taken[(item_id, worker)] = (connection_id, at)
            elif (item_id, worker) in taken:
                connection, start = taken.pop((item_id, worker))
                found.append(Lease(connection, worker, start, at))
    # Leases still held at the end (none once the inbox is settled).
    found += [Lease(c, w, start, math.inf) for (_, w), (c, start) in taken.items()]
    return found


def leased_at_once(held: list[Lease]) -> set[int]:
    """Connections leased to two workers at overlapping times."""
    by_connection: dict[int, list[Lease]] = {}
    for lease in held:
        by_connection.setdefault(lease.connection_id, []).append(lease)
    twice = set()
    for connection_id, spans in by_connection.items():
        if len({lease.worker for lease in spans}) < 2:
            continue
        spans.sort(key=lambda lease: lease.start)
        # Sweep: the latest end so far of each worker.
        ends: dict[str, float] = {}
        for lease in spans:
            if any(
                end > lease.start
                for worker, end in ends.items()
                if worker != lease.worker
            ):
                twice.add(connection_id)
                break
            ends[lease.worker] = max(ends.get(lease.worker, -math.inf), lease.end)
    return twice
