"""Group commit in the Redis store: concurrent `enqueue` calls share one script run.

The contract suite (tests/test_store_contract.py) checks what one call sees; these tests
check that many calls at once see exactly the same, that they really share runs, and that a
failed run fails every call of its batch (and only those).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest

from catbot.models import InboundDM
from catbot.store import StoreError
from catbot.store.redis import RedisStore
from testkit.redis_server import RedisServer

T0 = 1_750_000_000.0
LEASE = 30.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_server.url_with_prefix())
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def dm(event_id: str, user: str = "42", text: str = "hi") -> InboundDM:
    return InboundDM(event_id=event_id, sender_id=user, recipient_id="1000",
                     for_user_id="1000", text=text, created_at=T0)


def count_enqueue_runs(store: RedisStore) -> list[int]:
    """Wraps the store's script runner; the list gets each enqueue run's event count."""
    runs: list[int] = []
    real = store._run

    async def counted(name: str, *args: Any) -> Any:
        result = await real(name, *args)
        if name == "enqueue":
            runs.append(len(result))
        return result

    store._run = counted  # type: ignore[method-assign]
    return runs


async def drain(store: RedisStore, now: float) -> list[InboundDM]:
    out = []
    while (job := await store.claim(now, LEASE)) is not None:
        out.append(job.event)
        assert await store.complete(job, None)
    return out


def expected_batches(sizes: list[int], cap: int) -> list[int]:
    """The event counts of the runs the flusher makes for calls of these sizes, all queued
    before the first run (greedy: take calls while the batch is under the cap)."""
    runs, current = [], 0
    for size in sizes:
        if current >= cap:
            runs.append(current)
            current = 0
        current += size
    return [*runs, current] if current else runs


@pytest.mark.parametrize("cap", [1000, 37])
async def test_concurrent_enqueues_get_exact_flags_and_share_runs(
    store: RedisStore, cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.group_commit, "max_events", cap)
    rng = random.Random(7)
    pool = [f"e{n}" for n in range(250)]
    owner = {eid: str(rng.randrange(9)) for eid in pool}  # an event id has one sender
    calls: list[list[InboundDM]] = []
    for c in range(200):
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 5))]
        if c % 10 == 0:
            ids.append(ids[0])  # a repeat within the call
        calls.append([dm(eid, owner[eid], text=f"call {c} #{k}") for k, eid in enumerate(ids)])

    # What one call after the other would give: the first occurrence of an id is new.
    seen: set[str] = set()
    expected: list[list[bool]] = []
    first: dict[str, InboundDM] = {}
    for events in calls:
        expected.append([])
        for event in events:
            expected[-1].append(event.event_id not in seen)
            if event.event_id not in seen:
                first[event.event_id] = event
            seen.add(event.event_id)

    runs = count_enqueue_runs(store)
    got = await asyncio.gather(*(store.enqueue(events, T0 + i) for i, events in enumerate(calls)))

    assert got == expected
    sizes = [len(events) for events in calls]
    assert runs == expected_batches(sizes, cap)
    assert len(runs) < len(calls) / 5 if cap == 1000 else len(runs) > 1
    assert await store.depth() == len(first)
    # Each user's jobs come out in arrival order, each job the first copy of its event.
    order = await drain(store, T0 + 1000)
    assert sorted(e.event_id for e in order) == sorted(first)
    queued = list(first.values())
    for user in {e.sender_id for e in queued}:
        assert [e for e in order if e.sender_id == user] == [
            e for e in queued if e.sender_id == user
        ]
    # A redelivery after the batch is a duplicate.
    assert await store.enqueue([calls[0][0]], T0 + 2000) == [False]


async def test_each_call_keeps_its_own_enqueue_time(store: RedisStore) -> None:
    runs = count_enqueue_runs(store)
    await asyncio.gather(store.enqueue([dm("t1", "1")], T0 + 1),
                         store.enqueue([dm("t2", "2"), dm("t3", "3")], T0 + 2),
                         store.enqueue([dm("t4", "4")], T0 + 3))
    assert runs == [4]
    times = {p.event_id: p.enqueued_at for p in await store.pending()}
    assert times == {"t1": T0 + 1, "t2": T0 + 2, "t3": T0 + 2, "t4": T0 + 3}


async def test_a_failed_run_fails_every_call_of_its_batch_and_only_those(
    store: RedisStore,
) -> None:
    real = store._run
    in_flight = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []
    boom = StoreError("Redis enqueue failed: injected")

    async def first_run_fails(name: str, *args: Any) -> Any:
        if name != "enqueue":
            return await real(name, *args)
        runs.append(len(runs))
        if len(runs) == 1:
            in_flight.set()
            await release.wait()
            raise boom
        return await real(name, *args)

    store._run = first_run_fails  # type: ignore[method-assign]
    first = [asyncio.ensure_future(store.enqueue([dm(f"a{i}", str(i % 3))], T0))
             for i in range(50)]
    await in_flight.wait()
    # These arrive while the first run is in flight: the next batch.
    second = [asyncio.ensure_future(store.enqueue([dm(f"b{i}", str(i % 3)), dm(f"a{i}")], T0))
              for i in range(30)]
    await asyncio.sleep(0.01)
    release.set()
    failed = await asyncio.gather(*first, return_exceptions=True)
    assert all(exc is boom for exc in failed), failed
    assert await asyncio.gather(*second) == [[True, True]] * 30
    assert len(runs) == 2
    assert await store.depth() == 60


async def test_a_refused_run_stores_nothing_of_its_batch(
    store: RedisStore, redis_server: RedisServer
) -> None:
    runs = count_enqueue_runs(store)
    client = redis_server.client()
    try:
        client.config_set("maxmemory", "1")
        results = await asyncio.gather(
            *(store.enqueue([dm(f"oom{i}", str(i))], T0) for i in range(20)),
            return_exceptions=True,
        )
    finally:
        client.config_set("maxmemory", "0")
        client.close()
    assert all(isinstance(r, StoreError) and "maxmemory" in str(r) for r in results), results
    assert runs == []  # counted only when answered
    assert await store.depth() == 0
    assert await store.enqueue([dm("oom0", "0")], T0) == [True]


async def test_a_caller_giving_up_does_not_stop_the_others(store: RedisStore) -> None:
    real = store._run
    release = asyncio.Event()

    async def slow(name: str, *args: Any) -> Any:
        if name == "enqueue":
            await release.wait()
        return await real(name, *args)

    store._run = slow  # type: ignore[method-assign]
    impatient = asyncio.ensure_future(
        asyncio.wait_for(store.enqueue([dm("x1", "1")], T0), 0.05))
    patient = asyncio.ensure_future(store.enqueue([dm("x2", "2")], T0))
    with pytest.raises(asyncio.TimeoutError):
        await impatient
    release.set()
    assert await patient == [True]
    # The run went on with both: the timed-out call's event is stored (at-least-once).
    assert await store.depth() == 2
    assert await store.enqueue([dm("x1", "1")], T0) == [False]


async def test_close_lets_an_enqueue_in_flight_finish(redis_server: RedisServer) -> None:
    s = RedisStore(redis_server.url_with_prefix())
    await s.open()
    task = asyncio.ensure_future(s.enqueue([dm("c1", "1"), replace(dm("c1", "1"))], T0))
    await asyncio.sleep(0)
    await s.close()
    assert await task == [True, False]
    await s.open()
    try:
        assert await s.depth() == 1
    finally:
        await s.close()
