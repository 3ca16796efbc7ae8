"""The renewal scheduler: puts a renewal item in the inbox for each subscription
that falls due, so renewals share the worker's claim, coalescing and retries.

Renewals that fall due together (a bulk connect, a restart after downtime) are spread
over up to `MAX_SPREAD` at about one per second, so Graph does not see a burst.
Subscriptions that already expired are scheduled at once: the worker recreates them.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta

from sqlalchemy import Connection as Db

from bridge.store import connections, queue

MAX_SPREAD = timedelta(minutes=10)
PER_RENEWAL = timedelta(seconds=1)
BATCH = 1000


def schedule(
    db: Db,
    now: datetime,
    renew_before: timedelta,
    rng: random.Random | None = None,
) -> int:
    """Enqueue the renewals that fall due; returns how many were added."""
    due = connections.due_for_renewal(db, now + renew_before, BATCH)
    spread = min(MAX_SPREAD, PER_RENEWAL * len(due)).total_seconds()
    added = 0
    for item in due:
        expired = item.expires_at <= now
        # Once per subscription and expiry: a renewal that went dead is not
        # repeated for the same expiry (an operator retries it), but the
        # recreation after the expiry passes is a new item.
        key = hashlib.sha256(
            "\x1f".join(
                (
                    "expired" if expired else "renewal",
                    item.subscription_id,
                    item.expires_at.isoformat(),
                )
            ).encode()
        ).hexdigest()
        delay = 0.0 if expired else (rng or random).uniform(0, spread)
        new = queue.enqueue(
            db,
            kind=queue.RENEWAL,
            connection_id=item.connection_id,
            subscription_id=item.subscription_id,
            key=key,
            at=now + timedelta(seconds=delay),
            now=now,
            detail={"expiresAt": item.expires_at.isoformat(), "expired": expired},
        )
        added += new is not None
    return added
