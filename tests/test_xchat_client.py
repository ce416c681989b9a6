"""The X Chat HTTP calls against a small in-test X: OAuth 1.0a on every call, the idempotent
key registration, the send body, and X's failures sorted like the DM sender's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from catbot.emulator.oauth import AuthOutcome, RequestToVerify, verify
from catbot.emulator.oauth import Credentials as OAuthCredentials
from catbot.x.dm import (
    AppSendError,
    Credentials,
    PermanentSendError,
    RateLimited,
    TransientSendError,
)
from catbot.xchat.client import XChatClient
from catbot.xchat.crypto import SendPayload, XChatCrypto
from catbot.xchat.identity import BotIdentity, generate_identity, load_identity
from catbot.xchat.wire import PublicKeyRecord, parse_chat_received
from testkit.xchat_builders import Friend, chat_received, wrap_posted
from tests.emulator_fixtures import serve

BOT = "1000"
CREDS = Credentials("ck", "cs", f"{BOT}-token", "ts")


@dataclass
class FakeX:
    """Just enough of X's Chat API; records every call and checks its OAuth signature."""

    keys: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    auth: list[AuthOutcome] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, Any], dict[str, str], str]] = field(default_factory=list)
    version_field: str = "public_key_version"
    friend: Friend | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.checks])
        app.router.add_get("/2/users/{id}/public_keys", self.get_keys)
        app.router.add_post("/2/users/{id}/public_keys", self.add_key)
        app.router.add_post("/2/chat/conversations/{id}/messages", self.send)
        app.router.add_get("/2/chat/conversations/{id}/events", self.events)
        return app

    @web.middleware
    async def checks(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path_qs))
        outcome = verify(
            RequestToVerify(request.method, request.scheme, request.host, request.raw_path,
                            request.headers.get("Authorization")),
            OAuthCredentials("cs", "ck", f"{BOT}-token", "ts"),
            now=time.time(), max_clock_skew=300,
        )
        self.auth.append(outcome)
        if outcome is not AuthOutcome.OK:
            return web.json_response({"title": "Unauthorized", "status": 401}, status=401)
        if self.fail_next:
            status, body, headers, content_type = self.fail_next.pop(0)
            return web.json_response(body, status=status, headers=headers,
                                     content_type=content_type)
        return await handler(request)

    async def get_keys(self, request: web.Request) -> web.Response:
        user = request.match_info["id"]
        if user not in self.keys:
            return web.json_response({"errors": [{"title": "Not Found Error"}]}, status=404)
        return web.json_response({"data": self.keys[user]})

    async def add_key(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        key = body["public_key"]
        version = str(int(body["version"]) + 1)  # X assigns its own version
        self.keys.setdefault(request.match_info["id"], []).append({
            "public_key": key["public_key"],
            "signing_public_key": key["signing_public_key"],
            "identity_public_key_signature": key["identity_public_key_signature"],
            "public_key_version": version,
        })
        data = {self.version_field: version} if self.version_field else {}
        return web.json_response({"data": data | {"token_map": {}}})

    async def send(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        assert self.friend is not None
        conversation = f"{self.friend.user_id}:{BOT}"
        event = wrap_posted(
            message_id=body["message_id"],
            encoded_message_create_event=body["encoded_message_create_event"],
            encoded_message_event_signature=body["encoded_message_event_signature"],
            sender_id=BOT, conversation_id=conversation,
        )
        return web.json_response({"data": {"encoded_message_event": event}}, status=201,
                                 headers={"x-rate-limit-remaining": "14",
                                          "x-rate-limit-reset": "1900000000"})

    async def events(self, request: web.Request) -> web.Response:
        return web.json_response({
            "data": [{"encoded_event": "QUJD"}],
            "meta": {"conversation_key_events": ["REVG"], "next_token": "p2"},
        })


@pytest.fixture
async def x() -> AsyncIterator[tuple[FakeX, XChatClient]]:
    fake = FakeX()
    runner, base = await serve(fake.app())
    async with aiohttp.ClientSession() as session:
        yield fake, XChatClient(CREDS, session, base)
    await runner.cleanup()


def bot_identity() -> BotIdentity:
    return load_identity(generate_identity().private_key, user_id=BOT, key_version=None)


async def test_register_posts_once_then_finds_the_key(x: tuple[FakeX, XChatClient]) -> None:
    fake, client = x
    identity = bot_identity()
    first = await client.ensure_registered(identity)
    assert first.created is True
    assert fake.bodies[0] == identity.registration_payload(fake.bodies[0]["version"]).body()
    assert first.version == str(int(fake.bodies[0]["version"]) + 1)
    again = await client.ensure_registered(identity)
    assert (again.version, again.created) == (first.version, False)
    posts = [c for c in fake.calls if c[0] == "POST"]
    assert posts == [("POST", f"/2/users/{BOT}/public_keys")]
    assert fake.calls[0] == ("GET", f"/2/users/{BOT}/public_keys")  # a GET before any POST
    assert set(fake.auth) == {AuthOutcome.OK}


async def test_register_adds_its_key_beside_another(x: tuple[FakeX, XChatClient]) -> None:
    fake, client = x
    other = bot_identity()
    fake.keys[BOT] = [{"public_key": other.public_key,
                       "signing_public_key": other.signing_public_key,
                       "identity_public_key_signature": other.identity_public_key_signature,
                       "public_key_version": "5"}]
    registered = await client.ensure_registered(bot_identity())
    assert registered.created and registered.version != "5"
    assert len(fake.keys[BOT]) == 2


async def test_register_learns_an_unnamed_version_by_listing(
    x: tuple[FakeX, XChatClient]
) -> None:
    fake, client = x
    fake.version_field = ""
    registered = await client.ensure_registered(bot_identity())
    assert registered.version == fake.keys[BOT][0]["public_key_version"]
    assert [c[0] for c in fake.calls] == ["GET", "POST", "GET"]


async def test_the_daily_registration_limit_is_a_rate_limit(
    x: tuple[FakeX, XChatClient]
) -> None:
    fake, client = x
    fake.keys[BOT] = []
    fake.fail_next.append((429, {"title": "Too Many Requests", "status": 429},
                           {"x-user-limit-24hour-reset": "1900000123"}, "application/json"))
    fake.fail_next.insert(0, (200, {"data": []}, {}, "application/json"))
    with pytest.raises(RateLimited) as caught:
        await client.ensure_registered(bot_identity())
    assert caught.value.reset_at == 1900000123.0


async def test_keys_of_a_user_without_any_are_empty(x: tuple[FakeX, XChatClient]) -> None:
    fake, client = x
    assert await client.get_public_keys("42") == []
    friend = Friend("42")
    fake.keys["42"] = [{"public_key": friend.keys.public_key,
                        "signing_public_key": friend.keys.signing_public_key,
                        "identity_public_key_signature": friend.keys.identity_public_key_signature,
                        "version": friend.version}]  # the older pages' field name
    assert await client.get_public_keys("42") == [friend.record()]


async def test_a_reply_reaches_x_and_the_friend_reads_it(x: tuple[FakeX, XChatClient]) -> None:
    fake, client = x
    fresh = generate_identity()
    identity = load_identity(fresh.private_key, user_id=BOT,
                             key_version=fresh.registration.version)
    crypto = XChatCrypto(identity)
    friend = Friend("42")
    fake.friend = friend
    conversation, key_change = friend.start_conversation(identity.record())
    encoded, _ = friend.write(conversation, "fact?")
    delivery = parse_chat_received(chat_received(
        sender_id="42", conversation_id=conversation, encoded_event=encoded,
        key_change=key_change, bot_id=BOT,
    ))
    message = crypto.decrypt(delivery, [friend.record()])
    reply = crypto.encrypt_reply(message.conversation_id, "Cats have 32 ear muscles.",
                                 conversation_token=delivery.conversation_token)
    sent = await client.send_message(reply)
    assert fake.calls[-1] == ("POST", "/2/chat/conversations/42/messages")
    assert fake.bodies[-1] == reply.body()
    assert fake.bodies[-1]["conversation_token"] == delivery.conversation_token
    assert (sent.remaining, sent.reset_at) == (14, 1900000000.0)
    assert sent.encoded_message_event is not None
    read = friend.read(sent.encoded_message_event, identity.record())
    assert (read["verified"], read["content"]["text"]) == (True, "Cats have 32 ear muscles.")


def some_payload() -> SendPayload:
    return SendPayload("42", "m-1", "QUJD", "REVG", "1")


@pytest.mark.parametrize(("status", "body", "headers", "content_type", "expected"), [
    (429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": "1900000456"},
     "application/json", RateLimited),
    (429, {"type": "https://api.x.com/2/problems/rate-limit-exceeded"},
     {"x-rate-limit-reset": "1900000456"}, "application/problem+json", RateLimited),
    (503, {"title": "Service Unavailable"}, {}, "application/json", TransientSendError),
    (403, {"type": "https://api.x.com/2/problems/recipient-not-messageable", "status": 403,
           "title": "Forbidden", "detail": "cannot message"}, {}, "application/problem+json",
     PermanentSendError),
    (403, {"errors": [{"code": 349, "message": "You cannot send messages to this user."}]},
     {}, "application/json", PermanentSendError),
    (401, {"errors": [{"code": 89, "message": "Invalid or expired token."}]}, {},
     "application/json", AppSendError),
    (401, {"title": "Unauthorized"}, {}, "application/problem+json", AppSendError),
    # A proxy's HTML page: aiohttp's json() refuses it inside tweepy, only status and
    # headers are left to sort by.
    (401, {"page": "<html>"}, {}, "text/html", AppSendError),
    (429, {"page": "<html>"}, {"x-rate-limit-reset": "1900000456"}, "text/html", RateLimited),
    (502, {"page": "<html>"}, {}, "text/html", TransientSendError),
    (400, {"page": "<html>"}, {}, "text/html", PermanentSendError),
])
async def test_failures_are_sorted_like_the_dm_senders(
    x: tuple[FakeX, XChatClient], status: int, body: dict[str, Any],
    headers: dict[str, str], content_type: str, expected: type[Exception],
) -> None:
    fake, client = x
    fake.fail_next.append((status, body, headers, content_type))
    with pytest.raises(expected) as caught:
        await client.send_message(some_payload())
    if expected is RateLimited:
        assert isinstance(caught.value, RateLimited)
        assert caught.value.reset_at == 1900000456.0


async def test_x_unreachable_is_transient() -> None:
    async with aiohttp.ClientSession() as session:
        client = XChatClient(CREDS, session, "http://127.0.0.1:9")
        with pytest.raises(TransientSendError):
            await client.send_message(some_payload())


async def test_bad_ids_never_reach_x(x: tuple[FakeX, XChatClient]) -> None:
    fake, client = x
    with pytest.raises(PermanentSendError):
        await client.send_message(SendPayload("42:1000", "m", "QQ==", "QQ==", "1"))
    with pytest.raises(ValueError):
        await client.get_public_keys("../admin")
    assert fake.calls == []


async def test_conversation_history_page(x: tuple[FakeX, XChatClient]) -> None:
    fake, client = x
    page = await client.get_conversation_events("42", max_results=500, pagination_token="p1")
    assert (page.events, page.key_change_events, page.next_token) == (("QUJD",), ("REVG",), "p2")
    method, path = fake.calls[-1]
    assert method == "GET" and path.startswith("/2/chat/conversations/42/events?")
    assert "max_results=100" in path and "pagination_token=p1" in path


async def test_the_cache_fetches_through_the_client(x: tuple[FakeX, XChatClient]) -> None:
    fake, client = x
    friend = Friend("42")
    fake.keys["42"] = [{"public_key": friend.keys.public_key,
                        "signing_public_key": friend.keys.signing_public_key,
                        "identity_public_key_signature": friend.keys.identity_public_key_signature,
                        "public_key_version": friend.version}]
    cache = client.signing_key_cache(ttl=60)
    records: list[PublicKeyRecord] = await cache.get("42")
    assert records == [friend.record()] == await cache.get("42")
    assert fake.calls.count(("GET", "/2/users/42/public_keys")) == 1
