"""Graph's limits as one client keeps them: Retry-After and mailbox concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable

from bridge.graph._errors import Throttled

logger = logging.getLogger(__name__)

# Outlook allows 4 concurrent requests per mailbox per app; more are answered 429.
MAILBOX_CONCURRENCY = 4


class Limits:
    """A "not before" gate set by Retry-After, and a semaphore per mailbox.

    The gate is per client rather than per mailbox: a 429 on /subscriptions may
    count against the whole app, and holding everything back briefly is cheap.
    A call that meets a closed gate is not queued: it raises `Throttled` with
    the time left, so the caller's own retry schedule decides what happens.
    """

    def __init__(
        self,
        per_mailbox: int = MAILBOX_CONCURRENCY,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_mailbox = per_mailbox
        self._clock = clock
        self._not_before = 0.0
        # Weak values: a mailbox nobody is calling needs no semaphore.
        self._slots: weakref.WeakValueDictionary[str, asyncio.Semaphore] = (
            weakref.WeakValueDictionary()
        )

    @property
    def wait_left(self) -> float:
        return max(0.0, self._not_before - self._clock())

    def check(self) -> None:
        """Raise `Throttled` if Graph asked us to wait and the time is not up."""
        left = self.wait_left
        if left > 0:
            raise Throttled(
                f"Graph asked to wait; {left:.1f}s left before the next request",
                retry_after=left,
            )

    def hold_off(self, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._not_before:
            logger.warning("Graph asked to wait %.1fs before the next request", seconds)
            self._not_before = until

    @contextlib.asynccontextmanager
    async def slot(self, mailbox: str | None) -> AsyncIterator[None]:
        """Hold one of the mailbox's concurrent-request slots (none if unknown)."""
        if mailbox is None:
            yield
            return
        semaphore = self._slots.get(mailbox)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self._per_mailbox)
            self._slots[mailbox] = semaphore
        async with semaphore:
            yield
