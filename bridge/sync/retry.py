"""When to try again: exponential backoff with jitter, capped, and Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Each delay is drawn from [1 - JITTER, 1 + JITTER] times the exponential step, so
# that connections that failed together do not retry together.
JITTER = 0.25


@dataclass(frozen=True)
class Backoff:
    base_seconds: float
    max_seconds: float
    max_attempts: int

    def step(self, attempt: int) -> float:
        """The delay before try `attempt + 1`, before jitter."""
        # The exponent is capped first: 2**1024 does not fit a float.
        doublings = min(max(attempt - 1, 0), 64)
        return float(min(self.max_seconds, self.base_seconds * 2**doublings))

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after try number `attempt` (1-based) failed.

        A server's Retry-After is a floor: never sooner than it asked.
        """
        spread = (rng or random).uniform(1 - JITTER, 1 + JITTER)
        delay = self.step(attempt) * spread
        return max(delay, retry_after or 0.0)

    def shortest_span(self) -> float:
        """The least time from the first try to the last one: what the cap covers."""
        return sum(self.step(n) for n in range(1, self.max_attempts)) * (1 - JITTER)
