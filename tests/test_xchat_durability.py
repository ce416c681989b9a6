"""X Chat keeps DM's guarantees through crashes and shutdowns: real daemon, real emulator.

What each test would catch:
- kill -9 while X Chat replies are queued: a reply lost, or sent twice because the retry
  encrypted it again (a new `message_id`) instead of resending the stored one; a queued
  message that cannot be read after the restart because its conversation key lived only in
  memory (the deliveries here carry no key change, and the test checks the daemon never
  asked X's history for it: the key can only have come from the store); on SQLite and Redis.
- SIGTERM with a reply in flight: the job not handed back, or answered twice after; a
  restart with X Chat turned off answering the job as an empty DM instead of keeping it
  (dead-lettered, retried once X Chat is back).
- the stored reply's format not reading back, or a damaged one taken as a reply.
- a friend's newly registered key, met moments after the cache last asked X, dead-lettering
  the message instead of bringing it back once X may be asked again.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from catbot.brain import Action
from catbot.emulator.xchat_events import MessageEvent, b64decode
from catbot.models import UserState
from catbot.observability import Metrics
from catbot.outbox.xchat import PreparedReply, SenderKeysNotRefreshed, XChatSide
from catbot.store.sqlite import SQLiteStore
from catbot.x.dm import Credentials
from catbot.xchat.client import XChatClient
from catbot.xchat.crypto import SendPayload, XChatCrypto
from catbot.xchat.errors import MalformedPayloadError, VerificationError
from catbot.xchat.identity import generate_identity, load_identity
from catbot.xchat.keycache import SigningKeyCache
from catbot.xchat.wire import ChatReceived, PublicKeyRecord, parse_chat_received
from testkit.processes import BOT_ID, Daemon, free_port, wait_for
from testkit.redis_server import RedisServer
from testkit.xchat_builders import Friend, chat_received
from tests.test_xchat_e2e import CORPUS, FRIEND, XChatPair, catbot

# A send that X answers later than the daemon waits: the daemon sees a timeout, X keeps the
# message (the emulator finishes the request) — the case a re-encrypted retry duplicates.
SLOW_SENDS = {"latency": {"POST /2/chat/conversations/*/messages": 4.0}}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def log_events(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    found = []
    for line in daemon.output().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            found.append(entry)
    return found


def wait_log(daemon: Daemon, name: str, event_id: str, timeout: float = 20.0) -> dict[str, Any]:
    entries: list[dict[str, Any]] = wait_for(
        lambda: [e for e in log_events(daemon, name) if e.get("event_id") == event_id],
        timeout=timeout, what=f"{name} for {event_id}")
    return entries[0]


def friend_writes(pair: XChatPair, text: str, *, with_key_change: bool) -> str:
    """The friend writes; the test delivers it as X would (optionally without the key
    change, as X's live variant does). Returns the job's event id."""
    pair.write(text)
    events, key_changes = pair.history()
    newest = next(e for e in events if MessageEvent.decode(b64decode(e)).sender_id == FRIEND)
    delivery_id = pair.deliver(newest, key_change=key_changes[-1] if with_key_change else None)
    return "xchat:" + delivery_id


def x_requests(pair: XChatPair, method: str, suffix: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = pair.emulator.control("GET", "requests")["requests"]
    return [e for e in entries if e["method"] == method and e["path"].endswith(suffix)]


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_kill_9_with_x_chat_replies_queued_answers_each_once(
    tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    store_url = None
    if store == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store_url = server.url_with_prefix()
    pair = XChatPair(tmp_path, store_url=store_url, deliver_chat=False, daemon_env={
        "CATBOT_SEND_TIMEOUT_SECONDS": "1", "CATBOT_SEND_MAX_ATTEMPTS": "2",
        # A replica's claims return when its lease ends (Redis never hands them back).
        "CATBOT_LEASE_SECONDS": "3",
    }).start()
    try:
        friend_writes(pair, "first", with_key_change=True)
        pair.wait_replies(1)
        first = pair.daemon

        pair.emulator.faults(**SLOW_SENDS)
        second = friend_writes(pair, "second", with_key_change=False)
        prepared = wait_log(first, "xchat_reply_prepared", second)
        # Queued behind the second (one user, one job at a time): not read yet.
        third = friend_writes(pair, "third", with_key_change=False)
        wait_log(first, "event_enqueued", third)
        assert not log_events(first, "decided")[2:], "the third was read before the crash"
        first.signal(signal.SIGKILL)
        first.wait(10)

        pair.emulator.faults()
        restart_at = time.time()
        restarted = pair.start_daemon()
        replies = pair.wait_replies(3, timeout=40)
        wait_for(lambda: pair.metric("catbot_outbox_depth") == 0, what="an empty outbox")
        assert len(pair.replies()) == 3

        assert all(r["text"] in CORPUS for r in replies)
        # The second answer is the message prepared before the crash, sent more than once
        # and shown once; the third was read after the restart.
        assert replies[1]["id"] == prepared["message_id"]
        assert len({r["id"] for r in replies}) == 3
        # X saw the second at least twice (before the crash, answered too late, and after),
        # and shows it once. A request is logged when it ends: the slow one, 4 s after.
        wait_for(lambda: len(x_requests(pair, "POST", f"/2/chat/conversations/{FRIEND}/"
                                         "messages")) >= 4, what="every send logged at X")
        wait_log(restarted, "decided", third)
        # The third's delivery had no key change and X's history was never asked (by the
        # restarted daemon; the test read it before): its key came from the store.
        assert [r for r in x_requests(pair, "GET", "/events") if r["at"] >= restart_at] == []
        [loaded] = log_events(restarted, "xchat_keys_loaded")
        assert (loaded["conversations"], loaded["rejected"]) == (1, 0)
    finally:
        pair.stop()
        print(pair.logs())


def test_sigterm_hands_back_an_x_chat_reply_in_flight(tmp_path: Path) -> None:
    pair = XChatPair(tmp_path, daemon_env={
        "CATBOT_SEND_TIMEOUT_SECONDS": "30", "CATBOT_SHUTDOWN_GRACE_SECONDS": "1",
    }).start()
    try:
        pair.write("first")
        pair.wait_replies(1)
        draining = pair.daemon
        pair.emulator.faults(latency={"POST /2/chat/conversations/*/messages": 20.0})
        pair.write("second")
        # The first reply was prepared too: the second is the one in flight.
        [prepared] = wait_for(lambda: log_events(draining, "xchat_reply_prepared")[1:],
                              what="the second reply prepared")
        draining.signal(signal.SIGTERM)
        assert draining.wait(15) == 0
        assert [e["event_id"] for e in log_events(draining, "job_handed_back")] == [
            prepared["event_id"]]
        listed = json.loads(catbot(["outbox", "list", "--json", "--env-file", pair.env_file],
                                   {"CATBOT_STORE_URL": pair.store_url}))["pending"]
        assert [(j["event_id"], j["claimed"]) for j in listed] == [
            (prepared["event_id"], False)]

        # Restarted with X Chat turned off (blank settings are unset): the job cannot be
        # read, so it is dead-lettered, visibly, rather than answered as an empty DM.
        off = pair.start_daemon(CATBOT_XCHAT_PRIVATE_KEY=" ", CATBOT_XCHAT_KEY_VERSION="")
        wait_for(lambda: pair.metric('catbot_dead_letters_total{reason="xchat_off"}') == 1,
                 what="the X Chat job dead-lettered while X Chat is off")
        off.stop()

        pair.emulator.faults()
        pair.start_daemon()
        catbot(["outbox", "retry", "--all", "--env-file", pair.env_file],
               {"CATBOT_STORE_URL": pair.store_url})
        replies = pair.wait_replies(2, timeout=30)
        wait_for(lambda: pair.metric("catbot_outbox_depth") == 0, what="an empty outbox")
        # Still the message prepared before SIGTERM: one reply, however many restarts.
        assert replies[1]["id"] == prepared["message_id"]
        assert len(pair.replies()) == 2
        assert [m["channel"] for m in pair.emulator.messages(FRIEND)] == ["xchat"] * 4
    finally:
        pair.stop()
        print(pair.logs())


# --- the stored reply ------------------------------------------------------------------


def test_a_prepared_reply_reads_back_and_a_damaged_one_is_refused() -> None:
    payload = SendPayload("42", "m-1", "ZW5j", "c2ln", "1796416079479", conversation_token="t")
    state = UserState("42", opted_out=False, last_fact_at=1_750_000_000.5, day="2026-12-04",
                      replies_today=3, seen_facts=frozenset({"en:7", "en:9"}))
    prepared = PreparedReply(payload, state, Action.FACT)
    stored = json.loads(json.dumps(prepared.to_json()))
    assert PreparedReply.from_json(stored) == prepared
    for damage in ({"action": "shout"}, {"payload": "{}"}, {"state": {"user_id": "42"}}):
        with pytest.raises(MalformedPayloadError):
            PreparedReply.from_json({**stored, **damage})


# --- a friend's new key ------------------------------------------------------------------


async def test_a_friends_new_key_met_too_soon_brings_the_message_back_later(
    tmp_path: Path,
) -> None:
    fresh = generate_identity()
    identity = load_identity(fresh.private_key, user_id=BOT_ID,
                             key_version=fresh.registration.version)
    now = [0.0]
    at_x: list[PublicKeyRecord] = []

    async def fetch(user_id: str) -> list[PublicKeyRecord]:
        return [r for r in at_x if r.user_id == user_id]

    def says(friend: Friend, text: str) -> ChatReceived:
        conversation, key_change = friend.start_conversation(identity.record())
        encoded, _ = friend.write(conversation, text)
        return parse_chat_received(chat_received(
            sender_id=FRIEND, conversation_id=conversation, encoded_event=encoded,
            key_change=key_change, bot_id=BOT_ID))

    cache = SigningKeyCache(fetch, clock=lambda: now[0])
    store = SQLiteStore(tmp_path / "keys.db")
    await store.open()
    try:
        async with aiohttp.ClientSession() as session:
            # Never called here: every key this test needs is in the cache or at "X" above.
            client = XChatClient(Credentials("k", "s", "1-t", "ts"), session,
                                 f"http://127.0.0.1:{free_port()}")
            side = XChatSide(XChatCrypto(identity), client, cache, store, Metrics())
            phone = Friend(FRIEND)
            at_x.append(phone.record())
            assert (await side.read(says(phone, "hello"))).text == "hello"

            # Ten seconds later the friend writes from a new device with a new key.
            now[0] = 10.0
            laptop = Friend(FRIEND)
            at_x.append(laptop.record())
            message = says(laptop, "from my laptop")
            with pytest.raises(SenderKeysNotRefreshed):
                await side.read(message)
            assert cache.fetches == 1

            # The job's next attempt, once X may be asked again, reads it.
            now[0] = 40.0
            assert (await side.read(message)).text == "from my laptop"
            assert cache.fetches == 2

            # A key X never lists stays a verification failure, final.
            now[0] = 80.0
            with pytest.raises(VerificationError) as unknown:
                await side.read(says(Friend(FRIEND), "forged"))
            assert unknown.value.reason == "unknown_sender_keys"
    finally:
        await store.close()
