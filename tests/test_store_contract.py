"""The `Store` contract, run against every implementation.

Add an implementation by adding a parameter to the `backend` fixture: a factory that makes a
new, unopened store on the same underlying data (so close/reopen can be tested). Tests that
only make sense for one implementation are at the end, marked by name.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catbot.brain import UserState
from catbot.models import DeadLetter, InboundDM, Job
from catbot.store import Store, StoreError, create_store
from catbot.store.sqlite import SQLiteStore

T0 = 1_750_000_000.0
LEASE = 30.0


@dataclass
class Backend:
    name: str
    new_store: Callable[[], Store]


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "data" / "catbot.db"
        return Backend("sqlite", lambda: SQLiteStore(path))
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


# Prune --------------------------------------------------------------------------------------


async def test_prune_forgets_old_event_ids(store: Store) -> None:
    old, recent = dm(event_id="old"), dm(event_id="recent")
    await store.enqueue([old], T0)
    await store.enqueue([recent], T0 + 100)
    await drain(store, T0 + 100)
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
        # The job claimed by the previous run is handed back on request.
        assert await second.release_all_claims() == 1
        remaining = await drain(second, T0 + 1)
        assert sorted(j.event.event_id for j in remaining) == ["d-1", "d-2"]
    finally:
        await second.close()


# Property: any batch sequence keeps dedupe and per-user FIFO ----------------------------------

batches = st.lists(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3)), max_size=6), min_size=1,
    max_size=5,
)


@given(batches=batches)
@settings(max_examples=25, deadline=None)
def test_sqlite_dedupe_and_per_user_order_property(batches: list[list[tuple[int, int]]]) -> None:
    async def scenario(path: Path) -> None:
        store = SQLiteStore(path)
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

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp) / "prop.db"))


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
