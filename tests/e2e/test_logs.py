"""The log of a real `bridge serve` through a busy day: JSON lines, labelled with
the request, connection and inbox items they are about, and never a secret."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.harness import ADMIN_TOKEN, Bridge, next_second
from tests.fakes.nexudus import PASSWORD

SECOND_USER = "bruno@contoso.test"
WRONG_ADMIN_TOKEN = "not-the-admin-token-" + "z" * 24
FORGED_CLIENT_STATE = "forged-client-state-" + "q" * 40
# A bearer credential or a validation token that made it into a line unredacted.
_UNREDACTED = re.compile(
    r"(?i)(bearer\s+(?!\[redacted\])[A-Za-z0-9\-._~+/]{8,}"
    r"|validationToken=(?!\[redacted\])[^&\s\"']+)"
)


async def test_no_log_line_holds_a_secret(bridge: Bridge) -> None:
    fakes = bridge.fakes
    fakes.graph.add_mailbox(SECOND_USER)
    # Debug: the level where libraries say the most.
    await bridge.start(BRIDGE_LOG_LEVEL="debug")
    outputs: list[str] = []

    first = await bridge.connect()
    connected = await bridge.cli(
        "connect", "--resource-id", "8", "--user", SECOND_USER, "--json"
    )
    assert connected.status == 0, connected.stderr
    outputs += [connected.stdout, connected.stderr]
    second: dict[str, Any] = json.loads(connected.stdout)
    refused = await bridge.http.get(
        f"{bridge.url}/admin/connections",
        headers={"Authorization": f"Bearer {WRONG_ADMIN_TOKEN}"},
    )
    assert refused.status_code == 401

    subscription = bridge.subscription(first["subscription_id"])
    for _ in range(3):
        assert (await bridge.post(bridge.change(subscription))).status_code == 202
    forged = bridge.change(subscription)
    forged["value"][0]["clientState"] = FORGED_CLIENT_STATE
    forged_answer = await bridge.post(forged)
    assert forged_answer.status_code == 202
    # Tokens die early and a call fails: new tokens, a retry.
    fakes.nexudus.revoke_access_tokens()
    fakes.authority.revoke_tokens()
    fakes.nexudus.fail_next(1, 500)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await bridge.update_connection(first["id"], renewed_at=an_hour_ago)
    await next_second()
    renew = bridge.lifecycle(subscription, "reauthorizationRequired")
    assert (await bridge.post(renew, "/graph/lifecycle")).status_code == 202
    await bridge.settled()
    removed = bridge.subscription(second["subscription_id"])
    del fakes.graph.subscriptions[removed.id]
    gone = bridge.lifecycle(removed, "subscriptionRemoved")
    assert (await bridge.post(gone, "/graph/lifecycle")).status_code == 202
    items = await bridge.settled()
    assert {item["state"] for item in items} == {"done"}
    doctor = await bridge.cli("doctor")
    outputs += [doctor.stdout, doctor.stderr]
    await bridge.terminate()

    served = [line for log in bridge.logs for line in log.read_text().splitlines()]
    lines = [*served, *(line for text in outputs for line in text.splitlines())]
    connections = [await bridge.connection(c["id"]) for c in (first, second)]
    client_states = {
        *(s.client_state for s in fakes.graph.subscriptions.values()),
        removed.client_state,
        *(c.client_state for c in connections),
        FORGED_CLIENT_STATE,
    }
    validation_tokens = {h.token for h in fakes.graph.handshakes}
    secrets = {
        "GRAPH_CLIENT_SECRET": {fakes.authority.client_secret},
        "NEXUDUS_PASSWORD": {PASSWORD},
        "admin token": {ADMIN_TOKEN, WRONG_ADMIN_TOKEN},
        "clientState": {state for state in client_states if state},
        "validation token": {
            *validation_tokens,
            *(token.rpartition(" ")[2] for token in validation_tokens),
        },
        "Graph access token": set(fakes.authority.issued_tokens),
        "Nexudus token": set(fakes.nexudus.issued_tokens),
    }
    # The scan means something only if the secrets were there to leak.
    assert len(secrets["clientState"]) >= 4
    assert len(secrets["validation token"]) >= 12
    assert len(secrets["Graph access token"]) >= 2
    assert len(secrets["Nexudus token"]) >= 4
    leaks = [
        f"{what} in: {line}"
        for line in lines
        for what, values in secrets.items()
        if any(value in line for value in values)
    ]
    leaks += [
        f"unredacted credential in: {line}"
        for line in lines
        if _UNREDACTED.search(line)
    ]
    assert leaks == []

    records = [json.loads(line) for line in served]
    assert len(records) > 30
    mismatch = [r for r in records if r["event"].startswith("clientState mismatch")]
    assert [r["request_id"] for r in mismatch] == [forged_answer.headers["request-id"]]
    acted = [r for r in records if "item_ids" in r]
    assert {r["connection_id"] for r in acted} == {first["id"], second["id"]}
    assert any(r["event"] == "action failed; will retry" for r in acted)
