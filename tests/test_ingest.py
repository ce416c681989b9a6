"""The ingest step (`catbot.webhook.ingest`): a verified body in, jobs in a real SQLite store
out, every event counted in `catbot_events_total{kind,fate}` under its bounded labels."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from catbot.models import Job
from catbot.observability import Metrics
from catbot.store.sqlite import SQLiteStore
from catbot.webhook.ingest import Ingest, IngestPolicy, IngestResult

BOT = "1111111111111111111"
FRIEND = "2222222222222222222"
NOW = 1_750_000_000.0
NOW_MS = int(NOW * 1000)
CHAT_FIXTURE = Path(__file__).parent / "fixtures" / "x" / "activity" / "chat_received.json"


def dm(event_id: str = "101", sender: str = FRIEND, recipient: str = BOT,
       created_ms: int = NOW_MS) -> dict[str, Any]:
    return {
        "type": "message_create",
        "id": event_id,
        "created_timestamp": str(created_ms),
        "message_create": {"target": {"recipient_id": recipient}, "sender_id": sender,
                           "message_data": {"text": "hi"}},
    }


def account_activity(*events: dict[str, Any], for_user_id: str = BOT) -> bytes:
    return json.dumps({"for_user_id": for_user_id, "direct_message_events": list(events)}).encode()


def mention(tweet_id: str = "501") -> bytes:
    tweet = {"id_str": tweet_id, "text": "@bot cat facts please", "user": {"id_str": FRIEND},
             "timestamp_ms": str(NOW_MS), "entities": {"user_mentions": [{"id_str": BOT}]}}
    return json.dumps({"for_user_id": BOT, "tweet_create_events": [tweet]}).encode()


def chat_received() -> bytes:
    # X's documented example, its truncated base64 fields replaced, sent just now.
    body: dict[str, Any] = json.loads(CHAT_FIXTURE.read_text())
    body["data"]["payload"].update(encoded_event="QUJD", conversation_key_change_event="REVG",
                                   created_at_msec=str(NOW_MS))
    return json.dumps(body).encode()


class Rig:
    def __init__(self, store: SQLiteStore, **policy: Any) -> None:
        self.store = store
        self.metrics = Metrics()
        self.wakeups = 0
        self.ingest = Ingest(
            IngestPolicy(**{"bot_user_id": BOT, "max_event_age_seconds": 3600.0, **policy}),
            store, self.metrics, on_enqueued=self.wake,
        )

    def wake(self) -> None:
        self.wakeups += 1

    async def accept(self, body: bytes, now: float = NOW) -> IngestResult:
        return await self.ingest.accept(body, now)

    def count(self, kind: str, fate: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "catbot_events_total", {"kind": kind, "fate": fate})
        return value or 0.0

    def counted(self) -> dict[tuple[str, str], float]:
        """Every non-zero `catbot_events_total` series, by (kind, fate)."""
        return {
            (sample.labels["kind"], sample.labels["fate"]): sample.value
            for family in self.metrics.registry.collect() if family.name == "catbot_events"
            for sample in family.samples
            if sample.name == "catbot_events_total" and sample.value
        }

    async def jobs(self) -> list[Job]:
        claimed = []
        while (job := await self.store.claim(NOW, 30.0)) is not None:
            claimed.append(job)
            # A user's next job is claimable once this one is acked.
            await self.store.complete(job, None)
        return claimed


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "catbot.db")
    await store.open()
    yield store
    await store.close()


async def test_a_dm_is_queued_counted_and_wakes_the_outbox(store: SQLiteStore) -> None:
    rig = Rig(store)
    assert await rig.accept(account_activity(dm("101"))) is IngestResult.ACCEPTED
    [job] = await rig.jobs()
    assert (job.event.event_id, job.event.sender_id, job.event.kind) == ("101", FRIEND, "dm")
    assert job.enqueued_at == NOW
    assert rig.counted() == {("direct_message", "enqueued"): 1}
    assert rig.wakeups == 1


async def test_a_redelivery_is_a_duplicate_acknowledged_without_a_second_job(
    store: SQLiteStore,
) -> None:
    rig = Rig(store)
    body = account_activity(dm("101"))
    assert await rig.accept(body) is IngestResult.ACCEPTED
    assert await rig.accept(body, NOW + 5) is IngestResult.ACCEPTED
    assert len(await store.pending()) == 1
    assert rig.counted() == {("direct_message", "enqueued"): 1,
                             ("direct_message", "duplicate"): 1}
    # Nothing new to answer: the workers are not woken for it.
    assert rig.wakeups == 1


@pytest.mark.parametrize(("event", "fate"), [
    (dm(sender=BOT, recipient=FRIEND), "own"),
    (dm(created_ms=NOW_MS - 7_200_000), "stale"),
    (dm(created_ms=NOW_MS + 3_600_000), "future"),
])
async def test_events_not_to_answer_are_acknowledged_counted_and_not_stored(
    store: SQLiteStore, event: dict[str, Any], fate: str,
) -> None:
    rig = Rig(store)
    assert await rig.accept(account_activity(event)) is IngestResult.ACCEPTED
    assert await store.pending() == []
    assert rig.counted() == {("direct_message", fate): 1}
    assert rig.wakeups == 0


async def test_an_event_for_another_account_is_not_for_us(store: SQLiteStore) -> None:
    rig = Rig(store)
    other = "3333"
    body = account_activity(dm(recipient=other), for_user_id=other)
    assert await rig.accept(body) is IngestResult.ACCEPTED
    assert await store.pending() == []
    assert rig.counted() == {("direct_message", "not_for_us"): 1}


async def test_one_delivery_is_sorted_event_by_event(store: SQLiteStore) -> None:
    rig = Rig(store)
    body = account_activity(dm("1"), dm("2", sender=BOT, recipient=FRIEND),
                            dm("3", sender="4444"), dm("4", created_ms=NOW_MS - 7_200_000),
                            {"type": "message_create", "id": "not-an-id"})
    assert await rig.accept(body) is IngestResult.ACCEPTED
    assert sorted(job.event.event_id for job in await rig.jobs()) == ["1", "3"]
    assert rig.counted() == {
        ("direct_message", "enqueued"): 2, ("direct_message", "own"): 1,
        ("direct_message", "stale"): 1, ("direct_message", "malformed"): 1,
    }
    assert rig.wakeups == 1


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"a string"', b"\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_is_malformed(
    store: SQLiteStore, body: bytes,
) -> None:
    rig = Rig(store)
    assert await rig.accept(body) is IngestResult.MALFORMED
    assert await store.pending() == []
    assert rig.counted() == {}


async def test_an_unknown_envelope_is_acknowledged_and_counted(store: SQLiteStore) -> None:
    rig = Rig(store)
    assert await rig.accept(b'{"something": "else"}') is IngestResult.ACCEPTED
    assert rig.counted() == {("unknown", "ignored"): 1}


async def test_mentions_are_queued_only_when_answered(store: SQLiteStore) -> None:
    off = Rig(store)
    assert await off.accept(mention("501")) is IngestResult.ACCEPTED
    assert await store.pending() == []
    assert off.counted() == {("mention", "mentions_off"): 1}

    on = Rig(store, reply_to_mentions=True)
    assert await on.accept(mention("501")) is IngestResult.ACCEPTED
    [job] = await on.jobs()
    assert (job.event.event_id, job.event.kind, job.event.tweet_id) == (
        "tweet:501", "mention", "501")
    assert on.counted() == {("mention", "enqueued"): 1}


async def test_x_chat_is_stored_as_ciphertext_only_while_it_is_on(store: SQLiteStore) -> None:
    off = Rig(store)
    assert await off.accept(chat_received()) is IngestResult.ACCEPTED
    assert await store.pending() == []
    assert off.counted() == {("chat", "ignored"): 1}

    on = Rig(store, answer_xchat=True)
    assert await on.accept(chat_received()) is IngestResult.ACCEPTED
    [job] = await on.jobs()
    assert job.event.kind == "xchat" and job.event.text == ""
    assert job.event.xchat is not None
    assert job.event.xchat["data"]["payload"]["encoded_event"] == "QUJD"
    assert on.counted() == {("chat", "enqueued"): 1}
    assert await on.accept(chat_received()) is IngestResult.ACCEPTED
    assert on.count("chat", "duplicate") == 1


async def test_a_store_that_cannot_take_the_events_asks_for_a_retry(
    store: SQLiteStore,
) -> None:
    rig = Rig(store)
    await store.close()
    assert await rig.accept(account_activity(dm("101"))) is IngestResult.STORE_FAILED
    # Not stored: counted neither as enqueued nor as a duplicate, and no worker woken.
    assert rig.counted() == {}
    assert rig.wakeups == 0
    await store.open()
    assert await rig.accept(account_activity(dm("101"))) is IngestResult.ACCEPTED
    assert len(await store.pending()) == 1


def test_results_are_the_webhook_request_labels() -> None:
    # The handler counts catbot_webhook_requests_total{outcome} with these values.
    assert {r.value for r in IngestResult} == {"accepted", "bad_json", "store_error"}
