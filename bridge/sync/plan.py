"""What one action does for a connection, from all the items it claimed (coalescing).

However many notifications arrived, a connection gets at most one subscription step
(recreate, or else renew) followed by one reconcile. Items for a subscription id that
is no longer the connection's (replaced since they arrived) only ask for a reconcile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.graph.notifications import LIFECYCLE_EVENTS
from bridge.store.connections import Connection
from bridge.store.queue import RENEW_NOW, RENEWAL, Item

# Graph: answer reauthorizationRequired with one PATCH; not again within this.
RENEWAL_QUIET = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Plan:
    # The latest subscription expiry the items carried for the current subscription.
    expiry_seen: datetime | None
    recreate: bool
    renew: bool
    unknown_events: tuple[str, ...]


def plan(
    connection: Connection,
    items: Sequence[Item],
    now: datetime,
    renew_before: timedelta,
) -> Plan:
    current = [i for i in items if i.subscription_id == connection.subscription_id]
    events = {i.lifecycle_event for i in current if i.lifecycle_event}
    expiries = [i.subscription_expires_at for i in current if i.subscription_expires_at]
    expiry_seen = max(expiries) if expiries else None
    known = [e for e in (connection.subscription_expires_at, expiry_seen) if e]
    expires_at = max(known) if known else None

    recreate = "subscriptionRemoved" in events or (
        expires_at is not None and expires_at <= now
    )
    recently_renewed = (
        connection.renewed_at is not None
        and now - connection.renewed_at < RENEWAL_QUIET
    )
    falls_due = expires_at is None or expires_at - now < renew_before
    # The quiet period answers Graph's repeated reauthorization requests; a
    # renewal the scheduler found due is done whenever it comes (else it would be
    # settled done unrenewed, and the scheduler does not ask twice per expiry).
    reauthorize = "reauthorizationRequired" in events and not recently_renewed
    scheduled = falls_due and any(i.kind == RENEWAL for i in current)
    asked = any(i.kind == RENEW_NOW for i in current)
    renew = not recreate and (expires_at is None or reauthorize or scheduled or asked)
    unknown = tuple(sorted(e for e in events if e not in LIFECYCLE_EVENTS))
    return Plan(expiry_seen, recreate, renew, unknown)
