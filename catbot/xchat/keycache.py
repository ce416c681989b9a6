"""Senders' X Chat public keys, cached: bounded in size, refreshed on a TTL or when a
delivery points at a signing key the cache does not hold.

Every decryption needs the sender's signing keys (xchat/xchat-xdk, "Decrypt"); fetching them
per message would cost a `GET /2/users/{id}/public_keys` round trip each time. X documents no
TTL for these records; a user rotates keys rarely, so an hour is the default, and a miss
(a signature made with a key version the cache lacks, or `message_event_signature.
signing_public_key` naming another key) asks X again, at most once per
`min_refresh_interval` per user, so forged hints cannot turn the cache into a request pump.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from catbot.xchat.wire import PublicKeyRecord, same_key

Fetch = Callable[[str], Awaitable[list[PublicKeyRecord]]]


@dataclass(frozen=True)
class _Entry:
    records: tuple[PublicKeyRecord, ...]
    fetched_at: float


class SigningKeyCache:
    """user id → that user's public-key records. One fetch per user at a time: callers
    that arrive while it runs share its result (or its exception)."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        ttl: float = 3600.0,
        empty_ttl: float = 60.0,
        min_refresh_interval: float = 30.0,
        max_users: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_users < 1:
            raise ValueError("max_users must be at least 1")
        self._fetch = fetch
        self._ttl = ttl
        # A user without registered keys may register any minute: ask again sooner.
        self._empty_ttl = min(empty_ttl, ttl)
        self._min_refresh = min_refresh_interval
        self._max_users = max_users
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[PublicKeyRecord, ...]]] = {}
        self.fetches = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self, user_id: str, *, refresh: bool = False, signing_key_hint: str | None = None
    ) -> list[PublicKeyRecord]:
        """The user's records. `refresh` (after a verification failure for lack of keys) or
        a `signing_key_hint` the records lack fetch again if the entry is old enough."""
        entry = self._entries.get(user_id)
        if entry is not None and not self._stale(entry, refresh, signing_key_hint):
            self._entries.move_to_end(user_id)
            return list(entry.records)
        return list(await self._fetch_once(user_id))

    def _stale(self, entry: _Entry, refresh: bool, hint: str | None) -> bool:
        age = self._clock() - entry.fetched_at
        if age >= (self._ttl if entry.records else self._empty_ttl):
            return True
        if age < self._min_refresh:
            return False
        if refresh:
            return True
        return hint is not None and not any(
            same_key(hint, record.signing_public_key) for record in entry.records
        )

    async def _fetch_once(self, user_id: str) -> tuple[PublicKeyRecord, ...]:
        running = self._inflight.get(user_id)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # The fetch we joined was cancelled with its own caller, not with us: fetch.
                task = asyncio.current_task()
                if running.cancelled() and task is not None and not task.cancelling():
                    return await self._fetch_once(user_id)
                raise
        future: asyncio.Future[tuple[PublicKeyRecord, ...]] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[user_id] = future
        try:
            self.fetches += 1
            records = tuple(await self._fetch(user_id))
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Retrieved here so a fetch nobody else awaited does not warn at collection.
            future.exception()
            raise
        finally:
            self._inflight.pop(user_id, None)
        future.set_result(records)
        self._entries[user_id] = _Entry(records, self._clock())
        self._entries.move_to_end(user_id)
        while len(self._entries) > self._max_users:
            self._entries.popitem(last=False)
        return records
