"""Staying inside X's rate limits, shared by every worker of the process.

X counts each endpoint family apart: "Each endpoint has its own limits"
(docs.x.com/x-api/fundamentals/rate-limits, xdevplatform/docs
x-api/fundamentals/rate-limits.mdx). A 429 from `POST /2/tweets` says nothing of the DM
routes. So every family the bot sends on has its own `Allowance` (a gate and a budget),
looked up by family name; adding one (X Chat sends) is one more entry, not a rewrite:

- `dm`: `POST /2/dm_conversations/with/:participant_id/messages` (v2, XAA) and
  `POST /1.1/direct_messages/events/new.json` (v1.1): the bot uses one of them, by flavour.
- `post`: `POST /2/tweets` (public replies to mentions, every flavour).
- `xchat`: `POST /2/chat/conversations/{id}/messages` (encrypted X Chat replies;
  x-api/chat/send-chat-message). X publishes no figure for it: our budget defaults to the
  DM one, and its own gate learns the real allowance from X's headers and 429s.

`RateGate`: a 429 closes the gate for everyone until X's reset time (plus jitter). When it
reopens, one request probes; the others follow only once the probe passed, so a still-closed
limit costs one request, not one per worker. While X's headers say how many requests remain
in the window, no more than that are in flight at once, so none is spent on a 429.

`SendBudget`: our own sliding-window budgets (per 15 min and per 24 h), so the bot does not
send faster than the documented limits even before X answers 429. `SharedSendBudget`: the
same budgets kept in a store that every replica shares (Redis), since X counts the bot
account's sends, not one process's.

Both take a `max_wait`: a caller that will not wait that long gets `WaitTooLong` with the
time room may open, instead of a nap (the outbox then hands its job back until then, so a
closed family never holds the workers that another family's jobs need).

`allowances_from` makes the gate and budget of each family from the settings, the budget
counted where the store says (`Store.shared_send_budget`).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from catbot.config import Settings
    from catbot.store import Store

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# The endpoint families the bot sends on (see the module notes).
DM: Final = "dm"
POST: Final = "post"
XCHAT: Final = "xchat"


class WaitTooLong(Exception):
    """No room before `until` (Unix time), further off than the caller would wait."""

    def __init__(self, until: float) -> None:
        super().__init__(f"no room until {until:.0f}")
        self.until = until


class RateGate:
    """One endpoint family's allowance at X as the process knows it, shared by every worker.

    Three things keep requests inside what X allows, so that none is spent on a 429:

    - A 429 (or X saying `x-rate-limit-remaining: 0`) closes the gate for everyone until
      the reset time plus jitter; then one request probes, and the others follow only once
      the probe passed.
    - While X's headers say how much of the window remains, every request holds a slot from
      `acquire` to `release`, and no more requests are out at once than X said remain:
      a request in flight has not been counted in the headers seen so far, so it counts
      against them. Without that, workers whose requests left before the answer saying
      "0 remain" came back each cost a 429.
    - When nothing is known (`require_probe`, at start-up; or once the window whose
      allowance was known has reset), one request probes first, so its headers set the
      allowance before the others go.

    An answer without headers (a failure, mostly) counts as spent against what is known: X
    may have counted it. When nothing is known and answers bring no headers, the gate
    stays open after its probe and 429s are handled as above.
    """

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
        # Requests between `acquire` and `release`.
        self.in_flight = 0
        # What X last said remains in the window ending at `window_reset`, less the
        # requests that reached X since without telling; None when unknown.
        self.remaining: int | None = None
        self.window_reset: float | None = None
        self._changed = asyncio.Event()

    @property
    def is_closed(self) -> bool:
        return self._needs_probe or self._clock() < self.closed_until

    def close(self, until: float) -> None:
        """X refused (or has nothing left) until `until`: wait, then probe."""
        self.closed_until = max(self.closed_until, until + self._jitter())
        self._needs_probe = True
        self._forget()
        self._notify()

    def require_probe(self) -> None:
        """Nothing is known of X's allowance: let one request find out before the rest."""
        self._needs_probe = True
        self._notify()

    async def acquire(self, max_wait: float = math.inf) -> tuple[bool, float]:
        """Wait until a request may go and hold a slot for it until `release`.

        Returns (is_probe, seconds waited). `WaitTooLong` (holding nothing) when the gate is
        closed, or the window used up, for longer than `max_wait` from now.
        """
        started = self._clock()
        while True:
            now = self._clock()
            delay = self.closed_until - now
            if delay > max_wait:
                raise WaitTooLong(self.closed_until)
            if delay > 0:
                # Short naps: a later 429 may push the reset further out.
                await self._sleep(min(delay, 1.0))
                continue
            if self.window_reset is not None and now >= self.window_reset:
                # The window we knew has reset: what the next one allows is unknown.
                self._forget()
                self._needs_probe = True
            if self._needs_probe:
                if not self._probing:
                    self._probing = True
                    self._probe_done.clear()
                    self.in_flight += 1
                    return True, self._clock() - started
                await self._probe_done.wait()
                continue
            if (
                self.remaining is not None
                and self.window_reset is not None
                and self.in_flight >= self.remaining
            ):
                # Every slot X said remains is taken by a request in flight: wait for one
                # to come back (its headers tell what is left) or for the window to reset.
                nap = min(self.window_reset - now, 1.0)
                if self.in_flight:
                    await self._changed_or_nap(nap)
                elif self.window_reset - now > max_wait:
                    raise WaitTooLong(self.window_reset)
                else:
                    await self._sleep(nap)
                continue
            self.in_flight += 1
            return False, self._clock() - started

    def release(
        self,
        is_probe: bool,
        passed: bool,
        remaining: int | None = None,
        reset_at: float | None = None,
        *,
        spent: bool = True,
    ) -> None:
        """Report how the request went and free its slot.

        `remaining`/`reset_at`: X's `x-rate-limit-*` headers on the answer, when it had them.
        `spent`: False when the request cannot have used the allowance (it never left, or
        went to a route X counts apart). A failed probe leaves the next waiter to probe.
        """
        self.in_flight = max(0, self.in_flight - 1)
        if remaining is not None and reset_at is not None:
            self._observe(remaining, reset_at)
        elif spent and self.remaining is not None:
            # X may have counted it without saying so: assume it did.
            self.remaining = max(0, self.remaining - 1)
        if is_probe:
            self._probing = False
            if passed:
                self._needs_probe = False
            self._probe_done.set()
        self._notify()

    def _observe(self, remaining: int, reset_at: float) -> None:
        if self.window_reset is None or reset_at > self.window_reset:
            # The first news of this window. Requests still in flight count against it.
            self.window_reset = reset_at
            self.remaining = remaining
        elif reset_at == self.window_reset:
            # Answers may come back out of order: the smallest is X's latest count.
            self.remaining = remaining if self.remaining is None else min(
                self.remaining, remaining
            )
        # else: a late answer about a window already gone; it says nothing of this one.

    def _forget(self) -> None:
        self.remaining = None
        self.window_reset = None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changed_or_nap(self, nap: float) -> None:
        changed = asyncio.ensure_future(self._changed.wait())
        napping = asyncio.ensure_future(self._sleep(nap))
        try:
            await asyncio.wait({changed, napping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            napping.cancel()


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

    async def reserve(self, max_wait: float = math.inf) -> float:
        """Wait for room in every window and take one slot. Returns seconds waited.

        `WaitTooLong` (taking nothing) when room opens later than `max_wait` from now.
        """
        started = self._clock()
        napped = False
        async with self._lock:
            while (delay := self._delay()) > 0:
                if delay > max_wait:
                    raise WaitTooLong(self._clock() + delay)
                await self._sleep(delay)
                napped = True
            self._sent.append(self._clock())
        # Time spent queueing for the lock is not a budget wait: counting it would report
        # a "budget" pause for nearly every send.
        return self._clock() - started if napped else 0.0

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

    async def reserve(self, max_wait: float = math.inf) -> float:
        started = self._clock()
        napped = False
        while (delay := await self._take_slot(self._windows)) > 0:
            if delay > max_wait:
                raise WaitTooLong(self._clock() + delay)
            await self._sleep(min(delay, self._max_nap))
            napped = True
        # The store's round trip alone is not a budget wait.
        return self._clock() - started if napped else 0.0


@dataclass(frozen=True)
class Allowance:
    """What one endpoint family may send: X's view of it (`gate`) and our own (`budget`)."""

    gate: RateGate
    budget: SendBudget


def allowances_from(settings: Settings, store: Store) -> dict[str, Allowance]:
    """A gate and a budget for each endpoint family. Each budget is counted where the store
    says (`Store.shared_send_budget`): in the store when replicas share it, else here."""
    windows = {
        DM: {900.0: settings.dm_budget_15min, 86400.0: settings.dm_budget_24h},
        POST: {900.0: settings.post_budget_15min, 86400.0: settings.post_budget_24h},
        XCHAT: {900.0: settings.xchat_budget_15min, 86400.0: settings.xchat_budget_24h},
    }
    allowances = {}
    for family, family_windows in windows.items():
        shared = store.shared_send_budget(family)
        budget = (SendBudget(family_windows) if shared is None
                  else SharedSendBudget(family_windows, shared))
        allowances[family] = Allowance(RateGate(), budget)
    return allowances
