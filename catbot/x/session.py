"""Aiming tweepy at another API base.

tweepy's `AsyncClient` hard-codes `https://api.twitter.com` and signs OAuth 1.0a over that
URL before sending. It accepts any object as its `session`, so this one rewrites scheme,
host, port (and adds a path prefix) on the way out and forwards to the daemon's one shared
`aiohttp.ClientSession`. The signature still covers the public URL, which is what X checks
and what the emulator accepts.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from yarl import URL


class RebasedSession:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._session = session
        self._base = URL(base)

    def rebase(self, url: str | URL) -> URL:
        original = url if isinstance(url, URL) else URL(url)
        prefix = self._base.raw_path.rstrip("/")
        return URL.build(
            scheme=self._base.scheme,
            host=self._base.raw_host or "",
            port=self._base.explicit_port,
            path=prefix + original.raw_path,
            query_string=original.raw_query_string,
            encoded=True,
        )

    def request(self, method: str, url: str | URL, **kwargs: Any) -> Any:
        return self._session.request(method, self.rebase(url), **kwargs)

    async def close(self) -> None:
        """The shared session belongs to the daemon; tweepy must not close it."""
