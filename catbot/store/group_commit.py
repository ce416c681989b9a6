"""Group commit: concurrent enqueues share one durable write.

Each store pays a fixed cost per durable write (SQLite: a transaction and an fsync; Redis: a
round trip, an AOF write and its fsync). Under load, requests that arrive while one write is
in flight wait for the next, which takes all of them together; a lone request still goes out
at once, as no delay is added to form batches.

A caller's time limit is kept here too, by one timer for all waiting calls: a timer per
request (`asyncio.timeout` around the wait) cost about a tenth of the webhook's throughput.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from catbot.models import InboundDM
from catbot.store.base import StoreError

# One call's share of a batch: its events and its `now`.
Call = tuple[Sequence[InboundDM], float]
# Writes a batch atomically (all of it or none); returns one list of new-flags per call.
WriteBatch = Callable[[Sequence[Call]], Awaitable[list[list[bool]]]]


class GroupCommit:
    def __init__(self, write: WriteBatch, max_events: int) -> None:
        self._write = write
        self.max_events = max_events
        self._pending: deque[tuple[Sequence[InboundDM], float, asyncio.Future[list[bool]]]] = (
            deque()
        )
        self._flusher: asyncio.Task[None] | None = None
        # Calls with a time limit, in submit order: (deadline, limit, future).
        self._deadlines: deque[tuple[float, float, asyncio.Future[list[bool]]]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = math.inf

    async def submit(
        self, events: Sequence[InboundDM], now: float, time_limit: float | None = None
    ) -> list[bool]:
        """Returns once the write holding these events has completed, exactly as if it had
        been the call's own; raises what that write raised (every call in it gets it).

        With a `time_limit` (seconds), raises TimeoutError when that write has not completed
        within it; the events may still be stored by the write under way (at-least-once).
        """
        if not events:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        self._pending.append((events, now, future))
        if time_limit is not None:
            deadline = loop.time() + time_limit
            self._deadlines.append((deadline, time_limit, future))
            if deadline < self._watchdog_at:
                self._arm(loop, deadline)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # A caller giving up (a timeout, a cancellation) gives up only its own future: the
        # flusher task, and so the others' write, goes on (its events may still be stored).
        return await future

    async def drain(self) -> None:
        """Wait for the writes already under way (before closing the connection)."""
        flusher = self._flusher
        if (flusher is not None and not flusher.done()
                and flusher.get_loop() is asyncio.get_running_loop()):
            await asyncio.wait([flusher])

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = loop.call_at(deadline, self._expire, loop)
        self._watchdog_at = deadline

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog, self._watchdog_at = None, math.inf
        now = loop.time()
        waiting = [entry for entry in self._deadlines if not entry[2].done()]
        self._deadlines = deque()
        for deadline, limit, future in waiting:
            if deadline <= now:
                future.set_exception(
                    TimeoutError(f"the store did not complete the write within {limit:g} s")
                )
            else:
                self._deadlines.append((deadline, limit, future))
        if self._deadlines:
            self._arm(loop, min(deadline for deadline, _, _ in self._deadlines))

    def _forget_answered(self) -> None:
        # Writes complete in submit order, so answered calls gather at the front; the
        # watchdog, firing rarely, sweeps any others.
        while self._deadlines and self._deadlines[0][2].done():
            self._deadlines.popleft()

    async def _flush(self) -> None:
        while self._pending:
            batch: list[tuple[Sequence[InboundDM], float, asyncio.Future[list[bool]]]] = []
            size = 0
            # A single call larger than the cap is still taken whole.
            while self._pending and (not batch or size < self.max_events):
                item = self._pending.popleft()
                batch.append(item)
                size += len(item[0])
            try:
                results = await self._write([(events, now) for events, now, _ in batch])
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(
                            exc if isinstance(exc, Exception) else StoreError("enqueue aborted")
                        )
                self._forget_answered()
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, future), fresh in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(fresh)
            self._forget_answered()
