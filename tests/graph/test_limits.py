"""The not-before gate and the per-mailbox semaphore, with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from bridge.graph._errors import Throttled
from bridge.graph._limits import Limits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_gate_closes_for_the_longest_hold_off_and_reopens() -> None:
    clock = Clock()
    limits = Limits(clock=clock)
    limits.check()

    limits.hold_off(10)
    limits.hold_off(3)  # a shorter wait never shortens the gate
    clock.now += 4
    with pytest.raises(Throttled) as caught:
        limits.check()
    assert caught.value.retry_after == pytest.approx(6)

    clock.now += 6
    limits.check()
    assert limits.wait_left == 0


async def test_slots_are_per_mailbox() -> None:
    limits = Limits(per_mailbox=2)
    inside: dict[str | None, int] = {"a": 0, "b": 0, None: 0}
    most: dict[str | None, int] = {"a": 0, "b": 0, None: 0}

    async def visit(mailbox: str | None) -> None:
        async with limits.slot(mailbox):
            inside[mailbox] += 1
            most[mailbox] = max(most[mailbox], inside[mailbox])
            await asyncio.sleep(0.01)
            inside[mailbox] -= 1

    await asyncio.gather(*(visit(m) for m in ["a", "b", None] * 5))

    assert most["a"] == 2
    assert most["b"] == 2
    assert most[None] == 5
