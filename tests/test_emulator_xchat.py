"""The emulator plays X Chat: a real emulator on loopback, the bot played here with X's own
SDK (chatxdk) and tweepy's OAuth 1.0a signing, the way the daemon will talk to X.

What each test would catch: deliveries the SDK cannot decrypt or verify, envelopes that drift
from X's documented `chat.received` example, replies recorded without the emulator checking
the bot's signature, a friend's view that is not what the friend decrypts, a public key
directory that forgets or rewrites what was registered, and a write limit that never bites.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import tweepy
from chat_xdk import Chat, PublicKeyRegistrationPayload, SendPayload
from tweepy.asynchronous import AsyncClient

from catbot.emulator import RunningEmulator
from catbot.emulator.xchat_events import (
    EventSignature,
    KeyChange,
    MessageCreate,
    MessageEvent,
    ThriftError,
    conversation_from_path,
    end_struct,
    read_struct,
    string_field,
    struct_field,
)
from catbot.emulator.xchat_identity import PUBLIC_KEY_WRITES_PER_DAY
from tests.emulator_fixtures import (
    BOT,
    CONSUMER_KEY,
    SECRET,
    EmulatorFactory,
    Receiver,
    ReceiverFactory,
    bearer_client,
    hmac_b64,
    tweepy_client,
)

FRIEND = "42"
# X's chat.received example (docs.x.com x-api/activity/event-payloads, "Chat events").
DOCUMENTED_PAYLOAD_FIELDS = {
    "conversation_token",
    "id",
    "created_at_msec",
    "sender_id",
    "conversation_id",
    "conversation_key_version",
    "encoded_event",
    "conversation_key_change_event",
    "message_event_signature",
}
DOCUMENTED_SIGNATURE_FIELDS = {
    "public_key_version",
    "signature",
    "signature_version",
    "signing_public_key",
}
REGISTRATION_FIELDS = (
    "public_key",
    "signing_public_key",
    "identity_public_key_signature",
    "signing_public_key_signature",
    "public_key_fingerprint",
    "registration_method",
)


def one_to_one(a: str, b: str) -> str:
    low, high = sorted((int(a), int(b)))
    return f"{low}:{high}"


CONVERSATION = one_to_one(FRIEND, BOT)


# --- talking to the emulator as the bot ------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any


async def call(
    client: AsyncClient,
    method: str,
    route: str,
    *,
    params: dict[str, str] | None = None,
    body: Any = None,
) -> Answer:
    try:
        response = await client.request(
            method, route, params=params or {}, json=body, user_auth=True
        )
    except tweepy.HTTPException as exc:
        response = exc.response
    raw = await response.text()
    return Answer(response.status, json.loads(raw) if raw else None, response.headers)


async def control(
    http: aiohttp.ClientSession, emulator: RunningEmulator, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, f"{emulator.url}/_emulator/{path}", **kw) as resp:
        return resp.status, await resp.json()


def registration_body(registration: PublicKeyRegistrationPayload) -> dict[str, Any]:
    keys = registration.public_key
    return {
        "public_key": {name: getattr(keys, name) for name in REGISTRATION_FIELDS},
        "version": registration.version,
        "generate_version": registration.generate_version,
    }


@dataclass
class Bot:
    chat: Chat
    version: str
    registration: PublicKeyRegistrationPayload

    def signing_entry(self) -> dict[str, str]:
        keys = self.registration.public_key
        return {
            "user_id": BOT,
            "public_key_version": self.version,
            "public_key": keys.signing_public_key,
            "identity_public_key": keys.public_key,
            "identity_public_key_signature": keys.identity_public_key_signature,
        }


async def register_bot(client: AsyncClient) -> Bot:
    chat = Chat()
    registration = chat.generate_keypairs()
    answer = await call(
        client, "POST", f"/2/users/{BOT}/public_keys", body=registration_body(registration)
    )
    assert answer.status == 200, answer.body
    version = answer.body["data"]["public_key_version"]
    assert isinstance(answer.body["data"]["juicebox_config"], dict)
    chat.set_identity(BOT, version)
    chat.set_cache_keys(True)
    return Bot(chat, version, registration)


async def subscribe(client: AsyncClient, receiver: Receiver, *event_types: str) -> None:
    hook = await call(client, "POST", "/2/webhooks", body={"url": receiver.url})
    assert hook.status == 200, hook.body
    for event_type in event_types:
        sub = await call(
            client,
            "POST",
            "/2/activity/subscriptions",
            body={
                "event_type": event_type,
                "filter": {"user_id": BOT},
                "tag": "chat",
                "webhook_id": hook.body["data"]["id"],
            },
        )
        assert sub.status == 200, sub.body


async def friend_signing_entries(client: AsyncClient, user_id: str) -> list[dict[str, str]]:
    answer = await call(client, "GET", "/2/users/public_keys", params={"ids": user_id})
    assert answer.status == 200, answer.body
    rows = [r for r in answer.body["data"] if r["user_id"] == user_id]
    assert rows, answer.body
    return [
        {
            "user_id": user_id,
            "public_key_version": row["public_key_version"],
            "public_key": row["signing_public_key"],
            "identity_public_key": row["public_key"],
            "identity_public_key_signature": row["identity_public_key_signature"],
        }
        for row in rows
    ]


def send_body(payload: SendPayload, token: str | None = None) -> dict[str, str]:
    body = {
        "message_id": payload.message_id,
        "encoded_message_create_event": payload.encrypted_content,
        "encoded_message_event_signature": payload.encoded_event_signature,
    }
    if token is not None:
        body["conversation_token"] = token
    return body


@dataclass
class Session:
    emulator: RunningEmulator
    client: AsyncClient
    receiver: Receiver
    bot: Bot
    delivery: dict[str, Any]  # the first chat.received `payload`
    decrypted: dict[str, Any]


async def open_chat(
    make_emulator: EmulatorFactory,
    make_receiver: ReceiverFactory,
    http: aiohttp.ClientSession,
    text: str = "hello cats",
) -> Session:
    """A registered bot, subscribed, that received and decrypted a friend's first message."""
    emulator = await make_emulator()
    client = tweepy_client(http, emulator)
    receiver = await make_receiver()
    await subscribe(client, receiver, "chat.received", "chat.sent")
    bot = await register_bot(client)
    status, answer = await control(
        http, emulator, "POST", "xchat", json={"sender_id": FRIEND, "text": text}
    )
    assert status == 200, answer
    assert [d["status"] for d in answer["deliveries"]] == [200]
    await receiver.wait_posts(1)
    payload = receiver.payload(0)["data"]["payload"]
    bot.chat.set_signing_keys([*await friend_signing_entries(client, FRIEND), bot.signing_entry()])
    bot.chat.decrypt_events([payload["conversation_key_change_event"]])
    decrypted = bot.chat.decrypt_event(payload["encoded_event"])
    assert answer["event_id"] == payload["id"]
    return Session(emulator, client, receiver, bot, payload, decrypted)


async def messages(http: aiohttp.ClientSession, emulator: RunningEmulator) -> list[Any]:
    status, body = await control(http, emulator, "GET", "messages")
    assert status == 200
    listed: list[Any] = body["messages"]
    return listed


# --- the round trip --------------------------------------------------------------------


async def test_friend_message_is_delivered_decrypted_and_answered(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    chat = await open_chat(make_emulator, make_receiver, http)

    headers, raw = chat.receiver.posts[0]
    assert headers["x-twitter-webhooks-signature"] == hmac_b64(SECRET, raw)
    data = json.loads(raw)["data"]
    assert data["event_type"] == "chat.received"
    assert data["filter"] == {"user_id": BOT} and data["tag"] == "chat"
    assert re.fullmatch(r"-?[0-9]{1,19}", data["event_uuid"])
    payload = chat.delivery
    assert set(payload) == DOCUMENTED_PAYLOAD_FIELDS
    assert set(payload["message_event_signature"]) == DOCUMENTED_SIGNATURE_FIELDS
    assert payload["sender_id"] == FRIEND and payload["conversation_id"] == CONVERSATION
    assert payload["created_at_msec"].isdigit()
    friend_keys = await friend_signing_entries(chat.client, FRIEND)
    assert payload["message_event_signature"]["signing_public_key"] == friend_keys[0]["public_key"]

    decrypted = chat.decrypted
    assert decrypted["type"] == "Message" and decrypted["verified"] is True
    assert decrypted["content"]["text"] == "hello cats"
    assert (decrypted["sender_id"], decrypted["conversation_id"]) == (FRIEND, CONVERSATION)
    assert decrypted["key_version"] == payload["conversation_key_version"]

    reply = chat.bot.chat.encrypt_reply(
        CONVERSATION, "Cats sleep 12 to 16 hours a day.", payload["encoded_event"]
    )
    sent = await call(
        chat.client,
        "POST",
        f"/2/chat/conversations/{FRIEND}/messages",
        body=send_body(reply, payload["conversation_token"]),
    )
    assert sent.status == 201, sent.body
    # The wrapped event is real: the bot's own SDK reads it back, verified.
    echo = chat.bot.chat.decrypt_event(sent.body["data"]["encoded_message_event"])
    assert echo["content"]["text"] == "Cats sleep 12 to 16 hours a day."
    assert (echo["sender_id"], echo["id"], echo["verified"]) == (BOT, reply.message_id, True)

    # A retry of the same send is answered with the same event, and recorded once.
    again = await call(
        chat.client,
        "POST",
        f"/2/chat/conversations/{FRIEND}-{BOT}/messages",
        body=send_body(reply),
    )
    assert again.status == 201 and again.body == sent.body

    listed = await messages(http, chat.emulator)
    assert [(m["direction"], m["channel"], m["text"], m["id"]) for m in listed] == [
        ("in", "xchat", "hello cats", payload["id"]),
        ("out", "xchat", "Cats sleep 12 to 16 hours a day.", reply.message_id),
    ]

    # chat.sent brings the bot's own message back, as X does.
    await chat.receiver.wait_posts(2)
    sent_event = chat.receiver.payload(1)["data"]
    assert sent_event["event_type"] == "chat.sent"
    assert sent_event["payload"]["sender_id"] == BOT
    assert sent_event["payload"]["encoded_event"] == sent.body["data"]["encoded_message_event"]

    history = await call(chat.client, "GET", f"/2/chat/conversations/{FRIEND}/events")
    assert history.status == 200, history.body
    assert [e["sender_id"] for e in history.body["data"]] == [BOT, FRIEND]  # newest first
    assert history.body["meta"]["conversation_key_events"] == [
        payload["conversation_key_change_event"]
    ]
    fresh = Chat()
    fresh.import_keys(bytes(chat.bot.chat.export_keys() or b""), chat.bot.version)
    fresh.set_identity(BOT, chat.bot.version)
    texts = fresh.decrypt_events(
        [
            *history.body["meta"]["conversation_key_events"],
            *[e["encoded_event"] for e in history.body["data"]],
        ],
        [*friend_keys, chat.bot.signing_entry()],
    )
    assert sorted(
        m["event"]["content"]["text"] for m in texts["messages"] if m["event"]["type"] == "Message"
    ) == [
        "Cats sleep 12 to 16 hours a day.",
        "hello cats",
    ]


async def test_dms_and_chats_are_listed_together_with_their_channel(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    client = tweepy_client(http, emulator)
    await register_bot(client)
    for path, text in (("dm", "plain hello"), ("xchat", "secret hello"), ("dm", "plain again")):
        status, body = await control(
            http, emulator, "POST", path, json={"sender_id": FRIEND, "text": text}
        )
        assert status == 200, body
    listed = await messages(http, emulator)
    assert [(m["channel"], m["text"]) for m in listed] == [
        ("dm", "plain hello"),
        ("xchat", "secret hello"),
        ("dm", "plain again"),
    ]


# --- what X refuses --------------------------------------------------------------------


def flip_ciphertext_byte(encoded_create_event: str) -> str:
    raw = bytearray(base64.b64decode(encoded_create_event))
    # Field 100 (the ciphertext) leads: type byte, i16 id, i32 length, then its bytes.
    assert raw[0] == 11 and struct.unpack(">h", raw[1:3])[0] == 100
    raw[7 + 5] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


async def test_forged_and_tampered_replies_are_refused(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    chat = await open_chat(make_emulator, make_receiver, http)
    route = f"/2/chat/conversations/{FRIEND}/messages"
    event = chat.delivery["encoded_event"]

    async def refused(body: dict[str, str], reason: str) -> None:
        answer = await call(chat.client, "POST", route, body=body)
        assert answer.status == 400, answer.body
        assert answer.body["type"] == "https://api.x.com/2/problems/invalid-request"
        assert answer.body["detail"].startswith(reason + ": "), answer.body

    tampered = send_body(chat.bot.chat.encrypt_reply(CONVERSATION, "tampered", event))
    tampered["encoded_message_create_event"] = flip_ciphertext_byte(
        tampered["encoded_message_create_event"]
    )
    await refused(tampered, "InvalidSenderSignature")

    renamed = send_body(chat.bot.chat.encrypt_reply(CONVERSATION, "renamed", event))
    renamed["message_id"] = "00000000-0000-4000-8000-000000000000"
    await refused(renamed, "InvalidSenderSignature")

    # Someone holding the conversation key but not the bot's signing key.
    forger = Chat()
    forger.generate_keypairs()
    forger.set_identity(BOT, chat.bot.version)
    keys = chat.bot.chat.extract_conversation_keys([chat.delivery["conversation_key_change_event"]])
    version = chat.delivery["conversation_key_version"]
    forged = forger.encrypt_message(
        CONVERSATION,
        "forged",
        conversation_key=bytes(keys["keys"][version]),
        conversation_key_version=version,
    )
    await refused(send_body(forged), "InvalidSenderSignature")

    unknown_version = Chat()
    unknown_version.import_keys(bytes(chat.bot.chat.export_keys() or b""), "1")
    unknown_version.set_identity(BOT, "1")
    stale = unknown_version.encrypt_message(
        CONVERSATION,
        "old key",
        conversation_key=bytes(keys["keys"][version]),
        conversation_key_version=version,
    )
    await refused(send_body(stale), "SignatureFailedToVerifyAgainstPublicKey")

    assert [m["direction"] for m in await messages(http, chat.emulator)] == ["in"]
    # The refusals were the emulator's doing, not a broken setup: the genuine reply passes.
    genuine = chat.bot.chat.encrypt_reply(CONVERSATION, "genuine", event)
    answer = await call(chat.client, "POST", route, body=send_body(genuine))
    assert answer.status == 201, answer.body
    assert [m["text"] for m in await messages(http, chat.emulator)] == ["hello cats", "genuine"]


async def test_bot_rotates_the_conversation_key(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    chat = await open_chat(make_emulator, make_receiver, http)
    friend = (await friend_signing_entries(chat.client, FRIEND))[0]
    prepared = chat.bot.chat.prepare_conversation_key_change(
        [
            {
                "user_id": BOT,
                "public_key": chat.bot.registration.public_key.public_key,
                "key_version": chat.bot.version,
            },
            {
                "user_id": FRIEND,
                "public_key": friend["identity_public_key"],
                "key_version": friend["public_key_version"],
            },
        ],
        conversation_id=CONVERSATION,
    )
    action = prepared["action_signatures"][0]
    body = {
        "conversation_key_version": prepared["conversation_key_version"],
        "conversation_participant_keys": [
            {
                "user_id": p["user_id"],
                "encrypted_conversation_key": p["encrypted_key"],
                "public_key_version": p["public_key_version"],
            }
            for p in prepared["participant_keys"]
        ],
        "action_signatures": [
            {
                "message_id": action["message_id"],
                "encoded_message_event_detail": action["encoded_message_event_detail"],
                "message_event_signature": {
                    "signature": action["signature"],
                    "public_key_version": action["public_key_version"],
                    "signature_version": action["signature_version"],
                },
            }
        ],
    }
    # SDK-flat action signatures are not what the API takes (xchat/troubleshooting).
    flat = {**body, "action_signatures": [action]}
    assert (
        await call(chat.client, "POST", f"/2/chat/conversations/{FRIEND}/keys", body=flat)
    ).status == 400
    rotated = await call(chat.client, "POST", f"/2/chat/conversations/{FRIEND}/keys", body=body)
    assert rotated.status == 200, rotated.body
    assert rotated.body["data"]["conversation_id"] == CONVERSATION
    assert rotated.body["data"]["sequence_id"].isdigit()

    old_key = chat.delivery["conversation_key_version"]
    old = chat.bot.chat.encrypt_message(
        CONVERSATION,
        "under the old key",
        conversation_key=bytes(
            chat.bot.chat.extract_conversation_keys(
                [chat.delivery["conversation_key_change_event"]]
            )["keys"][old_key]
        ),
        conversation_key_version=old_key,
    )
    stale = await call(
        chat.client, "POST", f"/2/chat/conversations/{FRIEND}/messages", body=send_body(old)
    )
    assert stale.status == 400 and stale.body["detail"].startswith("NonLatestCkeyVersion")

    new = chat.bot.chat.encrypt_message(
        CONVERSATION,
        "under the new key",
        conversation_key=bytes(prepared["conversation_key"]),
        conversation_key_version=prepared["conversation_key_version"],
    )
    sent = await call(
        chat.client, "POST", f"/2/chat/conversations/{FRIEND}/messages", body=send_body(new)
    )
    assert sent.status == 201, sent.body
    # The friend verified the bot's key change and reads the message with the new key.
    assert [m["text"] for m in await messages(http, chat.emulator)][-1] == "under the new key"

    # The friend's next message carries the bot's key change and uses its key.
    status, _ = await control(
        http, chat.emulator, "POST", "xchat", json={"sender_id": FRIEND, "text": "thanks"}
    )
    assert status == 200
    await chat.receiver.wait_posts(3)
    latest = next(
        json.loads(raw)["data"]["payload"]
        for _h, raw in reversed(chat.receiver.posts)
        if json.loads(raw)["data"]["event_type"] == "chat.received"
    )
    assert latest["conversation_key_version"] == prepared["conversation_key_version"]
    change = MessageEvent.decode(base64.b64decode(latest["conversation_key_change_event"]))
    assert (change.sender_id, change.sequence_id) == (BOT, rotated.body["data"]["sequence_id"])
    chat.bot.chat.decrypt_events([latest["conversation_key_change_event"]])
    assert chat.bot.chat.decrypt_event(latest["encoded_event"])["content"]["text"] == "thanks"


# --- the public key directory ----------------------------------------------------------


async def test_public_key_registration_reads_back_and_is_limited(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    client = tweepy_client(http, emulator)
    route = f"/2/users/{BOT}/public_keys"

    assert (await call(client, "GET", route)).body == {}
    status, body = await control(
        http, emulator, "POST", "xchat", json={"sender_id": FRIEND, "text": "anyone?"}
    )
    assert status == 409 and "public_keys" in body["error"]

    first = Chat().generate_keypairs()
    posted = await call(client, "POST", route, body=registration_body(first))
    assert posted.status == 200, posted.body
    version = posted.body["data"]["public_key_version"]
    rows = (await call(client, "GET", route)).body["data"]
    assert len(rows) == 1
    row = rows[0]
    assert row["public_key_version"] == version and row["user_id"] == BOT
    for name in REGISTRATION_FIELDS:
        assert row[name] == getattr(first.public_key, name), name

    # The same keys again keep their version (a cautious `register` that repeats itself).
    repeat = await call(client, "POST", route, body=registration_body(first))
    assert repeat.body["data"]["public_key_version"] == version

    second = Chat().generate_keypairs()
    newer = await call(client, "POST", route, body=registration_body(second))
    assert newer.status == 200
    assert int(newer.body["data"]["public_key_version"]) > int(version)
    listed = (await call(client, "GET", route)).body["data"]
    assert [r["public_key"] for r in listed] == [
        second.public_key.public_key,
        first.public_key.public_key,
    ]

    writes_so_far = 3
    for _ in range(PUBLIC_KEY_WRITES_PER_DAY - writes_so_far):
        assert (
            await call(client, "POST", route, body=registration_body(Chat().generate_keypairs()))
        ).status == 200
    before = time.time()
    limited = await call(client, "POST", route, body=registration_body(Chat().generate_keypairs()))
    assert limited.status == 429, limited.body
    assert limited.body["type"] == "https://api.x.com/2/problems/rate-limit-exceeded"
    assert limited.headers["x-rate-limit-limit"] == str(PUBLIC_KEY_WRITES_PER_DAY)
    assert limited.headers["x-rate-limit-remaining"] == "0"
    reset = int(limited.headers["x-rate-limit-reset"])
    assert before + 24 * 3600 - 60 <= reset <= time.time() + 24 * 3600 + 60
    assert len((await call(client, "GET", route)).body["data"]) == 2

    # Budgets refill with /_emulator/reset; registrations stay.
    assert (await control(http, emulator, "POST", "reset"))[0] == 200
    after = await call(client, "POST", route, body=registration_body(Chat().generate_keypairs()))
    assert after.status == 200
    assert len((await call(client, "GET", route)).body["data"]) == 3


async def test_registration_refusals(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    client = tweepy_client(http, emulator)
    good = registration_body(Chat().generate_keypairs())

    other_user = await call(client, "POST", f"/2/users/{FRIEND}/public_keys", body=good)
    assert other_user.status == 403

    mixed = Chat().generate_keypairs()
    unbound = {
        **good,
        "public_key": {
            **good["public_key"],
            "signing_public_key": mixed.public_key.signing_public_key,
        },
    }
    answer = await call(client, "POST", f"/2/users/{BOT}/public_keys", body=unbound)
    assert answer.status == 400 and answer.body["detail"].startswith("InvalidKeyBinding")

    for bad in (
        {**good, "extra": 1},
        {"public_key": good["public_key"]},
        {**good, "public_key": {"public_key": "x"}},
    ):
        assert (await call(client, "POST", f"/2/users/{BOT}/public_keys", body=bad)).status == 400

    unsigned = AsyncClient()  # no credentials at all
    unsigned.session = client.session
    with pytest.raises(tweepy.HTTPException):
        await unsigned.request("POST", f"/2/users/{BOT}/public_keys", json=good, user_auth=False)
    # None of those wrote anything.
    assert (await call(client, "GET", f"/2/users/{BOT}/public_keys")).body == {}


async def test_every_emulated_user_has_keys_and_lookups_report_the_missing(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    client = tweepy_client(http, emulator)
    answer = await call(client, "GET", "/2/users/public_keys", params={"ids": f"{FRIEND},43,{BOT}"})
    assert answer.status == 200
    assert [r["user_id"] for r in answer.body["data"]] == [FRIEND, "43"]
    assert [e["resource_id"] for e in answer.body["errors"]] == [BOT]
    verifier = Chat()
    for row in answer.body["data"]:
        assert verifier.verify_key_binding(
            row["public_key"], row["signing_public_key"], row["identity_public_key_signature"]
        )
    # The same keys every time, to the bot and to the app's bearer token alike.
    again = await call(client, "GET", f"/2/users/{FRIEND}/public_keys")
    assert again.body["data"] == [answer.body["data"][0]]
    async with http.post(
        emulator.url + "/oauth2/token",
        headers={"Authorization": aiohttp.encode_basic_auth(CONSUMER_KEY, SECRET)},
        data={"grant_type": "client_credentials"},
    ) as resp:
        bearer = (await resp.json())["access_token"]
    app = bearer_client(http, emulator, bearer)
    by_app = await app.request("GET", f"/2/users/{FRIEND}/public_keys", user_auth=False)
    assert json.loads(await by_app.text())["data"] == again.body["data"]
    async with http.get(f"{emulator.url}/2/users/{FRIEND}/public_keys") as anonymous:
        assert anonymous.status == 401
    for bad in ("", "x", ",".join(str(i) for i in range(101))):
        assert (
            await call(client, "GET", "/2/users/public_keys", params={"ids": bad})
        ).status == 400


# --- the Thrift codec ------------------------------------------------------------------


def test_message_event_round_trips_and_keeps_the_detail_bytes() -> None:
    create = end_struct(string_field(100, b"\x00\xffcipher"), string_field(101, "17"))
    signature = EventSignature("c2ln", "5", "7")
    event = MessageEvent(
        "9", "m-1", "42", "42:7000", "1700", end_struct(struct_field(1, create)), signature
    )
    decoded = MessageEvent.decode(event.encode())
    assert decoded == event
    inner = read_struct(decoded.detail)[1]
    assert isinstance(inner, dict) and inner[100] == b"\x00\xffcipher"
    assert MessageCreate.decode(create).conversation_key_version == "17"
    assert EventSignature.decode(signature.encode()) == signature


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no stop byte
        string_field(1, "x"),  # unterminated
        end_struct(string_field(1, "x")) + b"\x00",  # trailing bytes
        b"\x0b\x00\x01\x7f\xff\xff\xff",  # a string longer than the data
        b"\x0f\x00\x01\x0b\x7f\xff\xff\xff\x00",  # a list longer than the data
        b"\x0c\x00\x01" * 40 + b"\x00" * 41,  # nested deeper than any X Chat struct
        b"\x63\x00\x01\x00",  # unknown type
    ],
)
def test_thrift_reader_refuses_malformed_bytes(data: bytes) -> None:
    with pytest.raises(ThriftError):
        read_struct(data)


def test_key_change_detail_must_be_a_key_change() -> None:
    message_union = end_struct(struct_field(1, end_struct(string_field(101, "1"))))
    with pytest.raises(ThriftError):
        KeyChange.decode(message_union)


def test_conversation_paths() -> None:
    assert conversation_from_path(FRIEND, BOT) == CONVERSATION
    assert conversation_from_path(f"{BOT}-{FRIEND}", BOT) == CONVERSATION
    assert conversation_from_path(f"{FRIEND}-{BOT}", BOT) == CONVERSATION
    for foreign in (BOT, f"{FRIEND}-43", "g123", f"{FRIEND}:{BOT}", "abc"):
        assert conversation_from_path(foreign, BOT) is None


async def test_chat_received_goes_only_to_chat_received_subscribers(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    client = tweepy_client(http, emulator)
    receiver = await make_receiver()
    await subscribe(client, receiver, "dm.received")
    await register_bot(client)
    status, body = await control(
        http, emulator, "POST", "xchat", json={"sender_id": FRIEND, "text": "psst"}
    )
    assert status == 200 and body["deliveries"] == []
    await asyncio.sleep(0.2)
    assert receiver.posts == []
