"""Every Graph and identity-authority call is counted by operation and answer,
throttles apart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bridge.graph._errors import Throttled
from bridge.graph.subscriptions import GraphClient, new_client_state
from bridge.graph.tokens import GraphTokens
from tests.fakes.authority import FakeAuthority
from tests.fakes.graph import FakeGraph
from tests.graph.conftest import LIFECYCLE, NOTIFY, USER
from tests.metrics_samples import sample

CALLS = "bridge_upstream_requests_total"
THROTTLES = "bridge_upstream_throttles_total"


def calls(upstream: str, operation: str, status: str) -> float:
    return sample(CALLS, upstream=upstream, operation=operation, status=status)


async def test_graph_calls_are_counted_and_a_429_is_a_throttle(
    client: GraphClient, graph: FakeGraph
) -> None:
    created = calls("graph", "create_subscription", "201")
    refused = calls("graph", "create_subscription", "429")
    throttles = sample(THROTTLES, upstream="graph", operation="create_subscription")
    expires = datetime.now(UTC) + timedelta(hours=1)
    resource = f"users/{USER}/events"

    graph.fail_next(429, retry_after="0", method="POST", path="/subscriptions")
    with pytest.raises(Throttled):
        await client.create_subscription(
            resource, NOTIFY, LIFECYCLE, expires, new_client_state()
        )
    await client.create_subscription(
        resource, NOTIFY, LIFECYCLE, expires, new_client_state()
    )

    assert calls("graph", "create_subscription", "429") - refused == 1
    assert calls("graph", "create_subscription", "201") - created == 1
    after = sample(THROTTLES, upstream="graph", operation="create_subscription")
    assert after - throttles == 1


async def test_identity_authority_calls_are_counted(
    authority: FakeAuthority, make_tokens: Callable[..., GraphTokens]
) -> None:
    tokens_before = calls("identity", "token", "200")
    discovery_before = calls("identity", "discovery", "200")

    await make_tokens().token()

    assert calls("identity", "token", "200") - tokens_before == 1
    assert calls("identity", "discovery", "200") - discovery_before >= 1
