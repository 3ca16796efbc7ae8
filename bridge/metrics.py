"""Prometheus metrics, defined once and shared by every module that counts.

Counters and histograms here are per process. The gauges of the service's state
(`DatabaseCollector`) are read from the database when scraped, so they are right
whichever process answers. See docs/runbook.md for what each one means.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from bridge.store.stats import Snapshot

    _Fill = Callable[[GaugeMetricFamily, Snapshot, float], None]

log = logging.getLogger(__name__)

# `_created` series double the output and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

NOTIFICATIONS = Counter(
    "bridge_notifications_received",
    "Notification items received, by kind and what ingest did with them.",
    ["kind", "outcome"],
)
NOTIFICATION_REQUESTS = Counter(
    "bridge_notification_requests",
    "POSTs to the notification URLs, by answer status.",
    ["status"],
)
INGEST_BATCHES = Counter(
    "bridge_ingest_batches",
    "Batches of notification POSTs the ingest process answered (each written in "
    "one transaction per 64 items).",
)
ACK_SECONDS = Histogram(
    "bridge_notification_ack_seconds",
    "Time from receiving a notification POST to answering it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3, 10),
)
ACTIONS = Counter(
    "bridge_worker_actions",
    "Worker actions on a connection, by result (done, retry, wait, dead, released).",
    ["result"],
)
ACTION_SECONDS = Histogram(
    "bridge_worker_action_seconds",
    "Time one worker action took, upstream calls included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RENEWALS_SCHEDULED = Counter(
    "bridge_renewals_scheduled",
    "Subscription renewals put in the inbox by the renewal scheduler.",
)
UPSTREAM_CALLS = Counter(
    "bridge_upstream_requests",
    "Calls to an upstream (graph, identity, nexudus), by operation and answer: "
    "the HTTP status, or timeout, error (no answer) or cancelled.",
    ["upstream", "operation", "status"],
)
UPSTREAM_THROTTLES = Counter(
    "bridge_upstream_throttles",
    "Calls an upstream refused as over its limits (Graph and the identity "
    "authority: 429; Nexudus: 409 or 429). Also counted in bridge_upstream_requests.",
    ["upstream", "operation"],
)
UPSTREAM_SECONDS = Histogram(
    "bridge_upstream_request_seconds",
    "Time one upstream call took, from sending to the answer's headers.",
    ["upstream", "operation"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time: the inbox, the connections,
    the soonest subscription expiry.

    They describe the whole service, not this process, so every process reports
    the same values (aggregate them with `max`, not `sum`). When the database
    cannot be read the scrape still succeeds, with `bridge_database_up 0` and
    without the other gauges, rather than failing the whole answer.
    """

    def __init__(
        self,
        read: Callable[[], Snapshot],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._read = read
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not query the database.
        return [family for family, _ in self._families()]

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "bridge_database_up",
            "1 when the metrics could read the database at this scrape, else 0.",
        )
        try:
            snapshot = self._read()
        except Exception as error:
            log.warning(
                "metrics: the database could not be read",
                extra={"error": type(error).__name__},
            )
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self._clock()
        for family, fill in self._families():
            fill(family, snapshot, now)
            yield family

    @staticmethod
    def _families() -> list[tuple[GaugeMetricFamily, _Fill]]:
        def items(family: GaugeMetricFamily, s: Snapshot, _now: float) -> None:
            for state, count in s.items.items():
                family.add_metric([state.value], count)

        def oldest(family: GaugeMetricFamily, s: Snapshot, now: float) -> None:
            since = s.oldest_unfinished
            family.add_metric([], max(0.0, now - since.timestamp()) if since else 0.0)

        def retrying(family: GaugeMetricFamily, s: Snapshot, _now: float) -> None:
            family.add_metric([], s.retrying)

        def attempts(family: GaugeMetricFamily, s: Snapshot, _now: float) -> None:
            family.add_metric([], s.max_attempts)

        def states(family: GaugeMetricFamily, s: Snapshot, _now: float) -> None:
            for state, count in s.connections.items():
                family.add_metric([state.value], count)

        def expiry(family: GaugeMetricFamily, s: Snapshot, _now: float) -> None:
            if s.soonest_expiry is not None:
                family.add_metric([], s.soonest_expiry.timestamp())

        return [
            (
                GaugeMetricFamily(
                    "bridge_inbox_items",
                    "Inbox items not settled yet (pending, processing) or given up "
                    "on (dead), by state.",
                    labels=["state"],
                ),
                items,
            ),
            (
                GaugeMetricFamily(
                    "bridge_inbox_oldest_pending_age_seconds",
                    "Age of the oldest item not acted on yet (pending or "
                    "processing); 0 when there is none.",
                ),
                oldest,
            ),
            (
                GaugeMetricFamily(
                    "bridge_inbox_retrying_items",
                    "Pending items that have failed at least once.",
                ),
                retrying,
            ),
            (
                GaugeMetricFamily(
                    "bridge_inbox_max_attempts",
                    "The most attempts any pending item has had so far.",
                ),
                attempts,
            ),
            (
                GaugeMetricFamily(
                    "bridge_connections",
                    "Connections by state.",
                    labels=["state"],
                ),
                states,
            ),
            (
                GaugeMetricFamily(
                    "bridge_subscription_soonest_expiry_timestamp_seconds",
                    "When the first subscription of an active or pending connection "
                    "expires (Unix time); absent when there is none.",
                ),
                expiry,
            ),
        ]


class _ThisProcess(Collector):
    """This process's own metrics (the default registry), inside another registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(*extra: Collector) -> CollectorRegistry:
    """What one `/metrics` answer holds: this process's metrics, or with
    PROMETHEUS_MULTIPROC_DIR set those of every process sharing that directory
    (several processes on one machine), plus `extra`."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    for collector in extra:
        registry.register(collector)
    return registry
