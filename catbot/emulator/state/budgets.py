"""Rate-limit budgets: X's fixed windows for DM sends, posts, X Chat sends and management.

Two kinds of window live apart: the per-user DM windows, which a change of the DM budget
(the `dm_budget_*` faults) starts afresh, and the named windows of other routes, which it
leaves alone. `/_emulator/reset` refills both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds

    def headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset": str(self.reset),
        }


class RateWindow:
    """A fixed window starting at the first request, like X's 15-minute buckets."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._start: float | None = None
        self._used = 0

    def _roll(self, now: float) -> float:
        if self._start is None or now >= self._start + self.window:
            self._start = now
            self._used = 0
        return self._start

    def _verdict(self, allowed: bool, start: float) -> RateVerdict:
        # Rounded up: a client that waits until the header's second must find a fresh window.
        reset = math.ceil(start + self.window)
        return RateVerdict(allowed, self.limit, max(self.limit - self._used, 0), reset)

    def peek(self, now: float) -> RateVerdict:
        """The budget as headers would show it, without opening a window."""
        if self._start is None or now >= self._start + self.window:
            return RateVerdict(True, self.limit, self.limit, math.ceil(now + self.window))
        return self._verdict(self._used < self.limit, self._start)

    def consume(self, now: float) -> RateVerdict:
        start = self._roll(now)
        if self._used >= self.limit:
            return self._verdict(False, start)
        self._used += 1
        return self._verdict(True, start)


class Budgets:
    def __init__(self, dm_limit: int, dm_window: float) -> None:
        # The configured DM budget, restored when an injected one is cleared.
        self.configured_dm = (dm_limit, dm_window)
        self.dm_limit, self.dm_window = dm_limit, dm_window
        self._dm: dict[str, RateWindow] = {}
        self._named: dict[str, RateWindow] = {}

    def dm(self, user_id: str) -> RateWindow:
        """The user's DM send window, opened on first use."""
        window = self._dm.get(user_id)
        if window is None:
            window = RateWindow(self.dm_limit, self.dm_window)
            self._dm[user_id] = window
        return window

    def set_dm_budget(self, limit: int | None, window: float | None) -> None:
        """Change the DM budget (None: the configured figure); when it changed, fresh windows
        start, so that the new figure shows at once."""
        configured_limit, configured_window = self.configured_dm
        wanted = (limit or configured_limit, window or configured_window)
        if wanted != (self.dm_limit, self.dm_window):
            self.dm_limit, self.dm_window = wanted
            self._dm.clear()

    def named(self, key: str, limit: int, window: float) -> RateWindow:
        """A route's own window under `key`; a changed budget starts a fresh one, as a changed
        DM budget does."""
        current = self._named.get(key)
        if current is None or (current.limit, current.window) != (limit, window):
            current = RateWindow(limit, window)
            self._named[key] = current
        return current

    def refill(self) -> None:
        """Every window starts afresh (`/_emulator/reset`); budgets stay as set."""
        self._dm.clear()
        self._named.clear()
