"""GroupCommit's time limits: one watchdog timer for all waiting calls.

The stores' contract suite checks a stalled write against real SQLite and Redis; these tests
drive the timing cases with a write that finishes only when the test says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from catbot.models import InboundDM
from catbot.store.group_commit import Call, GroupCommit

T0 = 1_750_000_000.0


def dm(event_id: str) -> InboundDM:
    return InboundDM(event_id, "42", "1000", "1000", "hi", T0)


class HeldWrite:
    """A batch write that completes when released; records every batch it was given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self, batch: Sequence[Call]) -> list[list[bool]]:
        self.batches.append([e.event_id for events, _ in batch for e in events])
        self.entered.set()
        await self.gate.wait()
        return [[True] * len(events) for events, _ in batch]


async def test_a_shorter_limit_after_a_longer_one_expires_on_time() -> None:
    write = HeldWrite()
    gc = GroupCommit(write, 100)
    long_wait = asyncio.ensure_future(gc.submit([dm("a")], T0, time_limit=30))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await gc.submit([dm("b")], T0, time_limit=0.2)
    assert time.monotonic() - started < 1.0
    assert not long_wait.done()
    write.gate.set()
    assert await long_wait == [True]


async def test_the_limit_counts_the_time_queued_behind_another_write() -> None:
    write = HeldWrite()
    gc = GroupCommit(write, 100)
    first = asyncio.ensure_future(gc.submit([dm("a")], T0))
    await asyncio.wait_for(write.entered.wait(), 1)
    assert write.batches == [["a"]]
    # "b" waits for the next write, which cannot start before "a"'s ends.
    with pytest.raises(TimeoutError, match=r"0\.2 s"):
        await gc.submit([dm("b")], T0, time_limit=0.2)
    write.gate.set()
    assert await first == [True]
    await gc.drain()
    # The timed-out call's events were still written (at-least-once), after "a".
    assert write.batches == [["a"], ["b"]]


async def test_after_answered_calls_expire_unnoticed_a_new_limit_still_fires() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    write = HeldWrite()
    write.gate.set()
    gc = GroupCommit(write, 100)
    results = await asyncio.gather(*(gc.submit([dm(str(n))], T0, time_limit=0.1)
                                     for n in range(50)))
    assert results == [[True]] * 50
    await asyncio.sleep(0.2)  # past every deadline: the watchdog fires and finds nothing due
    assert errors == []
    # A later call whose write stalls gets its own deadline, though the old one has passed.
    write.gate.clear()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gc.submit([dm("late")], T0, time_limit=0.2), 5)
    assert time.monotonic() - started < 1.0
    write.gate.set()
    await gc.drain()
    assert errors == []


async def test_a_cancelled_caller_leaves_the_others_and_the_watchdog_alone() -> None:
    write = HeldWrite()
    gc = GroupCommit(write, 100)
    gone = asyncio.ensure_future(gc.submit([dm("a")], T0, time_limit=0.1))
    stays = asyncio.ensure_future(gc.submit([dm("b")], T0, time_limit=0.3))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0.15)  # the watchdog fires for "a", which is gone: nothing happens
    assert not stays.done()
    await asyncio.wait({stays}, timeout=2)  # bounded: a broken watchdog would never answer
    assert stays.done() and isinstance(stays.exception(), TimeoutError)
    write.gate.set()
    await gc.drain()
    assert write.batches == [["a", "b"]]
