"""The outbox under X's DM rate limit: replies leave at exactly the allowed rate, with no
call wasted on a 429 (issue 7).

The race this guards against: several workers have sends in flight when the answer saying
`x-rate-limit-remaining: 0` comes back; each of those sends then costs a 429. The gate must
count requests in flight against what X said remains, and probe first while it knows
nothing.

Most tests drive `Outbox.deliver` with several worker tasks against a fake X (a fixed
window starting at its first counted request, like the emulator's) whose requests and
answers take time on a virtual clock, so answers come back late and out of order. The last
test runs the real daemon against the real emulator with many workers and slow answers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from catbot.brain import Policy
from catbot.models import InboundDM
from catbot.observability import Metrics
from catbot.outbox import Outbox, OutboxSettings
from catbot.outbox.ratelimit import DM, POST, Allowance, RateGate, SendBudget, WaitTooLong
from catbot.x.dm import RateLimited, SentDM, TransientSendError
from testkit.processes import BOT_ID, BotAndX, Daemon, Emulator, free_port, wait_for

# A virtual clock ---------------------------------------------------------------------------


class VirtualClock:
    """Time moves only when every task is idle, to the earliest deadline anyone sleeps to.

    Unlike a clock whose sleeps finish at once, a one-second nap here does not overtake an
    answer due in 10 ms: events happen in the order of their times.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.t + seconds, next(self._seq), future))
        await future

    async def run(self, main: Awaitable[Any], real_timeout: float = 20.0) -> Any:
        task = asyncio.ensure_future(main)
        deadline = time.monotonic() + real_timeout
        while not task.done():
            assert time.monotonic() < deadline, "stuck: no progress in real time"
            for _ in range(50):  # let everything runnable run
                await asyncio.sleep(0)
                if task.done():
                    break
            while self._timers and self._timers[0][2].done():  # cancelled sleeps
                heapq.heappop(self._timers)
            if task.done():
                break
            if self._timers:
                at, _, future = heapq.heappop(self._timers)
                self.t = max(self.t, at)
                future.set_result(None)
            else:
                # Only real-time waits left (tenacity's retry pauses): let them pass.
                await asyncio.sleep(0.001)
        return task.result()


# A fake X ----------------------------------------------------------------------------------


class FakeX:
    """X's DM endpoint with a fixed window opened by the first request counted in it.

    A request travels `up` seconds before X counts it and its answer `down` seconds back;
    both vary, so requests arrive and answers return out of order. `headers=False` drops
    the x-rate-limit-* headers from every answer; `fail_every=n` makes every nth counted
    request fail (503, no headers) after X counted it.
    """

    def __init__(
        self,
        clock: VirtualClock,
        limit: int,
        window: float,
        *,
        seed: int = 7,
        headers: bool = True,
        fail_every: int = 0,
        used: int = 0,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.headers = headers
        self.fail_every = fail_every
        self.random = random.Random(seed)
        self.start: float | None = clock.now() if used else None
        self.used = used
        self.counted = 0
        self.sent: list[float] = []  # times X accepted a DM
        self.window_of_sent: list[float] = []  # the start of the window each fell in
        self.refused = 0
        self.failed = 0
        self.out = 0  # requests on their way or being answered
        self.max_out = 0

    async def send(self, recipient_id: str, text: str) -> SentDM:
        self.out += 1
        self.max_out = max(self.max_out, self.out)
        try:
            await self.clock.sleep(self.random.uniform(0.001, 0.02))
            now = self.clock.now()
            if self.start is None or now >= self.start + self.window:
                self.start, self.used = now, 0
            reset = float(math.ceil(self.start + self.window))
            if self.used >= self.limit:
                self.refused += 1
                outcome: SentDM | Exception = RateLimited(
                    "HTTP 429", reset if self.headers else None
                )
            else:
                self.used += 1
                self.counted += 1
                remaining = self.limit - self.used
                if self.fail_every and self.counted % self.fail_every == 0:
                    self.failed += 1
                    outcome = TransientSendError("HTTP 503")
                else:
                    self.sent.append(now)
                    self.window_of_sent.append(self.start)
                    outcome = SentDM(
                        dm_event_id=str(len(self.sent)),
                        remaining=remaining if self.headers else None,
                        reset_at=reset if self.headers else None,
                    )
            await self.clock.sleep(self.random.uniform(0.001, 0.03))
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            self.out -= 1

    # Posting has its own, separate window at X: `posts_left` more, then 429s until
    # `posts_reset`.
    posts_left = 50
    posts_reset = 0.0
    posts_refused = 0

    async def reply_to_post(self, tweet_id: str, text: str) -> SentDM:
        await self.clock.sleep(0.01)
        if self.posts_left <= 0:
            self.posts_refused += 1
            raise RateLimited("HTTP 429", self.posts_reset)
        self.posts_left -= 1
        return SentDM(dm_event_id="post", remaining=self.posts_left, reset_at=self.posts_reset)

    def per_window(self) -> list[int]:
        return list(Counter(self.window_of_sent).values())


def make_outbox(clock: VirtualClock, x: FakeX, jitter: float = 0.25) -> Outbox:
    """An outbox that sends to `x` and waits on `clock`, with an ample send budget."""
    allowances = {
        family: Allowance(
            RateGate(clock=clock.now, sleep=clock.sleep, jitter=lambda: jitter),
            SendBudget({900.0: 1_000_000}, clock=clock.now, sleep=clock.sleep),
        )
        for family in (DM, POST)
    }
    settings = OutboxSettings(
        retry_initial_seconds=0.001, retry_max_seconds=0.002, max_attempts=50,
        rate_limit_default_wait_seconds=1.0,
    )
    return Outbox(
        store=cast(Any, None), sender=cast(Any, x), facts=cast(Any, None), policy=Policy(),
        metrics=Metrics(), settings=settings, allowances=allowances, clock=clock.now,
    )


def dms(count: int) -> list[InboundDM]:
    return [
        InboundDM(event_id=f"e{i}", sender_id=str(5000 + i), recipient_id=BOT_ID,
                  for_user_id=BOT_ID, text="fact", created_at=0.0)
        for i in range(count)
    ]


async def deliver_all(outbox: Outbox, jobs: list[InboundDM], workers: int) -> list[SentDM]:
    """`workers` tasks take the jobs one at a time, as the outbox's workers do."""
    queue = list(reversed(jobs))
    results: list[SentDM] = []

    async def worker() -> None:
        while queue:
            job = queue.pop()
            results.append(await outbox.deliver(job, "a cat fact"))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return results


def run(clock: VirtualClock, main: Callable[[], Awaitable[Any]]) -> Any:
    async def scenario() -> Any:
        return await clock.run(main())

    return asyncio.run(scenario())


@dataclass
class Scene:
    """One outbox and the fake X behind it, on one virtual clock."""

    clock: VirtualClock
    x: FakeX
    outbox: Outbox

    @classmethod
    def of(cls, limit: int = 10, window: float = 3.0, **fake_x: Any) -> Scene:
        clock = VirtualClock()
        x = FakeX(clock, limit=limit, window=window, **fake_x)
        return cls(clock, x, make_outbox(clock, x))

    @property
    def dm_gate(self) -> RateGate:
        return self.outbox.allowances[DM].gate

    def deliver(self, count: int, workers: int) -> list[SentDM]:
        """`count` DMs to as many users, answered by `workers` concurrent workers."""
        results: list[SentDM] = run(
            self.clock, lambda: deliver_all(self.outbox, dms(count), workers)
        )
        return results

    def run(self, main: Callable[[], Awaitable[Any]]) -> Any:
        return run(self.clock, main)


# The race: sends in flight when X says nothing remains ------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("workers", [4, 16])
def test_exactly_the_limit_per_window_and_no_429(seed: int, workers: int) -> None:
    scene = Scene.of(seed=seed)
    results = scene.deliver(35, workers)

    assert len(results) == 35
    assert scene.x.refused == 0, f"{scene.x.refused} calls wasted on 429"
    assert scene.x.per_window() == [10, 10, 10, 5]
    assert scene.dm_gate.in_flight == 0


def test_start_up_mid_window_probes_first_and_wastes_nothing() -> None:
    # A restart: X already counted 8 of 10 in this window, the new process cannot know.
    scene = Scene.of(used=8)
    scene.deliver(12, 4)

    assert scene.x.refused == 0
    assert scene.x.per_window() == [2, 10]


def test_in_flight_never_exceed_what_x_said_remains() -> None:
    scene = Scene.of(seed=3)
    gate = scene.dm_gate
    seen: list[tuple[int, int]] = []
    acquire = gate.acquire

    async def watched_acquire(max_wait: float = math.inf) -> tuple[bool, float]:
        got = await acquire(max_wait)
        if gate.remaining is not None:
            seen.append((gate.in_flight, gate.remaining))
        return got

    gate.acquire = watched_acquire  # type: ignore[method-assign]
    scene.deliver(25, 16)
    assert seen
    assert all(in_flight <= remaining for in_flight, remaining in seen), seen
    assert scene.x.refused == 0


# What must keep working ---------------------------------------------------------------------


def test_without_headers_no_deadlock_and_429s_still_close_the_gate() -> None:
    # No x-rate-limit-* headers at all: the gate learns nothing from successes, so 429s
    # are how it finds the limit; after each, one probe at a time.
    scene = Scene.of(headers=False)
    results = scene.deliver(25, 4)

    assert len(results) == 25
    assert len(scene.x.sent) == 25
    assert scene.x.refused >= 1  # nothing tells the gate beforehand


def test_failures_without_headers_count_as_spent_and_never_wedge_the_gate() -> None:
    # Every 4th request fails with a 503 after X counted it; the gate assumes it was spent.
    scene = Scene.of(fail_every=4)
    results = scene.deliver(25, 6)

    assert len(results) == 25
    assert scene.x.failed >= 5
    assert scene.x.refused == 0
    assert scene.dm_gate.in_flight == 0


def test_a_429_reopens_with_a_single_probe() -> None:
    # Something else spent the window (another app of the account): the first send meets a
    # 429, the gate closes until the reset, then exactly one request probes.
    scene = Scene.of(used=10)
    scene.deliver(12, 8)

    assert scene.x.refused == 1
    assert scene.x.per_window() == [10, 2]


def mention(n: int = 1) -> InboundDM:
    return InboundDM(event_id=f"m{n}", sender_id=str(6000 + n), recipient_id=BOT_ID,
                     for_user_id=BOT_ID, text="@catbot fact", created_at=0.0,
                     kind="mention", tweet_id=str(777 + n))


def test_public_replies_size_their_own_allowance_not_the_dm_one() -> None:
    scene = Scene.of()
    x, outbox, dm_gate = scene.x, scene.outbox, scene.dm_gate
    x.posts_left, x.posts_reset = 4, scene.clock.now() + 900.0
    post_gate = outbox.allowances[POST].gate

    async def main() -> None:
        await outbox.deliver(dms(1)[0], "a cat fact")
        assert dm_gate.remaining == 9
        await outbox.deliver(mention(), "a cat fact")
        assert (dm_gate.remaining, dm_gate.in_flight) == (9, 0)
        assert (post_gate.remaining, post_gate.window_reset) == (3, x.posts_reset)

    scene.run(main)


@pytest.mark.parametrize("how", ["429", "remaining 0"])
def test_a_rate_limited_post_leaves_dms_going_and_parks_posts(how: str) -> None:
    # Issue 14: a 429 (or "0 remain") on POST /2/tweets closed the one gate DMs used too.
    scene = Scene.of(limit=100, window=900.0)
    clock, x, outbox = scene.clock, scene.x, scene.outbox
    x.posts_left = 0 if how == "429" else 1
    x.posts_reset = clock.now() + 900.0

    async def main() -> None:
        if how == "429":
            with pytest.raises(WaitTooLong) as raised:
                await outbox.deliver(mention(1), "a cat fact")
        else:
            await outbox.deliver(mention(1), "a cat fact")  # the last post of the window
            with pytest.raises(WaitTooLong) as raised:
                await outbox.deliver(mention(2), "a cat fact")
        # The job is to be handed back until posting reopens, not waited for.
        assert raised.value.until >= x.posts_reset
        started = clock.now()
        sent = await deliver_all(outbox, dms(5), 2)
        assert len(sent) == 5 and clock.now() - started < 1.0
        assert not scene.dm_gate.is_closed

    scene.run(main)
    assert x.posts_refused == (1 if how == "429" else 0)


# The gate on its own ----------------------------------------------------------------------


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=0.0)


@pytest.fixture
def gate(clock: VirtualClock) -> RateGate:
    return RateGate(clock=clock.now, sleep=clock.sleep, jitter=lambda: 0.5)


def test_gate_holds_requests_beyond_the_remaining_allowance(
    clock: VirtualClock, gate: RateGate
) -> None:
    async def main() -> None:
        assert await gate.acquire() == (False, 0.0)
        gate.release(False, True, remaining=2, reset_at=10.0)
        first = await gate.acquire()
        second = await gate.acquire()
        assert first[0] is False and second[0] is False
        third = asyncio.ensure_future(gate.acquire())
        await settle()
        assert not third.done()  # both remaining slots are out
        # One comes back: X counted both, one remains, and one is still out.
        gate.release(False, True, remaining=1, reset_at=10.0)
        await settle()
        assert not third.done()
        # An answer that failed without headers: assumed spent, nothing remains.
        gate.release(False, False)
        assert gate.remaining == 0
        # Nothing is out and nothing remains: wait for the reset, then probe.
        assert await clock.run(third) == (True, 10.0)
        assert clock.now() == 10.0

    asyncio.run(main())


def test_gate_late_answer_from_an_old_window_is_ignored(gate: RateGate) -> None:
    gate.release(False, True, remaining=3, reset_at=10.0)
    gate.release(False, True, remaining=9, reset_at=13.0)  # a new window
    gate.release(False, True, remaining=0, reset_at=10.0)  # late, about the old one
    assert (gate.remaining, gate.window_reset) == (9, 13.0)
    gate.release(False, True, remaining=8, reset_at=13.0)
    gate.release(False, True, remaining=9, reset_at=13.0)  # out of order: keep the least
    assert gate.remaining == 8


def test_gate_request_that_never_left_spends_nothing(gate: RateGate) -> None:
    gate.release(False, True, remaining=3, reset_at=10.0)
    gate.release(False, False, spent=False)
    assert gate.remaining == 3


def test_gate_probes_again_once_the_known_window_has_reset(
    clock: VirtualClock, gate: RateGate
) -> None:
    async def main() -> None:
        gate.release(False, True, remaining=5, reset_at=10.0)
        assert (await gate.acquire())[0] is False
        gate.release(False, True, remaining=4, reset_at=10.0)
        await clock.run(clock.sleep(10.0))
        probe = await gate.acquire()
        assert probe[0] is True
        other = asyncio.ensure_future(gate.acquire())
        await settle()
        assert not other.done()
        gate.release(True, True, remaining=9, reset_at=13.0)
        assert (await other)[0] is False
        assert (gate.in_flight, gate.remaining) == (1, 9)

    asyncio.run(main())


def test_outbox_start_requires_a_probe() -> None:
    assert Scene.of().dm_gate.is_closed


# The real daemon against the real emulator -------------------------------------------------

LIMIT, WINDOW, WORKERS = 10, 2.0, 16


class Rig(BotAndX):
    def __init__(self, tmp: Path) -> None:
        port, metrics_port, emulator_port = free_port(), free_port(), free_port()
        self.daemon = Daemon(tmp, emulator_port, port, metrics_port, {
            "CATBOT_WORKERS": str(WORKERS),
            "CATBOT_DM_BUDGET_15MIN": "100000",
            "CATBOT_DM_BUDGET_24H": "100000",
            "CATBOT_RATE_LIMIT_DEFAULT_WAIT_SECONDS": "1",
            "CATBOT_LOG_LEVEL": "INFO",
        })
        self.emulator = Emulator(
            tmp, emulator_port, self.daemon.webhook,
            extra_args=["--dm-rate-limit", str(LIMIT), "--dm-rate-window", str(WINDOW)],
        )


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Rig(tmp_path) as r:
        yield r


def test_daemon_with_many_workers_and_slow_answers_wastes_no_call(rig: Rig) -> None:
    # Slow answers keep many sends in flight at once: each worker's send would otherwise
    # be out when the answer saying "0 remain" comes back.
    rig.emulator.faults(latency={"dm": 0.05})
    friends = [str(9000 + i) for i in range(25)]
    for friend in friends:
        rig.emulator.dm(friend, f"hello from {friend}")

    def replied() -> Counter[str]:
        return Counter(m["recipient_id"] for m in rig.emulator.messages()
                       if m["sender_id"] == BOT_ID)

    wait_for(lambda: all(replied()[f] >= 1 for f in friends), timeout=40, interval=0.1,
             what="replies to every friend")
    log = [e for e in rig.emulator.control("GET", "requests?route=dm")["requests"]
           if e["method"] == "POST"]
    statuses = Counter(e["status"] for e in log)
    print("DM requests by status:", dict(statuses))
    assert statuses.get(429, 0) == 0, statuses
    assert {f: replied()[f] for f in friends} == {f: 1 for f in friends}
    # X's windows: exactly the limit in each full one.
    oks = sorted(e["at"] for e in log if 200 <= (e["status"] or 0) < 300)
    bursts: list[list[float]] = []
    for at in oks:
        if bursts and at - bursts[-1][0] < WINDOW:
            bursts[-1].append(at)
        else:
            bursts.append([at])
    assert [len(b) for b in bursts] == [10, 10, 5]
