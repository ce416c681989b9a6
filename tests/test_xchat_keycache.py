"""The senders' signing-key cache: TTL, size bound, one fetch at a time, hint refreshes."""

from __future__ import annotations

import asyncio

import pytest

from catbot.xchat.keycache import SigningKeyCache
from catbot.xchat.wire import PublicKeyRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeX:
    """Answers `GET /2/users/{id}/public_keys` from a table; counts calls."""

    def __init__(self) -> None:
        self.keys: dict[str, list[PublicKeyRecord]] = {}
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def fetch(self, user_id: str) -> list[PublicKeyRecord]:
        self.calls.append(user_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return list(self.keys.get(user_id, []))


def record(user_id: str, version: str, signing: str = "U0lHTg==") -> PublicKeyRecord:
    return PublicKeyRecord(user_id, version, "UEs=", signing, "QklORA==")


@pytest.fixture
def x() -> FakeX:
    return FakeX()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cache(x: FakeX, clock: Clock) -> SigningKeyCache:
    return SigningKeyCache(x.fetch, clock=clock, ttl=600.0, empty_ttl=60.0,
                           min_refresh_interval=30.0)


async def test_records_are_served_from_cache_until_the_ttl(x: FakeX, clock: Clock) -> None:
    x.keys["42"] = [record("42", "1")]
    keys = cache(x, clock)
    assert await keys.get("42") == x.keys["42"]
    clock.now += 599
    x.keys["42"] = [record("42", "2")]
    assert [r.version for r in await keys.get("42")] == ["1"]
    clock.now += 1
    assert [r.version for r in await keys.get("42")] == ["2"]
    assert x.calls == ["42", "42"]


async def test_a_user_without_keys_is_asked_again_sooner(x: FakeX, clock: Clock) -> None:
    keys = cache(x, clock)
    assert await keys.get("7") == []
    clock.now += 59
    await keys.get("7")
    assert len(x.calls) == 1
    clock.now += 1
    x.keys["7"] = [record("7", "1")]
    assert [r.version for r in await keys.get("7")] == ["1"]
    assert len(x.calls) == 2


async def test_refresh_is_honoured_only_past_the_minimum_interval(x: FakeX, clock: Clock) -> None:
    x.keys["42"] = [record("42", "1")]
    keys = cache(x, clock)
    await keys.get("42")
    clock.now += 29
    await keys.get("42", refresh=True)
    assert len(x.calls) == 1
    clock.now += 1
    await keys.get("42", refresh=True)
    assert len(x.calls) == 2


async def test_an_unknown_signing_key_hint_refreshes(x: FakeX, clock: Clock) -> None:
    x.keys["42"] = [record("42", "1", signing="T0xE")]
    keys = cache(x, clock)
    await keys.get("42")
    clock.now += 31
    # The hint names the key already held (spelled without padding): no fetch.
    await keys.get("42", signing_key_hint="T0xE")
    assert len(x.calls) == 1
    x.keys["42"] = [record("42", "2", signing="TkVX")]
    got = await keys.get("42", signing_key_hint="TkVX")
    assert [r.version for r in got] == ["2"]
    assert len(x.calls) == 2
    # A forged hint right after: not another fetch within the minimum interval.
    await keys.get("42", signing_key_hint="Rk9SR0VE")
    assert len(x.calls) == 2


async def test_the_cache_is_bounded_least_recently_used_first(x: FakeX, clock: Clock) -> None:
    keys = SigningKeyCache(x.fetch, clock=clock, max_users=2)
    for uid in ("1", "2"):
        x.keys[uid] = [record(uid, "1")]
        await keys.get(uid)
    await keys.get("1")  # "2" is now the least recently used
    x.keys["3"] = [record("3", "1")]
    await keys.get("3")
    assert len(keys) == 2
    calls = len(x.calls)
    await keys.get("1")
    assert len(x.calls) == calls
    await keys.get("2")
    assert len(x.calls) == calls + 1


async def test_concurrent_callers_share_one_fetch(x: FakeX, clock: Clock) -> None:
    x.keys["42"] = [record("42", "1")]
    x.gate = asyncio.Event()
    keys = cache(x, clock)
    waiting = [asyncio.create_task(keys.get("42")) for _ in range(5)]
    await asyncio.sleep(0)
    x.gate.set()
    results = await asyncio.gather(*waiting)
    assert x.calls == ["42"]
    assert all(r == x.keys["42"] for r in results)


async def test_a_failed_fetch_reaches_every_caller_and_is_not_cached(
    x: FakeX, clock: Clock
) -> None:
    x.gate = asyncio.Event()
    x.fail = ConnectionError("X is down")
    keys = cache(x, clock)
    waiting = [asyncio.create_task(keys.get("42")) for _ in range(3)]
    await asyncio.sleep(0)
    x.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    x.fail = None
    x.keys["42"] = [record("42", "1")]
    assert await keys.get("42") == x.keys["42"]
    assert len(x.calls) == 2


async def test_a_cancelled_fetcher_does_not_cancel_the_others(x: FakeX, clock: Clock) -> None:
    x.keys["42"] = [record("42", "1")]
    x.gate = asyncio.Event()
    keys = cache(x, clock)
    first = asyncio.create_task(keys.get("42"))
    await asyncio.sleep(0)
    second = asyncio.create_task(keys.get("42"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    x.gate.set()
    assert await asyncio.wait_for(second, 5) == x.keys["42"]
    assert first.cancelled()
