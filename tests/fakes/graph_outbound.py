"""What the fake Graph sends to the bridge: validation handshakes, notifications."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.fakes.graph_state import FakeSubscription, Handshake

VALIDATION_FAILED = (
    "Subscription validation request failed. Notification endpoint must respond "
    "with 200 OK to validation request."
)
VALIDATION_TIMED_OUT = "Subscription validation request timed out."
HTTPS_REQUIRED = "Subscription notification URL must use https."
_LOCAL_PREFIXES = ("http://127.0.0.1", "http://localhost", "http://[::1]")


@contextlib.asynccontextmanager
async def outbound_client(
    given: httpx.AsyncClient | None,
) -> AsyncIterator[httpx.AsyncClient]:
    """The given client, or a fresh one trusting `SSL_CERT_FILE` like the bridge."""
    if given is not None:
        yield given
        return
    verify = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))
    async with httpx.AsyncClient(verify=verify) as client:
        yield client


async def validate(
    client: httpx.AsyncClient, url: str, within: float
) -> tuple[Handshake, str | None]:
    """Graph's handshake with one URL: the record, and the error when it failed."""
    token = (
        "Validation: Testing client application reachability for subscription "
        f"Request-Id: {uuid.uuid4()}"
    )
    record = Handshake(url=url, token=token)
    if url.startswith("http://") and not url.startswith(_LOCAL_PREFIXES):
        record.error = "not https"
        return record, HTTPS_REQUIRED
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        # The deadline is enforced here too: httpx.ASGITransport ignores timeouts.
        async with asyncio.timeout(within):
            # httpx encodes the spaces as "+", as Graph does: the bridge decodes.
            answer = await client.post(
                url,
                params={"validationToken": token},
                headers={"Content-Type": "text/plain; charset=utf-8"},
                content=b"",
                timeout=within,
            )
    except (TimeoutError, httpx.TimeoutException):
        record.error = "timed out"
        return record, VALIDATION_TIMED_OUT
    except httpx.HTTPError as error:
        record.error = repr(error)
        return record, VALIDATION_FAILED
    finally:
        record.seconds = loop.time() - started
    record.status = answer.status_code
    record.content_type = answer.headers.get("content-type")
    record.body = answer.text
    record.ok = (
        answer.status_code == 200
        and (record.content_type or "").startswith("text/plain")
        and answer.text == token
    )
    return record, None if record.ok else VALIDATION_FAILED


def change_notification(
    subscription: FakeSubscription,
    tenant_id: str,
    change_type: str,
    event_id: str,
) -> dict[str, Any]:
    """One item of a change-notification collection, as Outlook sends it."""
    user = subscription.resource.split("/")[1] if "/" in subscription.resource else ""
    return {
        "subscriptionId": subscription.id,
        "subscriptionExpirationDateTime": subscription.to_graph(with_secret=False)[
            "expirationDateTime"
        ],
        "changeType": change_type,
        "resource": f"Users/{user}/Events/{event_id}",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": f"Users/{user}/Events/{event_id}",
            "@odata.etag": f'W/"{uuid.uuid4().hex}"',
            "id": event_id,
        },
        "clientState": subscription.client_state,
        "tenantId": tenant_id,
    }


def lifecycle_notification(
    subscription: FakeSubscription, tenant_id: str, event: str
) -> dict[str, Any]:
    return {
        "subscriptionId": subscription.id,
        "subscriptionExpirationDateTime": subscription.to_graph(with_secret=False)[
            "expirationDateTime"
        ],
        "tenantId": tenant_id,
        "clientState": subscription.client_state,
        "lifecycleEvent": event,
    }
