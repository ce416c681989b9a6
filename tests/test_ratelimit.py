"""RateGate (shared 429 gate with a single probe) and SendBudget (sliding windows), driven by
a fake clock whose sleep advances time instantly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catbot.outbox.ratelimit import RateGate, SendBudget, SharedSendBudget, WaitTooLong


class FakeClock:
    """`now()` is the fake time; `sleep(d)` yields once then moves time to at least now + d.

    Concurrent sleepers with the same deadline do not add up (time is shared, like a real
    clock), and every sleep yields control so other tasks run.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        target = self.t + seconds
        await asyncio.sleep(0)
        self.t = max(self.t, target)


async def settle(rounds: int = 200) -> None:
    """Let every runnable task run until nothing changes (bounded)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def step_until(condition: Callable[[], bool], limit: int = 10_000) -> None:
    """Yield to the other tasks one step at a time until `condition` holds."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def gate_with(clock: FakeClock, jitter: float = 0.0) -> RateGate:
    return RateGate(clock=clock.now, sleep=clock.sleep, jitter=lambda: jitter)


# RateGate -------------------------------------------------------------------------------


async def test_open_gate_lets_requests_through_at_once() -> None:
    clock = FakeClock()
    gate = gate_with(clock)
    assert not gate.is_closed
    for _ in range(5):
        assert await gate.acquire() == (False, 0.0)
    assert clock.sleeps == []


async def test_gate_closed_until_reset_plus_jitter() -> None:
    clock = FakeClock(start=1_000.0)
    gate = gate_with(clock, jitter=0.75)
    reset = clock.t + 30.0
    gate.close(reset)
    assert gate.is_closed
    assert gate.closed_until == reset + 0.75
    is_probe, waited = await gate.acquire()
    assert is_probe is True
    assert clock.t == reset + 0.75
    assert waited == pytest.approx(30.75)
    # Never more than a one-second nap, so a later 429 can extend the wait.
    assert max(clock.sleeps) <= 1.0
    assert sum(clock.sleeps) == pytest.approx(30.75)


async def test_default_jitter_is_small_and_positive() -> None:
    clock = FakeClock()
    for _ in range(50):
        gate = RateGate(clock=clock.now, sleep=clock.sleep)
        gate.close(clock.t + 10)
        extra = gate.closed_until - (clock.t + 10)
        assert 0.2 <= extra <= 1.5


async def test_close_never_shortens_the_wait() -> None:
    clock = FakeClock()
    gate = gate_with(clock, jitter=0.5)
    gate.close(clock.t + 100)
    late = gate.closed_until
    gate.close(clock.t + 10)
    assert gate.closed_until == late


async def test_later_close_while_waiting_extends_the_wait() -> None:
    clock = FakeClock(start=0.0)
    gate = gate_with(clock)
    gate.close(10.0)
    task = asyncio.create_task(gate.acquire())
    await step_until(lambda: clock.t >= 5.0)
    assert not task.done()
    gate.close(40.0)
    is_probe, waited = await task
    assert is_probe
    assert clock.t == 40.0
    assert waited == pytest.approx(40.0)


async def test_close_in_the_past_still_requires_a_probe() -> None:
    clock = FakeClock()
    gate = gate_with(clock)
    gate.close(clock.t - 100)  # a reset time already gone (or a 429 without headers)
    assert gate.is_closed
    first = await gate.acquire()
    assert first == (True, 0.0)
    waiter = asyncio.create_task(gate.acquire())
    await settle()
    assert not waiter.done()
    gate.release(True, passed=True)
    assert await waiter == (False, 0.0)
    assert not gate.is_closed


async def test_after_reopening_exactly_one_probe_goes_and_others_wait() -> None:
    clock = FakeClock(start=0.0)
    gate = gate_with(clock, jitter=0.25)
    gate.close(20.0)
    tasks = [asyncio.create_task(gate.acquire()) for _ in range(5)]
    await settle()
    # Time has reached the reopening; exactly one task is through, as the probe.
    assert clock.t >= 20.25
    done = [t for t in tasks if t.done()]
    assert len(done) == 1
    is_probe, waited = done[0].result()
    assert is_probe is True
    assert waited >= 20.25
    assert gate.is_closed  # still closed to everyone else until the probe passes
    # The rest keep waiting for as long as the probe is out.
    clock.t += 1_000
    await settle()
    assert [t.done() for t in tasks].count(True) == 1

    gate.release(True, passed=True)
    await settle()
    assert all(t.done() for t in tasks)
    results = [t.result() for t in tasks]
    assert [r[0] for r in results].count(True) == 1
    assert not gate.is_closed
    # ...and later requests go straight through.
    assert (await gate.acquire())[0] is False


async def test_failed_probe_hands_probing_to_the_next_waiter() -> None:
    clock = FakeClock(start=0.0)
    gate = gate_with(clock)
    gate.close(5.0)
    tasks = [asyncio.create_task(gate.acquire()) for _ in range(4)]
    await settle()
    first = [t for t in tasks if t.done()]
    assert len(first) == 1 and first[0].result()[0] is True

    # The probe failed without a new reset time: the next waiter probes, the rest wait.
    gate.release(True, passed=False)
    await settle()
    done = [t for t in tasks if t.done()]
    assert len(done) == 2
    second = next(t for t in done if t is not first[0])
    assert second.result()[0] is True
    assert gate.is_closed

    # That probe passes: everybody else goes, not as a probe.
    gate.release(True, passed=True)
    await settle()
    assert all(t.done() for t in tasks)
    others = [t.result() for t in tasks if t not in (first[0], second)]
    assert len(others) == 2
    assert all(is_probe is False for is_probe, _ in others)


async def test_failed_probe_with_new_429_closes_again_for_everyone() -> None:
    clock = FakeClock(start=0.0)
    gate = gate_with(clock)
    gate.close(5.0)
    tasks = [asyncio.create_task(gate.acquire()) for _ in range(3)]
    await settle()
    probe = next(t for t in tasks if t.done())
    assert probe.result()[0] is True
    # The probe got another 429 with a later reset.
    gate.close(60.0)
    gate.release(True, passed=False)
    await settle(20)
    waiting = [t for t in tasks if not t.done()]
    assert len(waiting) == 2
    # Nobody gets through before the new reset.
    await step_until(lambda: sum(t.done() for t in tasks) > 1)
    assert clock.t >= 60.0
    await settle()
    assert len([t for t in tasks if t.done()]) == 2  # exactly one new probe
    gate.release(True, passed=True)
    await settle()
    assert all(t.done() for t in tasks)


async def test_non_probe_release_changes_nothing() -> None:
    clock = FakeClock()
    gate = gate_with(clock)
    gate.close(clock.t + 1)
    probe = await gate.acquire()
    assert probe[0] is True
    gate.release(False, passed=True)  # someone else's ordinary request finishing
    waiter = asyncio.create_task(gate.acquire())
    await settle()
    assert not waiter.done()
    gate.release(True, passed=True)
    assert (await waiter)[0] is False


async def test_gate_can_close_again_after_recovering() -> None:
    clock = FakeClock(start=0.0)
    gate = gate_with(clock)
    for round_ in range(3):
        reset = clock.t + 10
        gate.close(reset)
        is_probe, _ = await gate.acquire()
        assert is_probe, round_
        assert clock.t >= reset
        gate.release(True, passed=True)
        assert not gate.is_closed
        assert (await gate.acquire())[0] is False


async def test_gate_closed_longer_than_the_caller_waits_says_until_when() -> None:
    clock = FakeClock(start=1_000.0)
    gate = gate_with(clock, jitter=0.5)
    gate.close(clock.t + 900.0)
    with pytest.raises(WaitTooLong) as raised:
        await gate.acquire(max_wait=10.0)
    assert raised.value.until == gate.closed_until == 1_000.0 + 900.0 + 0.5
    # It waited for nothing and holds no slot; a short closure is still waited out.
    assert (clock.sleeps, gate.in_flight) == ([], 0)
    gate = gate_with(clock)
    gate.close(clock.t + 5.0)
    assert (await gate.acquire(max_wait=10.0))[0] is True


async def test_gate_whose_window_is_used_up_says_until_its_reset() -> None:
    clock = FakeClock(start=0.0)
    gate = gate_with(clock)
    # X said one remains until t=600; a request that failed without headers spent it.
    gate.release(False, True, remaining=1, reset_at=600.0)
    gate.release(False, False)
    with pytest.raises(WaitTooLong) as raised:
        await gate.acquire(max_wait=10.0)
    assert raised.value.until == 600.0
    assert gate.in_flight == 0


async def test_waiters_behind_a_probe_that_meets_a_long_429_give_up() -> None:
    clock = FakeClock(start=0.0)
    gate = gate_with(clock)
    gate.require_probe()
    assert (await gate.acquire(max_wait=10.0))[0] is True
    waiter = asyncio.ensure_future(gate.acquire(max_wait=10.0))
    await settle()
    assert not waiter.done()
    gate.close(900.0)
    gate.release(True, False)
    with pytest.raises(WaitTooLong):
        await waiter


# SendBudget -------------------------------------------------------------------------------


def budget_with(clock: FakeClock, windows: dict[float, int]) -> SendBudget:
    return SendBudget(windows, clock=clock.now, sleep=clock.sleep)


async def test_budget_under_limit_does_not_wait() -> None:
    clock = FakeClock(start=0.0)
    budget = budget_with(clock, {10.0: 3})
    for _ in range(3):
        assert await budget.reserve() == 0.0
    assert clock.t == 0.0
    assert clock.sleeps == []


async def test_a_send_with_room_reports_no_wait_however_the_clock_moves() -> None:
    # A real clock moves between any two readings: queueing for the lock, or a shared
    # budget's round trip to Redis, must not count as a "budget" pause.
    ticks = iter(range(1000))

    def moving() -> float:
        return float(next(ticks))

    async def take_slot(windows: dict[float, int]) -> float:
        return 0.0

    local = SendBudget({10.0: 3}, clock=moving)
    shared = SharedSendBudget({10.0: 3}, take_slot, clock=moving)
    for budget in (local, shared):
        assert [await budget.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]


async def test_fourth_reserve_waits_until_the_first_leaves_the_window() -> None:
    clock = FakeClock(start=0.0)
    budget = budget_with(clock, {10.0: 3})
    first_at = clock.t
    await budget.reserve()
    clock.t = 2.0
    await budget.reserve()
    clock.t = 4.0
    await budget.reserve()
    waited = await budget.reserve()
    assert clock.t == first_at + 10.0
    assert waited == pytest.approx(first_at + 10.0 - 4.0)
    # The 5th waits for the second send to leave, and so on.
    await budget.reserve()
    assert clock.t == 2.0 + 10.0
    await budget.reserve()
    assert clock.t == 4.0 + 10.0


async def test_budget_room_later_than_the_caller_waits_takes_nothing() -> None:
    clock = FakeClock(start=0.0)
    budget = budget_with(clock, {900.0: 2})
    await budget.reserve(max_wait=10.0)
    clock.t = 5.0
    await budget.reserve(max_wait=10.0)
    with pytest.raises(WaitTooLong) as raised:
        await budget.reserve(max_wait=10.0)
    assert raised.value.until == 900.0
    assert clock.sleeps == []
    clock.t = 895.0  # room in 5 s: waited out
    assert await budget.reserve(max_wait=10.0) == pytest.approx(5.0)


async def test_shared_budget_room_later_than_the_caller_waits_takes_nothing() -> None:
    clock = FakeClock(start=0.0)
    answers = [0.0, 700.0, 3.0, 0.0]
    asked: list[dict[float, int]] = []

    async def take_slot(windows: dict[float, int]) -> float:
        asked.append(windows)
        return answers.pop(0)

    budget = SharedSendBudget({900.0: 1}, take_slot, clock=clock.now, sleep=clock.sleep)
    assert await budget.reserve(max_wait=10.0) == 0.0
    with pytest.raises(WaitTooLong) as raised:
        await budget.reserve(max_wait=10.0)
    assert raised.value.until == 700.0
    assert await budget.reserve(max_wait=10.0) == 3.0
    assert asked == [{900.0: 1}] * 4


async def test_concurrent_reserves_are_serialised() -> None:
    clock = FakeClock(start=0.0)
    budget = budget_with(clock, {10.0: 3})
    finished: list[float] = []

    async def one() -> None:
        await budget.reserve()
        finished.append(clock.t)

    await asyncio.gather(*(one() for _ in range(7)))
    assert sorted(finished) == [0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 20.0]


async def test_two_windows_combined() -> None:
    clock = FakeClock(start=0.0)
    short, long_ = 10.0, 100.0
    budget = budget_with(clock, {short: 3, long_: 5})
    times = []
    for _ in range(9):
        await budget.reserve()
        times.append(clock.t)
    # 3 at once; the short window then lets 2 more at t=10 (the long one is now full);
    # the long window opens when the first sends leave it, the short one caps that at 3;
    # the 9th needs the t=10 sends to leave the long window.
    assert times == [0.0, 0.0, 0.0, short, short, long_, long_, long_, short + long_]


async def test_old_sends_outside_window_do_not_count() -> None:
    clock = FakeClock(start=0.0)
    budget = budget_with(clock, {10.0: 2})
    await budget.reserve()
    await budget.reserve()
    clock.t = 50.0
    assert await budget.reserve() == 0.0
    assert await budget.reserve() == 0.0
    await budget.reserve()
    assert clock.t == 60.0


def reference_schedule(
    windows: dict[int, int], arrivals: list[int]
) -> list[int]:
    """Independent model: each send happens at the earliest time >= its arrival (and the
    previous send) at which every window holds fewer than its allowance of sends in
    (t - w, t]."""
    sent: list[int] = []
    clock = 0
    for arrival in arrivals:
        clock = max(clock, arrival)
        candidates = sorted({clock} | {s + w for s in sent for w in windows if s + w > clock})
        for t in candidates:
            if all(sum(1 for s in sent if s > t - w) < n for w, n in windows.items()):
                clock = t
                break
        sent.append(clock)
    return sent


@given(
    windows=st.dictionaries(
        st.integers(min_value=1, max_value=50), st.integers(min_value=1, max_value=4),
        min_size=1, max_size=3,
    ),
    gaps=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=15),
)
@settings(max_examples=150, deadline=None)
def test_budget_matches_reference_model(windows: dict[int, int], gaps: list[int]) -> None:
    arrivals = []
    t = 0
    for gap in gaps:
        t += gap
        arrivals.append(t)
    expected = reference_schedule(windows, arrivals)

    async def scenario() -> list[float]:
        clock = FakeClock(start=0.0)
        budget = budget_with(clock, {float(w): n for w, n in windows.items()})
        out = []
        for arrival in arrivals:
            clock.t = max(clock.t, float(arrival))
            before = clock.t
            waited = await budget.reserve()
            assert waited == pytest.approx(clock.t - before)
            out.append(clock.t)
        return out

    actual = asyncio.run(scenario())
    assert actual == [float(x) for x in expected]
    # And the schedule really respects every window.
    for w, n in windows.items():
        for i, t_i in enumerate(actual):
            assert sum(1 for s in actual[: i + 1] if s > t_i - w) <= n
