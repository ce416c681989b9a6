"""Durable storage behind one protocol (`Store`, in `base`): the dedupe of event ids, the job
queue with leases, user state, dead letters and X Chat's sealed conversation keys.

`create_store` picks the implementation by `CATBOT_STORE_URL`: `sqlite` (one file, one
owning daemon; the default) or `redis` (several replicas). Both pass one contract suite,
tests/test_store_contract.py.
"""

from __future__ import annotations

from catbot.store.base import Store, StoreError


def create_store(url: str, owner: bool = True, dedupe_seconds: float = 86400.0) -> Store:
    """The store for a `CATBOT_STORE_URL` (not yet opened). `owner=False`: for operator
    commands that inspect or requeue jobs beside a running daemon, never claiming any.
    `dedupe_seconds`: how long a Redis store remembers event ids (they expire by themselves;
    SQLite forgets them in `prune`)."""
    if url.startswith("sqlite:///"):
        from catbot.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), owner=owner)
    if url.startswith(("redis://", "rediss://")):
        from catbot.store.redis import RedisStore

        return RedisStore(url, dedupe_seconds=dedupe_seconds, owner=owner)
    raise StoreError(f"unsupported store URL scheme in {url.split('://')[0]}://")


__all__ = ["Store", "StoreError", "create_store"]
