"""The upstream clients, built from the settings; what is not configured is missing.

Work that needs a missing upstream waits in the inbox (`Unconfigured`), it does not
fail: the operator sets the variables and restarts, and the backlog drains.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.graph.subscriptions import GraphClient
from bridge.graph.tokens import GraphTokens
from bridge.nexudus import NexudusClient
from bridge.settings import Capability, Settings


class Unconfigured(Exception):
    """A capability the work needs is not configured; the message names what to set."""

    def __init__(self, capability: Capability, missing: list[str]) -> None:
        super().__init__(f"{', '.join(missing)} not set")
        self.capability = capability


@dataclass
class Upstreams:
    settings: Settings
    nexudus_client: NexudusClient | None
    graph_client: GraphClient | None
    graph_tokens: GraphTokens | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Upstreams:
        s = settings
        nexudus = graph = tokens = None
        if s.nexudus_username and s.nexudus_password:
            nexudus = NexudusClient(
                s.nexudus_api_url,
                s.nexudus_username,
                s.nexudus_password.get_secret_value(),
                s.nexudus_client_id,
            )
        if s.graph_tenant_id and s.graph_client_id and s.graph_client_secret:
            tokens = GraphTokens(
                s.graph_tenant_id,
                s.graph_client_id,
                s.graph_client_secret.get_secret_value(),
                s.graph_authority_url,
                s.graph_scope,
            )
            graph = GraphClient(s.graph_api_url, tokens)
        return cls(settings, nexudus, graph, tokens)

    def _unconfigured(self, capability: Capability) -> Unconfigured:
        return Unconfigured(capability, self.settings.missing(capability))

    @property
    def nexudus(self) -> NexudusClient:
        if self.nexudus_client is None:
            raise self._unconfigured("nexudus")
        return self.nexudus_client

    @property
    def graph(self) -> GraphClient:
        if self.graph_client is None:
            raise self._unconfigured("graph")
        return self.graph_client

    def subscription_urls(self) -> tuple[str, str]:
        """The notification and lifecycle URLs that new subscriptions are given."""
        notification, lifecycle = (
            self.settings.notification_url,
            self.settings.lifecycle_url,
        )
        if notification is None or lifecycle is None:
            raise self._unconfigured("public_url")
        return notification, lifecycle

    async def __aenter__(self) -> Upstreams:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.nexudus_client is not None:
            await self.nexudus_client.aclose()
        if self.graph_client is not None:
            await self.graph_client.aclose()
        if self.graph_tokens is not None:
            self.graph_tokens.close()
