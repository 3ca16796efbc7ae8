"""Pacing of calls to Nexudus, and the Retry-After gate.

Nexudus limits each client (1 call per 100 ms, 60 writes per minute, ...) and
answers 409 when a limit is hit. The pacer spaces calls out so that the bridge
seldom meets a 409, and once one arrives it holds every call until the time
the server named.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "Pacer", "SystemClock"]

WRITE_WINDOW = 60.0


class Clock(Protocol):
    """Time as the client sees it; tests substitute a virtual one."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Pacer:
    """Hands out send times: spaced by `min_interval`, writes capped per minute.

    Slots are reserved in order without holding a lock, so concurrent callers
    queue fairly. `hold_until` moves a gate that no call passes before its time.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        min_interval: float = 0.1,
        writes_per_minute: int | None = 60,
    ) -> None:
        if min_interval < 0:
            raise ValueError("min_interval must not be negative")
        if writes_per_minute is not None and writes_per_minute < 1:
            raise ValueError("writes_per_minute must be at least 1 (or None)")
        self._clock = clock
        self._min_interval = min_interval
        self._next_slot = -math.inf
        self._not_before = -math.inf
        self._writes: deque[float] | None = (
            deque(maxlen=writes_per_minute) if writes_per_minute else None
        )

    @property
    def not_before(self) -> float:
        """Monotonic time before which no call goes out (-inf when open)."""
        return self._not_before

    def hold_until(self, monotonic_time: float) -> None:
        self._not_before = max(self._not_before, monotonic_time)

    def hold_for(self, seconds: float) -> None:
        self.hold_until(self._clock.monotonic() + seconds)

    async def acquire(self, *, write: bool) -> None:
        """Wait until this call may go out, then return."""
        while True:
            at = self._reserve(write)
            while (now := self._clock.monotonic()) < at:
                await self._clock.sleep(at - now)
            # A throttle may have arrived while we slept; its gate wins.
            if self._clock.monotonic() >= self._not_before:
                return

    def _reserve(self, write: bool) -> float:
        at = max(self._clock.monotonic(), self._next_slot, self._not_before)
        writes = self._writes
        if write and writes is not None:
            if len(writes) == writes.maxlen:
                at = max(at, writes[0] + WRITE_WINDOW)
            writes.append(at)
        self._next_slot = at + self._min_interval
        return at
