"""The `Store` contract, run against every implementation: SQLite and Redis.

Add an implementation by adding a parameter to the `backend` fixture: a factory that makes a
new, unopened store on the same underlying data (so close/reopen can be tested). Tests that
only make sense for one implementation are at the end, marked by name. Where the two differ
by design, one test checks each side of the difference, chosen by `store.single_owner`
(one owning process, SQLite) or by how event ids are forgotten (`prune` vs expiry).

The Redis runs use a real `redis-server` started by this module on a free loopback port
(testkit/redis_server.py); each test gets its own key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from catbot.models import DeadLetter, InboundDM, Job, UserState
from catbot.store import Store, StoreError, create_store
from catbot.store.redis import RedisStore
from catbot.store.sqlite import SQLiteStore
from testkit.processes import free_port
from testkit.redis_server import RedisServer

T0 = 1_750_000_000.0
LEASE = 30.0


@dataclass
class Backend:
    name: str
    new_store: Callable[[], Store]
    # Event ids are forgotten by `prune` (SQLite) or expire by themselves (Redis).
    prune_forgets: bool


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "data" / "catbot.db"
        return Backend("sqlite", lambda: SQLiteStore(path), prune_forgets=True)
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url_with_prefix()
        return Backend("redis", lambda: RedisStore(url), prune_forgets=False)
    raise AssertionError(request.param)  # pragma: no cover


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = backend.new_store()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


_counter = iter(range(1, 10**9))


def dm(user: str = "42", event_id: str | None = None, text: str = "hi",
       created_at: float = T0) -> InboundDM:
    return InboundDM(
        event_id=event_id if event_id is not None else f"ev-{next(_counter)}",
        sender_id=user,
        recipient_id="1000",
        for_user_id="1000",
        text=text,
        created_at=created_at,
    )


async def claim_ok(store: Store, now: float = T0, lease: float = LEASE) -> Job:
    job = await store.claim(now, lease)
    assert job is not None
    return job


async def drain(store: Store, now: float) -> list[Job]:
    """Claim and complete everything claimable at `now`, in claim order."""
    jobs = []
    while (job := await store.claim(now, LEASE)) is not None:
        jobs.append(job)
        assert await store.complete(job, None)
    return jobs


# Enqueue and dedupe -------------------------------------------------------------------------


async def test_enqueue_returns_new_flags_and_dedupes(store: Store) -> None:
    a, b = dm(event_id="a"), dm(event_id="b")
    assert await store.enqueue([a], T0) == [True]
    assert await store.enqueue([a], T0 + 1) == [False]
    assert await store.enqueue([b, a], T0 + 2) == [True, False]
    assert await store.depth() == 2


async def test_enqueue_dedupes_within_one_batch(store: Store) -> None:
    a = dm(event_id="same")
    copy = replace(a, text="a retry with the same id")
    c = dm(event_id="other")
    assert await store.enqueue([a, copy, c, a], T0) == [True, False, True, False]
    assert await store.depth() == 2
    jobs = await drain(store, T0)
    assert [j.event for j in jobs] == [a, c]


async def test_concurrent_enqueues_see_what_one_after_the_other_would(store: Store) -> None:
    # Both stores group concurrent calls into one write: flags, dedupe and each user's order
    # must still be those of the calls taken one at a time, in the order they were made.
    rng = random.Random(11)
    pool = [f"c{n}" for n in range(120)]
    sender = {eid: str(rng.randrange(7)) for eid in pool}
    calls = []
    for c in range(150):
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
        calls.append([dm(user=sender[eid], event_id=eid, text=f"{c}/{k}")
                      for k, eid in enumerate(ids)])
    seen: dict[str, InboundDM] = {}
    expected = []
    for events in calls:
        expected.append([])
        for event in events:
            expected[-1].append(event.event_id not in seen)
            seen.setdefault(event.event_id, event)
    got = await asyncio.gather(*(store.enqueue(events, T0) for events in calls))
    assert got == expected
    assert await store.depth() == len(seen)
    done = [job.event for job in await drain(store, T0)]
    for user in set(sender.values()):
        assert [e for e in done if e.sender_id == user] == [
            e for e in seen.values() if e.sender_id == user
        ]


@contextlib.asynccontextmanager
async def writes_stalled(store: Store, request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Really stall the store's writes until the block ends: another SQLite connection holds
    the write lock, or Redis pauses every client's writes."""
    if isinstance(store, SQLiteStore):
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("COMMIT")
            other.close()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        admin = Redis.from_url(server.url)
        await admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        try:
            yield
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()


async def test_enqueue_past_its_time_limit_raises_and_the_write_goes_on(
    store: Store, request: pytest.FixtureRequest
) -> None:
    assert await store.enqueue([dm(event_id="before")], T0, time_limit=5) == [True]
    late, patient = dm(event_id="late"), dm(event_id="patient")
    async with writes_stalled(store, request):
        waiting = asyncio.ensure_future(store.enqueue([patient], T0))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await store.enqueue([late], T0, time_limit=0.3)
        waited = time.monotonic() - started
        assert 0.25 <= waited < 2.0, waited
        assert not waiting.done()  # a call without a limit keeps waiting for its write
    assert await asyncio.wait_for(waiting, 10) == [True]
    # The timed-out call's write went on (at-least-once): X's retry is a duplicate.
    assert await store.enqueue([late], T0, time_limit=5) == [False]
    assert await store.depth() == 3


async def test_enqueue_empty_batch(store: Store) -> None:
    assert await store.enqueue([], T0) == []
    assert await store.depth() == 0


async def test_duplicate_is_remembered_after_the_job_is_done(store: Store) -> None:
    a = dm(event_id="done-once")
    await store.enqueue([a], T0)
    await drain(store, T0)
    assert await store.enqueue([a], T0 + 10) == [False]
    assert await store.claim(T0 + 10, LEASE) is None


# Claim ------------------------------------------------------------------------------------


async def test_claim_on_empty_store(store: Store) -> None:
    assert await store.claim(T0, LEASE) is None


async def test_claim_round_trips_the_event(store: Store) -> None:
    event = InboundDM(
        event_id="1893334459612872708",
        sender_id="1234567890123456789",
        recipient_id="1000",
        for_user_id="1000",
        text='héllo 🐱 "quoted" \n newline',
        created_at=T0 - 1.25,
    )
    await store.enqueue([event], T0)
    job = await claim_ok(store)
    assert job.event == event
    assert job.attempts == 1
    assert job.enqueued_at == T0
    assert isinstance(job.claim_token, str) and job.claim_token


async def test_claim_returns_oldest_first(store: Store) -> None:
    events = [dm(user=str(100 + i)) for i in range(5)]
    for i, event in enumerate(events):
        await store.enqueue([event], T0 + i)
    jobs = [await claim_ok(store, T0 + 10) for _ in events]
    assert [j.event for j in jobs] == events
    assert await store.claim(T0 + 10, LEASE) is None


async def test_batch_order_is_queue_order(store: Store) -> None:
    events = [dm(user=str(200 + i)) for i in range(4)]
    await store.enqueue(events, T0)
    jobs = [await claim_ok(store) for _ in events]
    assert [j.event for j in jobs] == events


async def test_claim_tokens_are_unique(store: Store) -> None:
    await store.enqueue([dm(user=str(300 + i)) for i in range(10)], T0)
    tokens = {(await claim_ok(store)).claim_token for _ in range(10)}
    assert len(tokens) == 10


async def test_only_one_job_per_user_claimable_and_order_kept(store: Store) -> None:
    a1, a2, a3 = dm(user="1", text="1st"), dm(user="1", text="2nd"), dm(user="1", text="3rd")
    b1 = dm(user="2")
    await store.enqueue([a1, a2, b1, a3], T0)

    first = await claim_ok(store)
    assert first.event == a1
    # User 1 is busy: user 2's job proceeds, user 1's later jobs wait.
    second = await claim_ok(store)
    assert second.event == b1
    assert await store.claim(T0, LEASE) is None

    assert await store.complete(first, None)
    nxt = await claim_ok(store)
    assert nxt.event == a2
    assert await store.claim(T0, LEASE) is None
    assert await store.complete(nxt, None)
    assert (await claim_ok(store)).event == a3


async def test_released_job_is_retried_before_the_users_later_jobs(store: Store) -> None:
    a1, a2 = dm(user="1"), dm(user="1")
    await store.enqueue([a1, a2], T0)
    job = await claim_ok(store)
    assert await store.release(job, T0, "timeout")
    again = await claim_ok(store)
    assert again.event == a1
    assert again.attempts == 2
    assert again.claim_token != job.claim_token


async def test_delayed_job_blocks_only_its_own_user(store: Store) -> None:
    a1, a2, b1 = dm(user="1"), dm(user="1"), dm(user="2")
    await store.enqueue([a1, a2, b1], T0)
    job = await claim_ok(store)
    assert job.event == a1
    assert await store.release(job, T0 + 100, "rate limited")
    # a2 must not overtake a1; user 2 still proceeds.
    other = await claim_ok(store, T0 + 1)
    assert other.event == b1
    assert await store.claim(T0 + 1, LEASE) is None
    assert (await claim_ok(store, T0 + 100)).event == a1


async def test_concurrent_claims_never_hand_out_a_job_twice(store: Store) -> None:
    events = [dm(user=str(i % 7)) for i in range(21)]
    await store.enqueue(events, T0)
    results = await asyncio.gather(*(store.claim(T0, LEASE) for _ in range(30)))
    jobs = [j for j in results if j is not None]
    # At most one job per user at a time: 7 users.
    assert len(jobs) == 7
    assert len({j.job_id for j in jobs}) == 7
    assert len({j.event.sender_id for j in jobs}) == 7


# Leases -------------------------------------------------------------------------------------


async def test_lease_expiry_makes_job_claimable_again(store: Store) -> None:
    event = dm()
    await store.enqueue([event], T0)
    first = await claim_ok(store, T0, lease=30.0)
    assert await store.claim(T0 + 29.0, LEASE) is None
    second = await claim_ok(store, T0 + 30.5)
    assert second.event == event
    assert second.job_id == first.job_id
    assert second.attempts == 2
    assert second.claim_token != first.claim_token
    # The first worker lost its lease: it can no longer ack.
    assert not await store.complete(first, None)
    assert await store.complete(second, None)
    assert await store.depth() == 0


async def test_extend_keeps_the_lease(store: Store) -> None:
    await store.enqueue([dm()], T0)
    job = await claim_ok(store, T0, lease=10.0)
    assert await store.extend(job, T0 + 8.0, 30.0)
    assert await store.claim(T0 + 20.0, LEASE) is None
    assert await store.claim(T0 + 37.0, LEASE) is None
    assert await store.claim(T0 + 38.5, LEASE) is not None


async def test_expired_lease_of_one_user_does_not_unblock_later_jobs_early(store: Store) -> None:
    a1, a2 = dm(user="1"), dm(user="1")
    await store.enqueue([a1, a2], T0)
    await claim_ok(store, T0, lease=10)
    assert await store.claim(T0 + 5, LEASE) is None
    # After expiry the same (oldest) job comes back, never a2.
    assert (await claim_ok(store, T0 + 11)).event == a1


# Stale claim tokens -------------------------------------------------------------------------


async def _stale_setup(store: Store) -> tuple[Job, Job]:
    """A job claimed twice: the first claim (stale) and the current one."""
    await store.enqueue([dm(user="9", event_id="stale-test")], T0)
    stale = await claim_ok(store, T0, lease=5)
    current = await claim_ok(store, T0 + 6, lease=LEASE)
    assert current.job_id == stale.job_id
    return stale, current


def _forged(job: Job) -> Job:
    return replace(job, claim_token=job.claim_token + "x")


@pytest.mark.parametrize("kind", ["expired", "forged"])
async def test_stale_complete_changes_nothing(store: Store, kind: str) -> None:
    stale, current = await _stale_setup(store)
    bad = stale if kind == "expired" else _forged(current)
    state = UserState("9", opted_out=True, replies_today=3, day="2025-01-01")
    assert await store.complete(bad, state) is False
    assert await store.get_user("9") == UserState("9")
    assert await store.depth() == 1
    assert await store.complete(current, None)


@pytest.mark.parametrize("kind", ["expired", "forged"])
async def test_stale_release_changes_nothing(store: Store, kind: str) -> None:
    stale, current = await _stale_setup(store)
    bad = stale if kind == "expired" else _forged(current)
    assert await store.release(bad, T0 + 6, "x") is False
    # Still leased to the current holder.
    assert await store.claim(T0 + 7, LEASE) is None
    assert await store.complete(current, None)


@pytest.mark.parametrize("kind", ["expired", "forged"])
async def test_stale_extend_changes_nothing(store: Store, kind: str) -> None:
    stale, current = await _stale_setup(store)
    bad = stale if kind == "expired" else _forged(current)
    assert await store.extend(bad, T0 + 7, 10_000) is False
    # The current lease (until T0 + 6 + LEASE) was not extended.
    assert await store.claim(T0 + 6 + LEASE + 1, LEASE) is not None


@pytest.mark.parametrize("kind", ["expired", "forged"])
async def test_stale_dead_letter_changes_nothing(store: Store, kind: str) -> None:
    stale, current = await _stale_setup(store)
    bad = stale if kind == "expired" else _forged(current)
    state = UserState("9", opted_out=True)
    assert await store.dead_letter(bad, "403 forbidden", T0 + 7, state) is False
    assert await store.dead_letters() == []
    assert await store.get_user("9") == UserState("9")
    assert await store.depth() == 1
    assert await store.complete(current, None)


async def test_operations_after_complete_are_rejected(store: Store) -> None:
    await store.enqueue([dm()], T0)
    job = await claim_ok(store)
    assert await store.complete(job, None)
    assert await store.complete(job, None) is False
    assert await store.release(job, T0, "x") is False
    assert await store.extend(job, T0, LEASE) is False
    assert await store.dead_letter(job, "r", T0, None) is False
    assert await store.dead_letters() == []
    assert await store.depth() == 0


# User state -------------------------------------------------------------------------------


async def test_unknown_user_has_default_state(store: Store) -> None:
    assert await store.get_user("777") == UserState("777")


async def test_complete_persists_user_state(store: Store) -> None:
    await store.enqueue([dm(user="55")], T0)
    job = await claim_ok(store)
    state = UserState(
        user_id="55",
        opted_out=True,
        last_fact_at=T0 + 0.125,
        day="2025-06-15",
        replies_today=7,
        seen_facts=frozenset({"fact-1", "fact 2 with spaces", "ünïcode 🐱", '"q"'}),
    )
    assert await store.complete(job, state)
    assert await store.get_user("55") == state
    assert await store.get_user("56") == UserState("56")


async def test_complete_without_state_keeps_previous_state(store: Store) -> None:
    await store.enqueue([dm(user="55"), dm(user="55")], T0)
    state = UserState("55", last_fact_at=T0, day="2025-06-15", replies_today=1,
                      seen_facts=frozenset({"x"}))
    assert await store.complete(await claim_ok(store), state)
    assert await store.complete(await claim_ok(store), None)
    assert await store.get_user("55") == state


async def test_state_is_overwritten_not_merged(store: Store) -> None:
    await store.enqueue([dm(user="55"), dm(user="55")], T0)
    first = UserState("55", opted_out=True, last_fact_at=T0, day="d1", replies_today=5,
                      seen_facts=frozenset({"a", "b"}))
    second = UserState("55", opted_out=False, last_fact_at=None, day="d2", replies_today=0,
                       seen_facts=frozenset())
    assert await store.complete(await claim_ok(store), first)
    assert await store.complete(await claim_ok(store), second)
    assert await store.get_user("55") == second


# Release, dead letters, hand-back -----------------------------------------------------------


async def test_release_with_not_before_delays_the_job(store: Store) -> None:
    await store.enqueue([dm()], T0)
    job = await claim_ok(store, T0)
    assert await store.release(job, T0 + 60, "HTTP 503")
    assert await store.depth() == 1
    assert await store.claim(T0 + 1, LEASE) is None
    assert await store.claim(T0 + 59.9, LEASE) is None
    again = await claim_ok(store, T0 + 60)
    assert again.attempts == 2
    assert again.event == job.event


async def test_release_with_long_error_text(store: Store) -> None:
    await store.enqueue([dm()], T0)
    job = await claim_ok(store)
    assert await store.release(job, T0, "e" * 10_000)
    assert (await claim_ok(store)).job_id == job.job_id


async def test_dead_letter_records_reason_and_saves_state(store: Store) -> None:
    event = dm(user="66", event_id="dead-1")
    await store.enqueue([event], T0)
    job = await claim_ok(store)
    state = UserState("66", opted_out=False, last_fact_at=T0, day="2025-06-15",
                      replies_today=2, seen_facts=frozenset({"f"}))
    assert await store.dead_letter(job, "403 code 349: cannot send", T0 + 5, state)
    assert await store.dead_letters() == [
        DeadLetter(event_id="dead-1", user_id="66", reason="403 code 349: cannot send",
                   failed_at=T0 + 5)
    ]
    assert await store.get_user("66") == state
    assert await store.depth() == 0
    assert await store.claim(T0 + 10_000, LEASE) is None
    # Still deduped: X redelivering it does not bring it back.
    assert await store.enqueue([event], T0 + 6) == [False]


async def test_dead_letter_without_state(store: Store) -> None:
    await store.enqueue([dm(user="67")], T0)
    job = await claim_ok(store)
    assert await store.dead_letter(job, "reason", T0, None)
    assert await store.get_user("67") == UserState("67")
    assert len(await store.dead_letters()) == 1


async def test_dead_letter_unblocks_the_users_next_job(store: Store) -> None:
    a1, a2 = dm(user="1"), dm(user="1")
    await store.enqueue([a1, a2], T0)
    assert await store.dead_letter(await claim_ok(store), "permanent", T0, None)
    assert (await claim_ok(store)).event == a2


async def test_dead_letters_limit(store: Store) -> None:
    events = [dm(user=str(400 + i), event_id=f"dl-{i}") for i in range(5)]
    await store.enqueue(events, T0)
    for i in range(5):
        assert await store.dead_letter(await claim_ok(store), f"reason {i}", T0 + i, None)
    everything = await store.dead_letters()
    assert {d.event_id for d in everything} == {e.event_id for e in events}
    assert {d.reason for d in everything} == {f"reason {i}" for i in range(5)}
    assert len(await store.dead_letters(limit=2)) == 2


async def test_release_all_claims_hands_back_claimed_jobs(store: Store) -> None:
    await store.enqueue([dm(user="1"), dm(user="2"), dm(user="3")], T0)
    j1 = await claim_ok(store, T0, lease=3600)
    j2 = await claim_ok(store, T0, lease=3600)
    if not store.single_owner:
        # Shared by replicas: the claims may be another replica's, they stay where they are.
        assert await store.release_all_claims() == 0
        j3 = await claim_ok(store, T0 + 1)
        assert await store.claim(T0 + 1, LEASE) is None
        assert all([await store.complete(j, None) for j in (j1, j2, j3)])
        return
    assert await store.release_all_claims() == 2
    # Claimable at once, long before the lease would have expired.
    again = {(await claim_ok(store, T0 + 1)).job_id for _ in range(3)}
    assert {j1.job_id, j2.job_id} <= again
    # The old claims are gone.
    assert await store.complete(j1, None) is False
    assert await store.release_all_claims() == 3


async def test_release_all_claims_on_idle_store(store: Store) -> None:
    assert await store.release_all_claims() == 0
    await store.enqueue([dm()], T0)
    assert await store.release_all_claims() == 0


async def test_send_budgets_live_in_the_store_only_when_replicas_share_it(
    store: Store,
) -> None:
    families = ("dm", "post", "xchat")
    if store.single_owner:
        # Its one daemon is the account's only sender: that daemon counts its sends itself.
        assert [store.shared_send_budget(family) for family in families] == [None] * 3
        return
    dms, posts = store.shared_send_budget("dm"), store.shared_send_budget("post")
    assert dms is not None and posts is not None
    windows = {60.0: 1}
    assert await dms(windows) == 0.0
    assert 0 < await dms(windows) <= 60  # the window's one DM is taken
    assert await posts(windows) == 0.0  # posts are counted apart


async def test_depth_counts_waiting_and_in_progress(store: Store) -> None:
    assert await store.depth() == 0
    await store.enqueue([dm(user="1"), dm(user="2"), dm(user="3")], T0)
    assert await store.depth() == 3
    job = await claim_ok(store)
    assert await store.depth() == 3
    await store.complete(job, None)
    assert await store.depth() == 2
    job = await claim_ok(store)
    await store.release(job, T0 + 100, "later")
    assert await store.depth() == 2
    await store.dead_letter(await claim_ok(store), "x", T0, None)
    assert await store.depth() == 1


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_check_writable(store: Store) -> None:
    await store.check_writable()


async def test_pending_lists_queued_jobs_oldest_first(store: Store) -> None:
    assert await store.pending() == []
    a, b, c = dm(user="1", event_id="pa"), dm(user="2", event_id="pb"), dm(user="1",
                                                                        event_id="pc")
    await store.enqueue([a, b], T0)
    await store.enqueue([c], T0 + 1)
    job = await claim_ok(store, T0)
    assert job.event == a
    other = await claim_ok(store, T0)
    assert await store.release(other, T0 + 50, "HTTP 503")
    rows = await store.pending()
    assert [(r.event_id, r.user_id) for r in rows] == [("pa", "1"), ("pb", "2"), ("pc", "1")]
    assert [r.claimed for r in rows] == [True, False, False]
    assert [r.attempts for r in rows] == [1, 1, 0]
    assert [r.enqueued_at for r in rows] == [T0, T0, T0 + 1]
    assert rows[1].available_at == T0 + 50 and rows[1].last_error == "HTTP 503"
    assert rows[2].available_at == T0 + 1 and rows[2].last_error is None
    assert [r.event_id for r in await store.pending(limit=2)] == ["pa", "pb"]
    assert await store.pending(limit=0) == []


async def test_retry_dead_letters_queues_them_again(store: Store) -> None:
    events = [dm(user=str(500 + i), event_id=f"rd-{i}") for i in range(3)]
    await store.enqueue(events, T0)
    for _ in events:
        assert await store.dead_letter(await claim_ok(store), "403", T0, None)
    assert await store.retry_dead_letters([], T0) == 0
    assert await store.retry_dead_letters(["rd-1", "unknown"], T0 + 1) == 1
    assert [d.event_id for d in await store.dead_letters()] == ["rd-2", "rd-0"]
    job = await claim_ok(store, T0 + 1)
    assert job.event == events[1] and job.attempts == 1
    assert await store.complete(job, None)
    assert await store.retry_dead_letters(None, T0 + 2) == 2
    assert await store.dead_letters() == []
    assert sorted(j.event.event_id for j in await drain(store, T0 + 2)) == ["rd-0", "rd-2"]
    # Still deduped afterwards.
    assert await store.enqueue(events, T0 + 3) == [False] * 3


# Prune --------------------------------------------------------------------------------------


async def test_prune_forgets_old_event_ids(store: Store, backend: Backend) -> None:
    old, recent = dm(event_id="old"), dm(event_id="recent")
    await store.enqueue([old], T0)
    await store.enqueue([recent], T0 + 100)
    await drain(store, T0 + 100)
    if not backend.prune_forgets:
        # Event ids expire by themselves (see the Redis tests below); prune forgets nothing.
        assert await store.prune(T0 + 50) == 0
        assert await store.enqueue([old, recent], T0 + 200) == [False, False]
        return
    assert await store.prune(T0 + 50) == 1
    assert await store.enqueue([old, recent], T0 + 200) == [True, False]
    assert [j.event for j in await drain(store, T0 + 200)] == [old]


async def test_prune_keeps_ids_seen_at_or_after_the_cutoff(store: Store) -> None:
    await store.enqueue([dm(event_id="kept")], T0)
    await drain(store, T0)
    assert await store.prune(T0) == 0
    assert await store.enqueue([dm(event_id="kept")], T0 + 1) == [False]


async def test_prune_while_the_job_is_still_queued(store: Store) -> None:
    """A job can outlive the dedupe window (long rate-limit backoff). X redelivering its
    event afterwards must not break the enqueue of the whole batch."""
    pending = dm(user="1", event_id="pending")
    await store.enqueue([pending], T0)
    job = await claim_ok(store, T0)
    assert await store.release(job, T0 + 7200, "rate limited")
    await store.prune(T0 + 3600)
    fresh = dm(user="2", event_id="fresh")
    flags = await store.enqueue([pending, fresh], T0 + 3601)
    assert flags[1] is True
    # The still-queued event is not queued a second time.
    assert await store.depth() == 2
    jobs = await drain(store, T0 + 7200)
    assert sorted(j.event.event_id for j in jobs) == ["fresh", "pending"]


# X Chat: the prepared reply and the conversation keys ---------------------------------------


def xchat_event(user: str = "42", event_id: str | None = None) -> InboundDM:
    """An X Chat job as the webhook stores it: no text, the delivery as it came."""
    eid = event_id if event_id is not None else f"xchat:x-{next(_counter)}"
    return InboundDM(
        event_id=eid, sender_id=user, recipient_id="1000", for_user_id="1000", text="",
        created_at=T0, kind="xchat",
        xchat={"data": {"event_type": "chat.received", "event_uuid": "-17",
                        "payload": {"id": eid, "sender_id": user, "encoded_event": "QUJD"}}},
    )


async def test_xchat_event_round_trips(store: Store) -> None:
    event = xchat_event()
    assert await store.enqueue([event], T0) == [True]
    assert (await claim_ok(store)).event == event


async def test_a_saved_reply_comes_back_with_the_next_claim(store: Store) -> None:
    await store.enqueue([xchat_event(event_id="xchat:r1")], T0)
    job = await claim_ok(store)
    prepared = replace(job.event, reply={"payload": {"message_id": "m-1"}, "action": "fact"})
    assert await store.save_reply(job, prepared)
    assert await store.release(job, T0 + 1, "HTTP 503")
    again = await claim_ok(store, T0 + 1)
    assert again.job_id == job.job_id
    assert again.event == prepared
    # The dead letter keeps what was last saved too.
    assert await store.dead_letter(again, "HTTP 400", T0 + 2, None)
    assert await store.retry_dead_letters(None, T0 + 3) == 1
    assert (await claim_ok(store, T0 + 3)).event == prepared


@pytest.mark.parametrize("kind", ["expired", "forged"])
async def test_stale_save_reply_changes_nothing(store: Store, kind: str) -> None:
    await store.enqueue([xchat_event(user="9", event_id="xchat:s1")], T0)
    stale = await claim_ok(store, T0, lease=5)
    current = await claim_ok(store, T0 + 6)
    bad = stale if kind == "expired" else _forged(current)
    original = current.event
    assert await store.save_reply(bad, replace(original, reply={"payload": {}})) is False
    assert await store.release(current, T0 + 7, "back")
    assert (await claim_ok(store, T0 + 7)).event == original


async def test_conversation_keys_are_kept_replaced_and_read_back(store: Store) -> None:
    assert await store.load_conversation_keys() == {}
    # Opaque bytes, any of them: the store neither reads nor reshapes a sealed blob.
    first, second, newer = b"xck1.\x00\xffone", bytes(range(256)), b"xck1.newer"
    await store.save_conversation_keys({"42:1000": first, "g77": second})
    assert await store.load_conversation_keys() == {"42:1000": first, "g77": second}
    await store.save_conversation_keys({"42:1000": newer})
    await store.save_conversation_keys({})
    assert await store.load_conversation_keys(["42:1000", "7:1000"]) == {"42:1000": newer}
    assert await store.load_conversation_keys(["g77"]) == {"g77": second}
    assert await store.load_conversation_keys([]) == {}
    assert await store.load_conversation_keys() == {"42:1000": newer, "g77": second}


async def test_conversation_keys_survive_close_and_reopen(backend: Backend) -> None:
    blobs = {f"{n}:1000": f"xck1.sealed-{n}".encode() for n in range(1, 4)}
    first = backend.new_store()
    await first.open()
    await first.save_conversation_keys(blobs)
    await first.close()
    second = backend.new_store()
    await second.open()
    try:
        assert await second.load_conversation_keys() == blobs
    finally:
        await second.close()


# Durability ---------------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(backend: Backend) -> None:
    first = backend.new_store()
    await first.open()
    waiting, claimed, done, dead = (dm(user=str(u), event_id=f"d-{u}") for u in (1, 2, 3, 4))
    await first.enqueue([waiting, claimed, done, dead], T0)
    jobs = {}
    for _ in range(4):
        job = await claim_ok(first, T0, lease=3600)
        jobs[job.event.event_id] = job
    await first.release(jobs["d-1"], T0, "back")
    state = UserState("3", opted_out=True, last_fact_at=T0, day="2025-06-15",
                      replies_today=4, seen_facts=frozenset({"s1", "s2"}))
    assert await first.complete(jobs["d-3"], state)
    assert await first.dead_letter(jobs["d-4"], "gone", T0, None)
    await first.close()

    second = backend.new_store()
    await second.open()
    try:
        assert await second.depth() == 2
        assert await second.get_user("3") == state
        assert [d.event_id for d in await second.dead_letters()] == ["d-4"]
        assert await second.enqueue([waiting, claimed, done, dead], T0 + 1) == [False] * 4
        if second.single_owner:
            # The job claimed by the previous run is handed back on request.
            assert await second.release_all_claims() == 1
            remaining = await drain(second, T0 + 1)
        else:
            # Never handed back by a replica; it returns when the old lease runs out.
            assert await second.release_all_claims() == 0
            first_round = await drain(second, T0 + 1)
            assert [j.event.event_id for j in first_round] == ["d-1"]
            remaining = first_round + await drain(second, T0 + 3601)
        assert sorted(j.event.event_id for j in remaining) == ["d-1", "d-2"]
    finally:
        await second.close()


# Property: any batch sequence keeps dedupe and per-user FIFO ----------------------------------

batches = st.lists(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3)), max_size=6), min_size=1,
    max_size=5,
)


async def _dedupe_and_order_scenario(
    store: Store, batches: list[list[tuple[int, int]]]
) -> None:
    await store.open()
    try:
        seen: set[str] = set()
        queued: list[InboundDM] = []
        for n, batch in enumerate(batches):
            events = [dm(user=str(u), event_id=f"p{e}") for e, u in batch]
            expected = []
            for event in events:
                expected.append(event.event_id not in seen)
                if event.event_id not in seen:
                    queued.append(event)
                seen.add(event.event_id)
            assert await store.enqueue(events, T0 + n) == expected
        assert await store.depth() == len(queued)
        order = [j.event for j in await drain(store, T0 + 100)]
        assert sorted(e.event_id for e in order) == sorted(e.event_id for e in queued)
        for user in {e.sender_id for e in queued}:
            assert [e for e in order if e.sender_id == user] == [
                e for e in queued if e.sender_id == user
            ]
    finally:
        await store.close()


@given(batches=batches)
@settings(max_examples=25, deadline=None)
def test_sqlite_dedupe_and_per_user_order_property(batches: list[list[tuple[int, int]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_dedupe_and_order_scenario(SQLiteStore(Path(tmp) / "prop.db"), batches))


@given(batches=batches)
@settings(max_examples=25, deadline=None)
def test_redis_dedupe_and_per_user_order_property(
    redis_server: RedisServer, batches: list[list[tuple[int, int]]]
) -> None:
    store = RedisStore(redis_server.url_with_prefix())
    asyncio.run(_dedupe_and_order_scenario(store, batches))


# SQLite only ----------------------------------------------------------------------------------


async def test_sqlite_second_owner_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "owned.db"
    first = SQLiteStore(path)
    await first.open()
    second = SQLiteStore(path)
    with pytest.raises(StoreError):
        await second.open()
    # The refused opener did not disturb the owner.
    assert await first.enqueue([dm(event_id="owned")], T0) == [True]
    await first.close()

    third = SQLiteStore(path)
    await third.open()
    try:
        assert await third.depth() == 1
    finally:
        await third.close()
    # The instance refused earlier can open once the file is free.
    await second.open()
    await second.close()


async def test_sqlite_store_can_be_reopened_by_the_same_instance(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "again.db")
    await store.open()
    await store.enqueue([dm(event_id="x")], T0)
    await store.close()
    await store.open()
    try:
        assert await store.depth() == 1
    finally:
        await store.close()


async def test_sqlite_unopened_store_raises_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "never.db")
    with pytest.raises(StoreError):
        await store.depth()


async def test_sqlite_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    assert path.exists()


def test_create_store_by_url(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'u.db'}")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "u.db"
    with pytest.raises(StoreError):
        create_store("mysql://localhost/catbot")


# Redis only -----------------------------------------------------------------------------------


@pytest.fixture
async def redis_pair(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two replicas' stores on the same data."""
    url = redis_server.url_with_prefix()
    a, b = RedisStore(url), RedisStore(url)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def _pending_owners(server: RedisServer, store: RedisStore) -> list[str]:
    client = server.client()
    try:
        rows = client.xpending_range(store.stream, "workers", "-", "+", 100)
        return [str(row["consumer"]) for row in rows]
    finally:
        client.close()


async def test_redis_replicas_never_claim_a_job_twice(
    redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = redis_pair
    events = [dm(user=str(600 + i % 20), event_id=f"rr-{i}") for i in range(60)]
    await asyncio.gather(a.enqueue(events[:30], T0), b.enqueue(events[30:], T0))
    answered: list[InboundDM] = []

    async def worker(store: RedisStore) -> None:
        while True:
            job = await store.claim(T0, LEASE)
            if job is None:
                if await store.depth() == 0:
                    return
                await asyncio.sleep(0.001)
                continue
            answered.append(job.event)
            await asyncio.sleep(0)
            assert await store.complete(job, None)

    await asyncio.wait_for(asyncio.gather(*(worker(s) for s in (a, b, a, b, a, b))), 20)
    assert sorted(e.event_id for e in answered) == sorted(e.event_id for e in events)
    for user in {e.sender_id for e in events}:
        assert [e for e in answered if e.sender_id == user] == [
            e for e in events if e.sender_id == user
        ]


async def test_redis_same_event_at_two_replicas_is_queued_once(
    redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = redis_pair
    event = dm(event_id="twice")
    flags = await asyncio.gather(*(s.enqueue([event], T0) for s in (a, b) * 10))
    assert sorted(f for [f] in flags) == [False] * 19 + [True]
    assert await a.depth() == 1


async def test_redis_dead_replicas_claims_are_taken_over_after_the_lease(
    redis_server: RedisServer, redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    dead, alive = redis_pair
    await dead.enqueue([dm(user="1", event_id="t1"), dm(user="1", event_id="t2")], T0)
    held = await claim_ok(dead, T0, lease=10)
    assert _pending_owners(redis_server, dead) == [dead.consumer]
    # Within the lease the other replica gets nothing: not the job, not the user's next one.
    assert await alive.claim(T0 + 9.9, LEASE) is None
    taken = await claim_ok(alive, T0 + 10.5)
    assert taken.job_id == held.job_id and taken.attempts == 2
    assert _pending_owners(redis_server, dead) == [alive.consumer]
    assert not await dead.complete(held, UserState("1", opted_out=True))
    assert not await dead.extend(held, T0 + 11, LEASE)
    assert await alive.complete(taken, None)
    assert await alive.get_user("1") == UserState("1")
    assert (await claim_ok(dead, T0 + 11)).event.event_id == "t2"


async def test_redis_leaves_no_queue_keys_behind(
    redis_server: RedisServer, redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = redis_pair
    await a.enqueue([dm(user=str(u % 3), event_id=f"k{u}") for u in range(9)], T0)
    job = await claim_ok(a)
    assert await a.release(job, T0 + 5, "later")
    await drain(a, T0 + 5)
    job = await claim_ok(a, T0 + 5) if await a.depth() else None
    assert job is None
    client = redis_server.client()
    try:
        keys = {k.removeprefix(a.prefix) for k in client.keys(a.prefix + "*")}
        assert {k for k in keys if not k.startswith("seen:")} == {"turns", "next_id"}
        assert client.xlen(a.stream) == 0
        assert all(client.pttl(a.prefix + k) > 0 for k in keys if k.startswith("seen:"))
    finally:
        client.close()


async def test_redis_event_ids_expire_after_the_dedupe_window(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url_with_prefix(), dedupe_seconds=0.3)
    await store.open()
    try:
        done = dm(user="1", event_id="gone")
        await store.enqueue([done], T0)
        await drain(store, T0)
        assert await store.enqueue([done], T0) == [False]
        await asyncio.sleep(0.4)
        # Answered and past the window: forgotten, like SQLite's prune does.
        assert await store.enqueue([done], T0 + 1) == [True]
        # An event whose job is still queued stays deduped after its window expired.
        assert await store.enqueue([dm(user="3", event_id="slow")], T0 + 1) == [True]
        job = await claim_ok(store, T0 + 1)
        assert await store.release(job, T0 + 7200, "rate limited")
        await asyncio.sleep(0.4)
        assert await store.enqueue([dm(user="3", event_id="slow")], T0 + 2) == [False]
        assert await store.depth() == 2
    finally:
        await store.close()


async def test_redis_lost_consumer_group_is_created_again(redis_server: RedisServer) -> None:
    """A Redis restarted without its data (no AOF): the daemon keeps working."""
    store = RedisStore(redis_server.url_with_prefix())
    await store.open()
    try:
        client = redis_server.client()
        client.delete(store.stream)
        client.close()
        assert await store.claim(T0, LEASE) is None
        await store.enqueue([dm(event_id="after-loss")], T0)
        assert (await claim_ok(store)).event.event_id == "after-loss"
    finally:
        await store.close()


async def test_redis_out_of_memory_refuses_writes_whole(
    redis_server: RedisServer, redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = redis_pair
    await a.enqueue([dm(event_id="before-oom")], T0)
    client = redis_server.client()
    try:
        client.config_set("maxmemory", "1")
        with pytest.raises(StoreError):
            await a.check_writable()
        with pytest.raises(StoreError, match="maxmemory"):
            await a.enqueue([dm(user="2", event_id="during-oom"), dm(user="3")], T0)
        # Reads still work; nothing of the refused batch was written.
        assert await a.depth() == 1
    finally:
        client.config_set("maxmemory", "0")
        client.close()
    await a.check_writable()
    assert await a.enqueue([dm(user="2", event_id="during-oom")], T0) == [True]


async def test_redis_global_send_budget_is_shared(
    redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = redis_pair
    windows = {0.6: 3, 30.0: 5}
    assert [await s.take_send_slot(windows) for s in (a, b, a)] == [0.0, 0.0, 0.0]
    wait = await b.take_send_slot(windows)
    assert 0.3 < wait <= 0.6
    await asyncio.sleep(wait + 0.05)
    assert await b.take_send_slot(windows) == 0.0
    assert await a.take_send_slot(windows) == 0.0
    # The 30 s window is full now (5 sends), whatever the short one says.
    await asyncio.sleep(0.65)
    assert 25 < await a.take_send_slot(windows) <= 30


async def test_redis_url_options_and_ownership(redis_server: RedisServer, tmp_path: Path) -> None:
    store = create_store(f"{redis_server.url}?prefix=opts&socket_timeout=1.5")
    assert isinstance(store, RedisStore)
    assert store.prefix == "opts:" and "prefix" not in store.url
    assert store.single_owner is False
    assert create_store(f"sqlite:///{tmp_path / 'o.db'}").single_owner is True
    await store.open()
    try:
        assert await store.release_all_claims() == 0
        await store.ping()
    finally:
        await store.close()


async def test_redis_unreachable_fails_fast_with_store_error() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot open Redis store"):
        await store.open()
    assert time.monotonic() - started < 5
    with pytest.raises(StoreError):
        await store.depth()


async def test_redis_prune_forgets_finished_consumers_only(
    redis_server: RedisServer, redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = redis_pair
    c = RedisStore(f"{redis_server.url}?prefix={a.prefix.rstrip(':')}")
    assert c.prefix == a.prefix
    await c.open()
    try:
        await a.enqueue([dm(user="1"), dm(user="2")], T0)
        assert await a.complete(await claim_ok(a), None)  # a: a consumer holding nothing
        held = await claim_ok(c)  # c: a consumer holding a claim
        await asyncio.sleep(0.05)
        b.forget_consumers_idle_ms = 10
        assert await b.prune(T0) == 0
        client = redis_server.client()
        try:
            names = {str(x["name"]) for x in client.xinfo_consumers(a.stream, "workers")}
        finally:
            client.close()
        assert names == {c.consumer}
        assert await c.complete(held, None)
    finally:
        await c.close()


async def test_shared_send_budget_waits_for_room_in_redis(
    redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    from catbot.outbox.ratelimit import SharedSendBudget

    a, b = redis_pair
    windows = {0.5: 2}
    budgets = [SharedSendBudget(windows, a.take_send_slot),
               SharedSendBudget(windows, b.take_send_slot)]
    started = time.monotonic()
    waits = [await budgets[i % 2].reserve() for i in range(3)]
    assert waits[0] < 0.1 and waits[1] < 0.1
    assert 0.3 < waits[2] < 1.0
    assert time.monotonic() - started < 1.0


def test_a_missing_redis_server_fails_loudly_never_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    import testkit.redis_server as helper

    monkeypatch.setattr(helper.shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(helper.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        helper.redis_server_binary()
