"""An optional remote fact API in catfact.ninja's shape, always backed by the corpus.

The remote is a nice-to-have: a reply must never wait long on it or fail because of it.
So each request is bounded by a timeout, a failure pauses remote calls for a while, and
every miss falls back to recently fetched remote facts and then to the embedded corpus.
The remote speaks English only: facts in any other language come from the corpus.

The remote is also untrusted input: its answer is read up to `_MAX_BODY_BYTES` and no further
(a server streaming without end cannot grow the daemon's memory), a redirect is a failure
(the configured URL is the only place facts come from), and the URL must be https unless it
is on loopback (plain http elsewhere lets anyone on the path choose what the bot says).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Literal

import aiohttp

from catbot.facts.corpus import REMOTE_PREFIX, CorpusSource, Fact, fact_id
from catbot.logs import get_logger
from catbot.urls import https_unless_loopback

log = get_logger("catbot.facts")

# "corpus": a language the remote does not speak, served by the corpus by design.
Outcome = Literal["remote", "cache", "fallback", "corpus"]
REMOTE_LANGUAGE = "en"

# Enough variety to serve from during an outage without letting memory grow with uptime.
_POOL_MAX = 500
# Remote ids are unbounded in number, unlike corpus ids; cap them so per-user state stays small.
SEEN_REMOTE_MAX = 200
BACKOFF_MAX_SECONDS = 30.0
# catfact.ninja's answers are under 1 KiB; anything near this is not a fact.
_MAX_BODY_BYTES = 64 * 1024
_READ_CHUNK = 16 * 1024


class BodyTooLarge(Exception):
    """The remote sent (or announced) more than _MAX_BODY_BYTES."""


class RemoteSource:
    """A `FactSource` that asks `GET {url}/fact?max_length=N` first and never raises for it."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        fallback: CorpusSource,
        *,
        timeout: float = 2.0,
        cache_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_outcome: Callable[[str], None] | None = None,
        max_body_bytes: int = _MAX_BODY_BYTES,
    ) -> None:
        problem = https_unless_loopback(url)
        if problem is not None:
            # The URL itself stays out of the message: it may carry credentials.
            raise ValueError(f"the remote fact source URL {problem}")
        self._url = url.rstrip("/") + "/fact"
        self._max_body = max_body_bytes
        self._session = session
        self._fallback = fallback
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._cache_seconds = cache_seconds
        self._backoff = min(cache_seconds, BACKOFF_MAX_SECONDS)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._on_outcome = on_outcome
        # id -> (fact, fetched at); insertion order is age order, oldest first.
        self._pool: dict[str, tuple[Fact, float]] = {}
        self._retry_at = float("-inf")

    async def fact_for(
        self, seen: frozenset[str], max_length: int, language: str = "en"
    ) -> tuple[Fact, frozenset[str]]:
        outcome: Outcome
        if language != REMOTE_LANGUAGE:
            return await self._from_corpus(seen, max_length, language)
        self._expire(self._clock())
        fact = await self._fetch_unseen(seen, max_length)
        if fact is not None:
            outcome = "remote"
        else:
            fact = self._from_pool(seen, max_length)
            outcome = "cache"
        if fact is not None:
            seen = seen | {fact.id}
        else:
            fact, seen = await self._fallback.fact_for(seen, max_length, language)
            outcome = "fallback"
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return fact, self._cap_remote_ids(seen, keep=fact.id)

    async def _from_corpus(
        self, seen: frozenset[str], max_length: int, language: str
    ) -> tuple[Fact, frozenset[str]]:
        served = await self._fallback.fact_for(seen, max_length, language)
        if self._on_outcome is not None:
            self._on_outcome("corpus")
        return served

    async def aclose(self) -> None:
        # The session belongs to the caller, who closes it.
        return None

    async def _fetch_unseen(self, seen: frozenset[str], max_length: int) -> Fact | None:
        if self._clock() < self._retry_at:
            return None
        fact = await self._fetch(max_length)
        if fact is None:
            self._retry_at = self._clock() + self._backoff
            return None
        self._remember(fact)
        # The remote picks at random and knows nothing of this user: repeats are expected.
        return None if fact.id in seen else fact

    async def _fetch(self, max_length: int) -> Fact | None:
        try:
            async with self._session.get(
                self._url,
                params={"max_length": str(max_length)},
                timeout=self._timeout,
                # A redirect would let the remote (or whoever answers for it) send the bot
                # anywhere, including internal addresses: the configured URL or nothing.
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    reason = "redirect" if 300 <= resp.status < 400 else "status"
                    log.warning("remote_fact_failed", reason=reason, status=resp.status)
                    return None
                body = await self._read_capped(resp)
            # Judge the body, not the Content-Type header some servers get wrong.
            payload: object = json.loads(body)
        except BodyTooLarge:
            log.warning("remote_fact_failed", reason="too_large", limit=self._max_body)
            return None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # ValueError covers undecodable or non-JSON bodies.
            log.warning("remote_fact_failed", reason=type(exc).__name__)
            return None
        text = payload.get("fact") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text.strip()) > max_length:
            log.warning("remote_fact_failed", reason="payload")
            return None
        text = text.strip()
        return Fact(fact_id(REMOTE_PREFIX, text), text)

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, or BodyTooLarge as soon as it passes the cap: a declared length is
        trusted only to refuse early, and a chunked or lying body is counted as it comes."""
        declared = resp.content_length
        if declared is not None and declared > self._max_body:
            resp.close()
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > self._max_body:
                # Closing drops the connection: the rest is never read, nor kept for reuse.
                resp.close()
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _remember(self, fact: Fact) -> None:
        if self._cache_seconds <= 0:
            return
        self._pool.pop(fact.id, None)  # re-insert so a refetched fact counts as new
        self._pool[fact.id] = (fact, self._clock())
        while len(self._pool) > _POOL_MAX:
            del self._pool[next(iter(self._pool))]

    def _expire(self, now: float) -> None:
        while self._pool:
            oldest = next(iter(self._pool))
            if now - self._pool[oldest][1] < self._cache_seconds:
                break
            del self._pool[oldest]

    def _from_pool(self, seen: frozenset[str], max_length: int) -> Fact | None:
        candidates = [
            fact
            for fact, _ in self._pool.values()
            if fact.id not in seen and len(fact.text) <= max_length
        ]
        return self._rng.choice(candidates) if candidates else None

    def _cap_remote_ids(self, seen: frozenset[str], keep: str) -> frozenset[str]:
        remote = [i for i in seen if i.startswith(REMOTE_PREFIX) and i != keep]
        room = SEEN_REMOTE_MAX - (1 if keep.startswith(REMOTE_PREFIX) else 0)
        excess = len(remote) - room
        if excess <= 0:
            return seen
        # Forget ids that are no longer in the pool first: those can only come back if the
        # remote happens to return them again. sorted() keeps the choice reproducible.
        remote.sort(key=lambda i: (i in self._pool, i))
        return seen - frozenset(remote[:excess])
