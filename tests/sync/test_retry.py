"""Backoff: exponential, capped, jittered, Retry-After as a floor; and long enough."""

from __future__ import annotations

import random

import hypothesis
import pytest
from hypothesis import strategies as st

from bridge.settings import Settings
from bridge.sync.retry import JITTER, Backoff

DAY = 24 * 3600.0
BACKOFF = Backoff(base_seconds=5.0, max_seconds=900.0, max_attempts=140)


class Lowest(random.Random):
    """Always the shortest delay the jitter allows."""

    def uniform(self, a: float, b: float) -> float:
        return min(a, b)


def default_backoff() -> Backoff:
    settings = Settings()  # the environment is cleared by the autouse fixture
    return Backoff(
        settings.retry_base_seconds,
        settings.retry_max_seconds,
        settings.max_attempts,
    )


def test_the_defaults_keep_a_failing_item_alive_for_a_day() -> None:
    backoff = default_backoff()
    assert backoff.shortest_span() >= DAY
    # The same, from the delays themselves: every retry as early as jitter allows,
    # from the first try until the last one (the one that goes dead).
    waits = [
        backoff.delay(attempt, rng=Lowest())
        for attempt in range(1, backoff.max_attempts)
    ]
    assert sum(waits) >= DAY
    assert sum(waits) == pytest.approx(backoff.shortest_span())


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    steps = [BACKOFF.step(attempt) for attempt in range(1, 12)]
    assert steps == [5, 10, 20, 40, 80, 160, 320, 640, 900, 900, 900]


@hypothesis.settings(max_examples=50)
@hypothesis.given(
    attempt=st.integers(min_value=1, max_value=1000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delays_stay_within_the_jitter_bounds(attempt: int, seed: int) -> None:
    step = BACKOFF.step(attempt)
    delay = BACKOFF.delay(attempt, rng=random.Random(seed))
    assert step * (1 - JITTER) <= delay <= step * (1 + JITTER)
    assert delay <= BACKOFF.max_seconds * (1 + JITTER)


def test_jitter_spreads_retries_over_the_whole_range() -> None:
    rng = random.Random(1)
    delays = [BACKOFF.delay(3, rng=rng) for _ in range(200)]
    step = BACKOFF.step(3)
    assert min(delays) < step * (1 - JITTER / 2)
    assert max(delays) > step * (1 + JITTER / 2)


def test_delays_are_capped_however_many_attempts() -> None:
    backoff = Backoff(base_seconds=5.0, max_seconds=900.0, max_attempts=5000)
    assert backoff.delay(1025, rng=random.Random(0)) <= 900 * (1 + JITTER)
    assert backoff.shortest_span() > 0


def test_retry_after_is_a_floor() -> None:
    hour = 3600.0
    assert BACKOFF.delay(1, retry_after=hour, rng=random.Random(0)) == hour
    assert BACKOFF.delay(20, retry_after=hour, rng=random.Random(0)) == hour
    # A Retry-After shorter than the backoff changes nothing.
    for retry_after in (None, 0.0, 1.0):
        assert BACKOFF.delay(
            8, retry_after=retry_after, rng=random.Random(5)
        ) == BACKOFF.delay(8, rng=random.Random(5))
