"""Group commit: concurrent enqueues share one durable write.

Each store pays a fixed cost per durable write (SQLite: a transaction and an fsync; Redis: a
round trip, an AOF write and its fsync). Under load, requests that arrive while one write is
in flight wait for the next, which takes all of them together; a lone request still goes out
at once, as no delay is added to form batches.
"""

from __future__ import annotations

import asyncio
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

    async def submit(self, events: Sequence[InboundDM], now: float) -> list[bool]:
        """Returns once the write holding these events has completed, exactly as if it had
        been the call's own; raises what that write raised (every call in it gets it)."""
        if not events:
            return []
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((events, now, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # A caller giving up (a timeout) cancels only its own future: the flusher task, and
        # so the others' write, goes on (its events may still be stored: at-least-once).
        return await future

    async def drain(self) -> None:
        """Wait for the writes already under way (before closing the connection)."""
        flusher = self._flusher
        if (flusher is not None and not flusher.done()
                and flusher.get_loop() is asyncio.get_running_loop()):
            await asyncio.wait([flusher])

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
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, future), fresh in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(fresh)
