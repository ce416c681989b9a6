"""X Chat end to end: the real daemon answers a friend's end-to-end encrypted messages, with
the real emulator playing X, keys made and registered by the CLI (`catbot xchat keygen`,
`catbot xchat register`) and chat.received subscribed by `catbot webhooks ensure`.

What each test would catch:
- the friend's message not answered, or answered with something the friend's client cannot
  decrypt and verify (the emulator shows such a reply as "(cannot decrypt)");
- help/stop/start not decided on the decrypted text, or a stop that does not stick;
- a tampered message answered, or its failure not counted by reason;
- the friend's words or the reply in clear in the store file (WAL too) or the daemon's log;
- `chat.received` parsed with X Chat off, own or foreign conversations answered;
- a half-set or bad X Chat key accepted at start-up, or echoed in the error.

`XChatPair` is shared with tests/test_xchat_durability.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from catbot.brain import HELP_TEXT, START_TEXT, STOP_TEXT
from catbot.emulator.xchat_events import (
    MessageCreate,
    MessageEvent,
    b64decode,
    message_detail,
)
from catbot.facts import load_corpus
from catbot.models import InboundDM
from catbot.webhook.events import parse_delivery
from catbot.webhook.ingest import IngestPolicy, classify
from catbot.x.dm import Credentials
from catbot.xchat.client import XChatClient
from testkit.processes import (
    BOT_ID,
    CREDENTIALS,
    Daemon,
    Emulator,
    clean_env,
    free_port,
    wait_for,
)

FRIEND = "42"
CONVERSATION = f"{FRIEND}:{BOT_ID}"
CORPUS = {fact.text for lang in ("en", "zh") for fact in load_corpus(lang)}
FIXTURE = Path(__file__).parent / "fixtures" / "x" / "activity" / "chat_received.json"


def catbot(args: list[str], env: Mapping[str, str], timeout: float = 60.0) -> str:
    """`python -m catbot ARGS`; its stdout, or the test fails with both streams."""
    done = subprocess.run([sys.executable, "-m", "catbot", *args], env=clean_env(env),
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"catbot {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def setting(stdout: str, name: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith(name + "=")]
    assert len(lines) == 1, stdout
    return lines[0].split("=", 1)[1]


class XChatPair:
    """The emulator, a daemon with X Chat on, the bot's keys from the CLI.

    `deliver_chat`: whether `webhooks ensure` runs with X Chat on, so that chat.received is
    subscribed and the emulator delivers a friend's messages itself. Without it, a test
    delivers them (`deliver`), in the shape it chooses."""

    def __init__(self, tmp: Path, *, store_url: str | None = None,
                 daemon_env: Mapping[str, str] | None = None, deliver_chat: bool = True) -> None:
        self.tmp = tmp
        self.deliver_chat = deliver_chat
        self.emulator = Emulator(tmp, free_port(), None, api="activity")
        self.db = tmp / "catbot.db"
        self.store_url = store_url or f"sqlite:///{self.db}"
        self.daemon_env = dict(daemon_env or {})
        self.xchat_env: dict[str, str] = {}
        self.daemons: list[Daemon] = []

    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

    @property
    def env_file(self) -> str:
        return str(self.tmp / "none.env")

    def start(self) -> XChatPair:
        self.emulator.start()
        base = {**CREDENTIALS, "CATBOT_X_API": "activity"}
        key = setting(catbot(["xchat", "keygen"], base), "CATBOT_XCHAT_PRIVATE_KEY")
        version = setting(
            catbot(["xchat", "register", "--api-base", self.emulator.base,
                    "--env-file", self.env_file], {**base, "CATBOT_XCHAT_PRIVATE_KEY": key}),
            "CATBOT_XCHAT_KEY_VERSION",
        )
        self.xchat_env = {**base, "CATBOT_XCHAT_PRIVATE_KEY": key,
                          "CATBOT_XCHAT_KEY_VERSION": version}
        self.start_daemon()
        ensure = catbot(["webhooks", "ensure", self.daemon.webhook, "--api-base",
                         self.emulator.base, "--env-file", self.env_file],
                        self.xchat_env if self.deliver_chat else base)
        assert ("chat.received" in ensure) == self.deliver_chat, ensure
        self.emulator.wait_webhook_valid()
        return self

    def start_daemon(self, **env: str) -> Daemon:
        daemon = Daemon(self.tmp, self.emulator.port, free_port(), free_port(),
                        extra_env={**self.xchat_env, "CATBOT_STORE_URL": self.store_url,
                                   **self.daemon_env, **env})
        self.daemons.append(daemon)
        daemon.start()
        return daemon

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()
        self.emulator.stop()

    def logs(self) -> str:
        return "\n".join(d.output()[-5000:] for d in self.daemons) + "\n" + \
            self.emulator.output()[-3000:]

    # --- the friend ---------------------------------------------------------------------

    def write(self, text: str, sender: str = FRIEND) -> dict[str, Any]:
        answer: dict[str, Any] = self.emulator.control(
            "POST", "xchat", {"sender_id": sender, "text": text})
        expected = [200] if self.deliver_chat else []
        assert [d["status"] for d in answer["deliveries"]] == expected, answer
        return answer

    def replies(self, user: str = FRIEND) -> list[dict[str, Any]]:
        return [m for m in self.emulator.messages(user)
                if m["sender_id"] == BOT_ID and m["channel"] == "xchat"]

    def wait_replies(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.replies()) >= count, timeout=timeout,
                 what=f"{count} X Chat replies")
        replies = self.replies()
        assert len(replies) == count, replies
        return replies

    def metric(self, name: str, daemon: Daemon | None = None) -> float:
        return (daemon or self.daemon).metrics().get(name, 0.0)

    # --- playing X's delivery ------------------------------------------------------------

    def history(self) -> tuple[list[str], list[str]]:
        """The conversation's encoded events (newest first) and key changes, read as the
        bot reads them (XChatClient, OAuth 1.0a)."""
        async def read() -> tuple[list[str], list[str]]:
            credentials = Credentials(*(CREDENTIALS[f"CATBOT_X_{name}"] for name in (
                "CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_TOKEN", "ACCESS_TOKEN_SECRET")))
            async with aiohttp.ClientSession() as session:
                page = await XChatClient(credentials, session, self.emulator.base) \
                    .get_conversation_events(FRIEND, max_results=100)
            return list(page.events), list(page.key_change_events)

        return asyncio.run(read())

    def deliver(self, encoded_event: str, *, key_change: str | None,
                event_id: str | None = None, sender: str = FRIEND) -> str:
        """A signed `chat.received` delivery of `encoded_event` to the webhook, shaped as X's
        example (x-api/activity/event-payloads), with or without the key change."""
        event_id = event_id or str(uuid.uuid4())
        payload: dict[str, Any] = {
            "id": event_id,
            "created_at_msec": str(int(time.time() * 1000)),
            "sender_id": sender,
            "conversation_id": CONVERSATION,
            "encoded_event": encoded_event,
        }
        if key_change is not None:
            payload["conversation_key_change_event"] = key_change
        body = {"data": {"event_uuid": str(uuid.uuid4().int >> 65), "filter": {
            "user_id": BOT_ID}, "event_type": "chat.received", "payload": payload}}
        answer = self.emulator.control("POST", "deliver_raw", {"body": body})
        assert [d["status"] for d in answer["deliveries"]] == [200], answer
        return event_id


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[XChatPair]:
    started = XChatPair(tmp_path).start()
    try:
        yield started
    finally:
        started.stop()
        print(started.logs())


def store_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal"),
                                               db.with_name(db.name + "-shm")) if p.exists())


def tampered(encoded_event: str) -> str:
    """The same event with one bit of its ciphertext flipped: what a forger (or a broken
    relay) would hand over. Everything else, the signature included, is as X built it."""
    event = MessageEvent.decode(b64decode(encoded_event))
    create_raw = event.detail[3:-1]  # the union's field 1 header (type, id) and stop byte
    create = MessageCreate.decode(create_raw)
    flipped = bytes([create.ciphertext[0] ^ 1]) + create.ciphertext[1:]
    forged = MessageCreate(create_raw.replace(create.ciphertext, flipped), flipped,
                           create.conversation_key_version)
    return MessageEvent(event.sequence_id, event.message_id, event.sender_id,
                        event.conversation_id, event.created_at_msec,
                        message_detail(forged), event.signature).to_base64()


# --- the whole loop --------------------------------------------------------------------


def test_a_friend_is_answered_over_x_chat_and_commands_work(pair: XChatPair) -> None:
    marker = f"whiskers-{uuid.uuid4().hex[:12]}"
    pair.write(f"hello from {marker}, tell me about cats")
    first = pair.wait_replies(1)[0]
    # Decrypted and verified by the friend's own client, then found in the corpus.
    assert first["text"] in CORPUS
    assert first["recipient_id"] == FRIEND
    # The store as it is while the daemon runs (fresh writes sit in the WAL), and below
    # once it stopped (checkpointed): a later write may overwrite an earlier leak.
    snapshots = [store_bytes(pair.db)]

    pair.write("help")
    assert pair.wait_replies(2)[-1]["text"] == HELP_TEXT
    pair.write("stop")
    assert pair.wait_replies(3)[-1]["text"] == STOP_TEXT

    opted_out = 'catbot_decisions_total{reason="opted_out"}'
    pair.write(f"one more fact? {marker}")
    wait_for(lambda: pair.metric(opted_out) == 1, what="the message after stop decided")
    pair.write("start")
    assert pair.wait_replies(4)[-1]["text"] == START_TEXT
    pair.write(f"and now? {marker}")
    replies = pair.wait_replies(5)
    snapshots.append(store_bytes(pair.db))
    assert replies[-1]["text"] in CORPUS
    # Four answers, no answer to the message after stop, none of them a plain DM.
    assert [m["channel"] for m in pair.emulator.messages(FRIEND)] == ["xchat"] * 11
    assert pair.metric('catbot_events_total{fate="enqueued",kind="chat"}') == 6
    assert pair.metric('catbot_dms_sent_total{outcome="sent"}') == 5
    assert pair.metric('catbot_rate_limit_family_waits_total{family="xchat",source="budget"}') \
        == 0
    assert pair.metric('catbot_xchat_decrypt_failures_total{reason="unverified"}') == 0
    assert '"xchat": true' in pair.daemon.output() or '"xchat":true' in pair.daemon.output()

    # Nothing in clear: neither what the friend wrote nor what the bot answered.
    pair.daemon.stop()
    snapshots.append(store_bytes(pair.db))
    log = pair.daemon.output()
    assert b"xck1." in snapshots[-1], "the conversation key was not stored (sealed)"
    for text in [marker, *(m["text"] for m in replies)]:
        assert not [n for n, kept in enumerate(snapshots) if text.encode() in kept], text
        assert text not in log, text
    # The test would see it if it were there: the emulator's own log has the friend's words.
    assert marker in json.dumps(pair.emulator.messages(FRIEND))


def test_a_tampered_message_is_never_answered_and_counted_by_reason(pair: XChatPair) -> None:
    pair.write("hello")
    pair.wait_replies(1)
    events, key_changes = pair.history()
    friends = [e for e in events if MessageEvent.decode(b64decode(e)).sender_id == FRIEND]
    assert len(friends) == 1

    unverified = 'catbot_xchat_decrypt_failures_total{reason="unverified"}'
    forged_id = pair.deliver(tampered(friends[0]), key_change=key_changes[-1])
    wait_for(lambda: pair.metric(unverified) == 1, what="the tampered message refused")
    # The untouched event, under a new delivery id, is answered: only the flipped bit
    # made the difference.
    replayed = pair.deliver(friends[0], key_change=key_changes[-1])
    pair.wait_replies(2)
    assert pair.metric(unverified) == 1
    # X delivering that one again (same id) is a duplicate: stored once, answered once.
    duplicate = 'catbot_events_total{fate="duplicate",kind="chat"}'
    pair.deliver(friends[0], key_change=key_changes[-1], event_id=replayed)
    wait_for(lambda: pair.metric(duplicate) == 1, what="the redelivery seen as a duplicate")
    assert pair.metric('catbot_dead_letters_total{reason="xchat_unverified"}') == 1
    dead = json.loads(catbot(["outbox", "dead", "--json", "--env-file", pair.env_file],
                             {"CATBOT_STORE_URL": pair.store_url}))["dead_letters"]
    assert [(d["event_id"], d["reason"].split(":")[0]) for d in dead] == [
        (f"xchat:{forged_id}", "xchat_unverified")]
    assert len(pair.replies()) == 2


def test_a_key_change_the_bot_never_got_is_read_from_xs_history(tmp_path: Path) -> None:
    pair = XChatPair(tmp_path, deliver_chat=False).start()
    try:
        pair.write("hello")
        events, _ = pair.history()
        # Delivered without its key change (X's live variant has none): the only place
        # left to learn the conversation key is X's history of the conversation.
        pair.deliver(events[0], key_change=None)
        assert pair.wait_replies(1)[0]["text"] in CORPUS
        found_at_x = 'catbot_xchat_key_recoveries_total{source="x"}'
        assert pair.metric(found_at_x) == 1
        assert pair.metric('catbot_xchat_key_recoveries_total{source="missing"}') == 0
    finally:
        pair.stop()
        print(pair.logs())


# --- the webhook's side, without processes ------------------------------------------------


def documented_delivery(**payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(FIXTURE.read_text())
    # X's page truncates the encoded fields ("…(truncated)"): base64 stand-ins here.
    body["data"]["payload"].update(encoded_event="QUJD", conversation_key_change_event="REVG")
    body["data"]["payload"].update(payload)
    return body


def test_chat_received_is_only_counted_while_x_chat_is_off() -> None:
    delivery = parse_delivery(documented_delivery())
    assert delivery.direct_messages == []
    assert delivery.ignored == [("chat", "ignored")]


def test_chat_received_is_stored_as_it_came_while_x_chat_is_on() -> None:
    body = documented_delivery()
    data, payload = body["data"], body["data"]["payload"]
    delivery = parse_delivery(body, xchat=True)
    assert delivery.ignored == []
    [job] = delivery.direct_messages
    assert job.kind == "xchat"
    assert job.event_id == "xchat:" + payload["id"]
    assert (job.sender_id, job.for_user_id) == (payload["sender_id"], data["filter"]["user_id"])
    assert job.created_at == int(payload["created_at_msec"]) / 1000
    assert job.text == "" and job.reply is None
    assert job.xchat == {"data": {k: data[k] for k in ("event_type", "event_uuid", "payload")}}
    # The stored row reads back the same, and rows of older releases still read.
    assert InboundDM.from_json(job.to_json()) == job
    old = {k: v for k, v in json.loads(job.to_json()).items() if k not in ("xchat", "reply")}
    assert InboundDM.from_json(json.dumps(old)).xchat is None


@pytest.mark.parametrize(
    ("change", "fate"),
    [
        ({"id": "not an id!"}, "malformed"),
        ({"encoded_event": "%%%"}, "malformed"),
        ({"conversation_id": "7:8"}, "not_for_us"),
    ],
)
def test_unusable_chat_deliveries_are_counted_not_stored(
    change: dict[str, str], fate: str
) -> None:
    delivery = parse_delivery(documented_delivery(**change), xchat=True)
    assert delivery.direct_messages == []
    assert delivery.ignored == [("chat", fate)]


def test_the_bots_own_chat_message_is_not_answered() -> None:
    body = documented_delivery()
    bot = body["data"]["filter"]["user_id"]
    body["data"]["payload"]["sender_id"] = bot
    [own] = parse_delivery(body, xchat=True).direct_messages
    policy = IngestPolicy(bot_user_id=bot, max_event_age_seconds=3600, answer_xchat=True)
    assert classify(own, policy, own.created_at) == "own"


# --- start-up configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named", "secret"),
    [
        ({"CATBOT_XCHAT_PRIVATE_KEY": "c2VjcmV0LWJ1dC1ub3QtNjQtYnl0ZXM="},
         "CATBOT_XCHAT_KEY_VERSION", "c2VjcmV0LWJ1dC1ub3QtNjQtYnl0ZXM="),
        ({"CATBOT_XCHAT_KEY_VERSION": "1796416079479"}, "CATBOT_XCHAT_PRIVATE_KEY", None),
        ({"CATBOT_XCHAT_PRIVATE_KEY": "c2VjcmV0LWJ1dC1ub3QtNjQtYnl0ZXM=",
          "CATBOT_XCHAT_KEY_VERSION": "1796416079479"},
         "CATBOT_XCHAT_PRIVATE_KEY", "c2VjcmV0LWJ1dC1ub3QtNjQtYnl0ZXM="),
    ],
)
def test_a_half_set_or_bad_x_chat_key_stops_start_up(
    tmp_path: Path, env: dict[str, str], named: str, secret: str | None
) -> None:
    full = {**CREDENTIALS, "CATBOT_STORE_URL": f"sqlite:///{tmp_path / 'c.db'}",
            "CATBOT_PORT": str(free_port()), "CATBOT_METRICS_PORT": str(free_port()), **env}
    done = subprocess.run(
        [sys.executable, "-m", "catbot", "run", "--env-file", str(tmp_path / "none.env")],
        env=clean_env(full), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    if secret is not None:
        assert secret not in done.stdout + done.stderr
    assert not (tmp_path / "c.db").exists(), "nothing may start before the key is checked"
