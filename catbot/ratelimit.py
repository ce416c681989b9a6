"""Staying inside X's DM rate limits, shared by every worker of the process.

`RateGate`: a 429 closes the gate for everyone until X's reset time (plus jitter). When it
reopens, one request probes; the others follow only once the probe passed, so a still-closed
limit costs one request, not one per worker.

`SendBudget`: our own sliding-window budgets (per 15 min and per 24 h), so the bot does not
send faster than the documented limits even before X answers 429. `SharedSendBudget`: the
same budgets kept in a store that every replica shares (Redis), since X counts the bot
account's DMs, not one process's.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateGate:
    def __init__(
        self,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = lambda: random.uniform(0.2, 1.5),
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.closed_until = 0.0
        self._needs_probe = False
        self._probing = False
        self._probe_done = asyncio.Event()

    @property
    def is_closed(self) -> bool:
        return self._needs_probe or self._clock() < self.closed_until

    def close(self, until: float) -> None:
        self.closed_until = max(self.closed_until, until + self._jitter())
        self._needs_probe = True

    async def acquire(self) -> tuple[bool, float]:
        """Wait until a request may go. Returns (is_probe, seconds waited)."""
        started = self._clock()
        while True:
            delay = self.closed_until - self._clock()
            if delay > 0:
                # Short naps: a later 429 may push the reset further out.
                await self._sleep(min(delay, 1.0))
                continue
            if not self._needs_probe:
                return False, self._clock() - started
            if not self._probing:
                self._probing = True
                self._probe_done.clear()
                return True, self._clock() - started
            await self._probe_done.wait()

    def release(self, is_probe: bool, passed: bool) -> None:
        """Report how the request went. A failed probe leaves the next waiter to probe."""
        if not is_probe:
            return
        self._probing = False
        if passed:
            self._needs_probe = False
        self._probe_done.set()


class SendBudget:
    def __init__(
        self,
        windows: dict[float, int],
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`windows` maps a window length in seconds to the sends allowed in it."""
        self._windows = dict(windows)
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._longest = max(self._windows)
        self._lock = asyncio.Lock()

    async def reserve(self) -> float:
        """Wait for room in every window and take one slot. Returns seconds waited."""
        started = self._clock()
        async with self._lock:
            while (delay := self._delay()) > 0:
                await self._sleep(delay)
            self._sent.append(self._clock())
        return self._clock() - started

    def _delay(self) -> float:
        now = self._clock()
        while self._sent and self._sent[0] <= now - self._longest:
            self._sent.popleft()
        delay = 0.0
        for window, allowed in self._windows.items():
            in_window = [t for t in self._sent if t > now - window]
            if len(in_window) >= allowed:
                # Room opens when the oldest send still counted leaves the window.
                delay = max(delay, in_window[-allowed] + window - now)
        return delay


class SharedSendBudget(SendBudget):
    """The budget counted in a shared store (every replica's sends together).

    `take_slot(windows)` atomically takes one send when every window has room and returns
    0.0, else returns the seconds until room may open (taking nothing). Another replica may
    take that room first, so the wait is retried; naps are capped to notice that quickly.
    A store error propagates: the job is not sent, and its lease brings it back.
    """

    def __init__(
        self,
        windows: dict[float, int],
        take_slot: Callable[[dict[float, int]], Awaitable[float]],
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        max_nap: float = 5.0,
    ) -> None:
        super().__init__(windows, clock, sleep)
        self._take_slot = take_slot
        self._max_nap = max_nap

    async def reserve(self) -> float:
        started = self._clock()
        while (delay := await self._take_slot(self._windows)) > 0:
            await self._sleep(min(delay, self._max_nap))
        return self._clock() - started
