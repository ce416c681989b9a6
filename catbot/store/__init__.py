"""Durable storage behind one protocol; `open_store` picks the implementation by URL."""

from __future__ import annotations

from catbot.store.base import Store, StoreError


def create_store(url: str) -> Store:
    """The store for a `CATBOT_STORE_URL` (not yet opened)."""
    if url.startswith("sqlite:///"):
        from catbot.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    raise StoreError(f"unsupported store URL scheme in {url.split('://')[0]}://")


__all__ = ["Store", "StoreError", "create_store"]
