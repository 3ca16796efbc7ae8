"""Prometheus metrics, defined once and shared by every module that counts."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, disable_created_metrics

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
