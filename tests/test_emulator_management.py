"""X's webhook and subscription management in the emulator, driven as a real X client would.

Everything runs over loopback sockets: a fake webhook receiver (its own CRC maths, never
`catbot.signing`) that can be told to misbehave, and tweepy 4.17's `AsyncClient.request`,
unchanged, redirected from `https://api.twitter.com` to the emulator. OAuth 1.0a calls sign
as the bot; bearer calls use the token the emulator's `/oauth2/token` hands out.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tweepy
from aiohttp import web

from catbot.emulator import ConfigError, RunningEmulator, config_from_env
from catbot.emulator.cli import config_from_args, configure_parser
from tests.emulator_fixtures import (
    BOT,
    CONSUMER_KEY,
    ENV,
    SECRET,
    SIGNATURE_HEADER,
    Answer,
    Api,
    ApiFactory,
    EmulatorFactory,
    Serving,
    WebhookApp,
    basic,
    fetch_bearer,
    hmac_b64,
    oauth_signer,
)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
AA = "/2/account_activity/webhooks"
V11 = "/1.1/account_activity/all"


# --- a webhook receiver that can be told to misbehave ----------------------------------


class Receiver(WebhookApp):
    """Answers CRCs per `mode` and records deliveries.

    Modes: ok, wrong_secret, slow (beyond the emulator's CRC deadline), error (HTTP 500),
    text (200 but not JSON).
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.slow_for = 1.0
        self.posts: list[tuple[dict[str, str], bytes]] = []
        super().__init__()

    async def _crc(self, request: web.Request) -> web.Response:
        token = request.query["crc_token"]
        self.crc_tokens.append(token)
        if self.mode == "error":
            return web.json_response({"error": "boom"}, status=500)
        if self.mode == "slow":
            await asyncio.sleep(self.slow_for)
        if self.mode == "text":
            return web.Response(text="sha256=not-json")
        secret = "not-the-consumer-secret" if self.mode == "wrong_secret" else SECRET
        return web.json_response({"response_token": hmac_b64(secret, token.encode())})

    async def _event(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts.append(({k.lower(): v for k, v in request.headers.items()}, body))
        return web.Response(status=200)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]


ReceiverFactory = Callable[[], Awaitable[Receiver]]


@pytest.fixture
def make_receiver(serving: Serving) -> ReceiverFactory:
    """This file's own misbehaving `Receiver`, in place of the shared fixture's."""

    async def factory() -> Receiver:
        receiver = Receiver()
        receiver.url = await serving(receiver.app, shutdown_timeout=0.1) + "/webhook"
        return receiver

    return factory


async def control(
    http: aiohttp.ClientSession, emulator: RunningEmulator, method: str, path: str, **kw: Any
) -> Any:
    async with http.request(method, emulator.url + "/_emulator/" + path, **kw) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def dm(http: aiohttp.ClientSession, emulator: RunningEmulator, text: str = "hi") -> Any:
    return await control(http, emulator, "POST", "dm", json={"sender_id": "42", "text": text})


async def register(api: Api, receiver: Receiver) -> str:
    answer = await api.user("POST", "/2/webhooks", json={"url": receiver.url})
    assert answer.status == 200, answer.body
    webhook_id: str = answer.body["data"]["id"]
    return webhook_id


def assert_problem(answer: Answer, status: int, reason: str, kind: str) -> None:
    """X's v2 problem, with the reason where tweepy and a reader of `detail` both find it."""
    assert answer.status == status, (answer.status, answer.body)
    body = answer.body
    assert body["errors"][0]["message"].startswith(reason + ": ")
    assert body["detail"].startswith(reason + ": ")
    assert body["type"] == f"https://api.x.com/2/problems/{kind}"
    assert body["status"] == status and body["title"]
    assert answer.message.startswith(reason)


def assert_v11_error(answer: Answer, status: int, code: int, message: str | None = None) -> None:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.error is not None and answer.error.api_codes == [code]
    if message is not None:
        assert answer.body["errors"][0]["message"] == message


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- auth helpers ----------------------------------------------------------------------


async def test_oauth2_token_users_me_and_verify_credentials(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    token = await fetch_bearer(http, emulator)
    assert token == "AAAA" + hashlib.sha256(CONSUMER_KEY.encode()).hexdigest()[:40]
    assert token == await fetch_bearer(http, emulator)  # deterministic

    token_url = emulator.url + "/oauth2/token"
    grant = {"grant_type": "client_credentials"}
    async with http.post(token_url, headers=basic(CONSUMER_KEY, "bad"), data=grant) as r:
        assert r.status == 403
        assert (await r.json())["errors"][0] == {
            "code": 99,
            "message": "Unable to verify your credentials",
            "label": "authenticity_token_error",
        }
    async with http.post(token_url, headers=basic(CONSUMER_KEY, SECRET)) as r:
        assert r.status == 403 and (await r.json())["errors"][0]["code"] == 170

    api = Api(http, emulator, token)
    me = await api.user_client.get_me(user_auth=True)
    assert (me.data.id, me.data.username, me.data.name) == (int(BOT), "catbot", "catbot")
    creds = await api.user("GET", "/1.1/account/verify_credentials.json")
    assert creds.status == 200
    assert creds.body["id"] == int(BOT) and creds.body["id_str"] == BOT
    assert creds.body["screen_name"] == "catbot"

    # The token opens bearer routes; a wrong one, none, or user context where the app is
    # required do not, and app-only auth cannot act as a user.
    assert (await api.app("GET", "/2/webhooks")).status == 200
    assert (await Api(http, emulator, "AAAAwrong").app("GET", "/2/webhooks")).status == 401
    async with http.get(emulator.url + "/2/webhooks") as r:
        assert r.status == 401 and r.content_type == "application/json"
    oauth_on_app_route = await api.user("GET", "/2/webhooks")
    assert oauth_on_app_route.status == 403
    assert oauth_on_app_route.body["title"] == "Unsupported Authentication"
    assert (await api.app("GET", "/2/users/me")).status == 403
    wrong_bearer = await Api(http, emulator, "x").app("GET", f"{V11}/webhooks.json")
    assert_v11_error(wrong_bearer, 401, 89)


async def test_configured_bearer_token_is_the_one_issued(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(env={**ENV, "CATBOT_X_BEARER_TOKEN": "AAAAconfigured"})
    assert await fetch_bearer(http, emulator) == "AAAAconfigured"
    assert (await Api(http, emulator, "AAAAconfigured").app("GET", "/2/webhooks")).status == 200


# --- v2 webhooks -----------------------------------------------------------------------


async def test_v2_webhook_lifecycle(make_api: ApiFactory, make_receiver: ReceiverFactory) -> None:
    api = await make_api()
    receiver = await make_receiver()

    empty = await api.app("GET", "/2/webhooks")
    assert empty.body == {"meta": {"result_count": 0}}  # X v2 omits `data` when empty
    assert empty.headers["x-rate-limit-limit"] == "450"

    created = await api.user("POST", "/2/webhooks", json={"url": receiver.url})
    assert created.status == 200 and len(receiver.crc_tokens) == 1
    hook = created.body["data"]
    assert set(hook) == {"id", "url", "valid", "created_at"}
    assert hook["url"] == receiver.url and hook["valid"] is True and hook["id"].isdigit()
    assert ISO_MS.match(hook["created_at"])
    assert created.headers["x-rate-limit-remaining"] == "449"

    listed = await api.app("GET", "/2/webhooks")
    assert listed.body == {"data": [hook], "meta": {"result_count": 1}}

    revalidated = await api.app("PUT", f"/2/webhooks/{hook['id']}")
    assert revalidated.status == 200 and revalidated.body["data"]["valid"] is True
    assert len(receiver.crc_tokens) == 2

    deleted = await api.user("DELETE", f"/2/webhooks/{hook['id']}")
    assert deleted.body == {"data": {"deleted": True}}
    assert (await api.app("GET", "/2/webhooks")).body == {"meta": {"result_count": 0}}
    for method in ("PUT", "DELETE"):
        missing = await api.app(method, f"/2/webhooks/{hook['id']}")
        assert_problem(missing, 400, "WebhookIdInvalid", "invalid-request")
        assert isinstance(missing.error, tweepy.BadRequest)


async def test_v2_webhook_registration_refusals(
    make_api: ApiFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    api = await make_api(crc_timeout=0.3)
    emulator = api.emulator
    good, bad = await make_receiver(), await make_receiver()

    async def post(url: str) -> Answer:
        return await api.user("POST", "/2/webhooks", json={"url": url})

    for mode, hint in [
        ("wrong_secret", "does not match"),
        ("error", "HTTP 500"),
        ("text", "content type"),
        ("slow", "within 0.3 s"),
    ]:
        bad.mode = mode
        started = time.monotonic()
        answer = await post(bad.url)
        assert_problem(answer, 400, "CrcValidationFailed", "invalid-request")
        assert hint in answer.message
        assert time.monotonic() - started < 1.0  # the deadline is the CRC timeout
    for url in (
        "http://example.com/webhook",  # https required off loopback
        "https://example.com/" + "x" * 200,
        "https://[::1/webhook",
        "ftp://127.0.0.1/webhook",
    ):
        assert_problem(await post(url), 400, "UrlValidationFailed", "invalid-request")
    bad_body = await api.user("POST", "/2/webhooks", json={"uri": good.url})
    assert bad_body.status == 400 and isinstance(bad_body.error, tweepy.BadRequest)

    assert (await post(good.url)).status == 200
    as_app = await api.app("POST", "/2/webhooks", json={"url": good.url})  # bearer works too
    assert_problem(as_app, 400, "DuplicateUrlFailed", "invalid-request")
    bad.mode = "ok"
    limited = await post(bad.url)
    assert_problem(limited, 400, "WebhookLimitExceeded", "invalid-request")
    hooks = (await control(http, emulator, "GET", "webhooks"))["webhooks"]
    assert [h["url"] for h in hooks] == [good.url]


async def test_v2_webhook_rate_limit(make_api: ApiFactory) -> None:
    api = await make_api(webhook_rate_limit=2)
    assert [(await api.app("GET", "/2/webhooks")).status for _ in range(2)] == [200, 200]
    limited = await api.app("GET", "/2/webhooks")
    assert limited.status == 429 and isinstance(limited.error, tweepy.TooManyRequests)
    assert limited.error.reset_time is not None and limited.error.reset_time > time.time()
    assert limited.headers["x-rate-limit-remaining"] == "0"


# --- v2 Account Activity subscriptions -------------------------------------------------


async def test_v2_account_activity_subscriptions(
    make_api: ApiFactory, make_receiver: ReceiverFactory
) -> None:
    api = await make_api(max_webhooks=2, max_subscriptions=1)
    first, second = await make_receiver(), await make_receiver()
    hook = await register(api, first)
    other = await register(api, second)
    all_ = f"{AA}/{hook}/subscriptions/all"

    assert (await api.user("GET", all_)).body == {"data": {"subscribed": False}}
    subscribed = await api.user("POST", all_, json={})
    assert subscribed.status == 200 and subscribed.body == {"data": {"subscribed": True}}
    assert_problem(
        await api.user("POST", all_, json={}),
        400,
        "DuplicateSubscriptionFailed",
        "invalid-request",
    )
    assert (await api.user("GET", all_)).body == {"data": {"subscribed": True}}
    assert_problem(
        await api.user("POST", f"{AA}/{other}/subscriptions/all", json={}),
        400,
        "SubscriptionLimitExceeded",
        "invalid-request",
    )

    listed = await api.app("GET", all_ + "/list")
    assert listed.body == {
        "data": {
            "application_id": "3033300",
            "webhook_id": hook,
            "webhook_url": first.url,
            "subscriptions": [{"user_id": BOT}],
        }
    }
    count = await api.app("GET", "/2/account_activity/subscriptions/count")
    assert count.body["data"] == {
        "account_name": "catbot",
        "provisioned_count": "1",
        "subscriptions_count_all": "1",
        "subscriptions_count_direct_messages": "1",
    }

    # Auth types as X enforces them: the subscribing user signs, the app lists and removes.
    assert (await api.app("POST", all_, json={})).status == 403
    assert (await api.user("GET", all_ + "/list")).status == 403
    assert (await api.user("DELETE", f"{AA}/{hook}/subscriptions/{BOT}/all")).status == 403

    removed = await api.app("DELETE", f"{AA}/{hook}/subscriptions/{BOT}/all")
    assert removed.body == {"data": {"subscribed": False}}
    again = await api.app("DELETE", f"{AA}/{hook}/subscriptions/{BOT}/all")
    assert_problem(again, 404, "SubscriptionNotFound", "resource-not-found")
    assert isinstance(again.error, tweepy.NotFound)
    assert (await api.user("GET", all_)).body == {"data": {"subscribed": False}}

    for answer in [
        await api.user("POST", f"{AA}/999/subscriptions/all", json={}),
        await api.user("GET", f"{AA}/999/subscriptions/all"),
        await api.app("GET", f"{AA}/999/subscriptions/all/list"),
        await api.app("DELETE", f"{AA}/999/subscriptions/{BOT}/all"),
    ]:
        assert_problem(answer, 400, "WebhookIdInvalid", "invalid-request")


async def test_deleting_a_webhook_drops_its_subscriptions(
    make_api: ApiFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    api = await make_api()
    emulator = api.emulator
    receiver = await make_receiver()
    hook = await register(api, receiver)
    await api.user("POST", f"{AA}/{hook}/subscriptions/all", json={})
    subs = (await control(http, emulator, "GET", "subscriptions"))["subscriptions"]
    assert [(s["webhook_id"], s["user_id"], s["kind"]) for s in subs] == [
        (hook, BOT, "account_activity")
    ]
    listed = (await control(http, emulator, "GET", "webhooks"))["webhooks"]
    assert listed[0]["subscriptions"][0]["user_id"] == BOT
    await api.app("DELETE", f"/2/webhooks/{hook}")
    assert (await control(http, emulator, "GET", "subscriptions"))["subscriptions"] == []
    assert (await dm(http, emulator))["deliveries"] == []


# --- deliveries follow subscriptions and validity --------------------------------------


async def test_deliveries_only_to_subscribed_valid_webhooks(
    make_api: ApiFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    api = await make_api(max_webhooks=2)
    emulator = api.emulator
    a, b = await make_receiver(), await make_receiver()
    hook_a, hook_b = await register(api, a), await register(api, b)

    assert (await dm(http, emulator))["deliveries"] == []  # registered, nobody subscribed
    await api.user("POST", f"{AA}/{hook_a}/subscriptions/all", json={})
    answer = await dm(http, emulator, "to a")
    assert answer["deliveries"] == [{"url": a.url, "status": 200, "error": None}]
    headers, body = a.posts[-1]
    assert headers[SIGNATURE_HEADER] == hmac_b64(SECRET, body)
    payload = json.loads(body)
    assert payload["for_user_id"] == BOT
    assert payload["direct_message_events"][0]["id"] == answer["event_id"]
    assert b.posts == []

    # Subscribed but invalid: listed as undelivered, never POSTed to, until PUT revalidates.
    await api.user("POST", f"{AA}/{hook_b}/subscriptions/all", json={})
    b.mode = "error"
    put = await api.app("PUT", f"/2/webhooks/{hook_b}")
    assert put.status == 200 and put.body["data"]["valid"] is False
    answer = await dm(http, emulator, "b is down")
    by_url = {d["url"]: d for d in answer["deliveries"]}
    assert by_url[a.url]["status"] == 200
    assert by_url[b.url]["status"] is None
    assert by_url[b.url]["error"].startswith("webhook invalid: CRC answered HTTP 500")
    assert b.posts == []
    b.mode = "ok"
    assert (await dm(http, emulator, "still down"))["deliveries"][1]["status"] is None
    assert (await api.app("PUT", f"/2/webhooks/{hook_b}")).body["data"]["valid"] is True
    answer = await dm(http, emulator, "b is back")
    assert sorted(d["status"] for d in answer["deliveries"]) == [200, 200]
    assert len(b.posts) == 1

    await api.app("DELETE", f"{AA}/{hook_a}/subscriptions/{BOT}/all")
    seen_by_a = len(a.posts)
    answer = await dm(http, emulator, "only b")
    assert [d["url"] for d in answer["deliveries"]] == [b.url]
    assert len(a.posts) == seen_by_a  # nothing new for the unsubscribed webhook


async def test_periodic_crc_invalidates_and_put_revalidates(
    make_api: ApiFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    api = await make_api(crc_interval=0.2, crc_timeout=0.5)
    emulator = api.emulator
    receiver = await make_receiver()
    hook = await register(api, receiver)
    await api.user("POST", f"{AA}/{hook}/subscriptions/all", json={})

    async def rechecked_twice() -> bool:
        return len(receiver.crc_tokens) >= 3

    await eventually(rechecked_twice)  # registration + periodic checks, still valid
    assert (await api.app("GET", "/2/webhooks")).body["data"][0]["valid"] is True

    receiver.mode = "wrong_secret"

    async def invalid() -> bool:
        return (await api.app("GET", "/2/webhooks")).body["data"][0]["valid"] is False

    await eventually(invalid)
    [state] = (await control(http, emulator, "GET", "webhooks"))["webhooks"]
    assert "does not match" in state["last_crc_error"]
    before = len(receiver.posts)
    answer = await dm(http, emulator, "while invalid")
    assert answer["deliveries"][0]["error"].startswith("webhook invalid")
    assert len(receiver.posts) == before

    # A healthy receiver is not enough: only PUT brings the webhook back.
    receiver.mode = "ok"
    tokens = len(receiver.crc_tokens)
    await asyncio.sleep(0.5)
    assert len(receiver.crc_tokens) == tokens  # invalid webhooks are not re-checked
    assert await invalid()
    assert (await api.user("PUT", f"/2/webhooks/{hook}")).body["data"]["valid"] is True
    answer = await dm(http, emulator, "after PUT")
    assert answer["deliveries"][0]["status"] == 200


# --- X Activity API --------------------------------------------------------------------


async def test_activity_subscription_routes(
    make_api: ApiFactory, make_receiver: ReceiverFactory
) -> None:
    api = await make_api()
    hook = await register(api, await make_receiver())
    route = "/2/activity/subscriptions"

    assert (await api.app("GET", route)).body == {
        "meta": {"result_count": 0, "total_subscriptions": 0}
    }
    body = {
        "event_type": "dm.received",
        "filter": {"user_id": BOT},
        "tag": "t1",
        "webhook_id": hook,
    }
    created = await api.user("POST", route, json=body)
    assert created.status == 200 and created.headers["x-rate-limit-limit"] == "500"
    sub = created.body["data"]["subscription"]
    assert created.body["meta"] == {"total_subscriptions": 1}
    assert {k: sub[k] for k in ("event_type", "filter", "tag", "webhook_id")} == body
    assert sub["subscription_id"].isdigit()
    assert ISO_MS.match(sub["created_at"]) and ISO_MS.match(sub["updated_at"])

    duplicate = await api.app("POST", route, json=body)
    assert_problem(duplicate, 409, "DuplicateSubscriptionFailed", "conflict")
    for bad in (
        {**body, "extra": 1},
        {**body, "event_type": "dm.nonsense"},
        {**body, "filter": {"user_id": BOT, "keyword": "cats"}},
        {**body, "filter": {"user_id": 7000}},
        {"filter": {"user_id": BOT}},
    ):
        answer = await api.user("POST", route, json=bad)
        assert answer.status == 400 and isinstance(answer.error, tweepy.BadRequest), bad
    stranger = await api.user("POST", route, json={**body, "filter": {"user_id": "42"}})
    assert stranger.status == 403 and isinstance(stranger.error, tweepy.Forbidden)
    assert_problem(
        await api.user("POST", route, json={**body, "webhook_id": "999"}),
        400,
        "WebhookIdInvalid",
        "invalid-request",
    )
    for event_type in ("dm.sent", "dm.read"):
        answer = await api.user("POST", route, json={**body, "event_type": event_type})
        assert answer.status == 200
    assert_problem(
        await api.user("POST", route, json={**body, "event_type": "dm.indicate_typing"}),
        400,
        "SubscriptionLimitExceeded",
        "invalid-request",
    )

    page1 = await api.app("GET", route, params={"max_results": "2"})
    assert [s["event_type"] for s in page1.body["data"]] == ["dm.received", "dm.sent"]
    assert page1.body["meta"]["result_count"] == 2
    assert page1.body["meta"]["total_subscriptions"] == 3
    token = page1.body["meta"]["next_token"]
    page2 = await api.user("GET", route, params={"max_results": "2", "pagination_token": token})
    assert [s["event_type"] for s in page2.body["data"]] == ["dm.read"]
    assert "next_token" not in page2.body["meta"]
    assert (await api.app("GET", route, params={"max_results": "0"})).status == 400

    one = f"{route}/{sub['subscription_id']}"
    updated = await api.app("PUT", one, json={"tag": "t2"})
    new = updated.body["data"]["subscription"]
    assert new["tag"] == "t2" and new["subscription_id"] == sub["subscription_id"]
    assert new["updated_at"] >= new["created_at"]
    assert updated.body["data"]["total_subscriptions"] == 3
    assert (await api.app("PUT", one, json={"event_type": "dm.sent"})).status == 400
    assert_problem(
        await api.app("PUT", one, json={"webhook_id": "999"}),
        400,
        "WebhookIdInvalid",
        "invalid-request",
    )
    assert_problem(
        await api.app("PUT", f"{route}/123", json={"tag": "x"}),
        404,
        "SubscriptionNotFound",
        "resource-not-found",
    )

    deleted = await api.app("DELETE", one)
    assert deleted.body == {"data": {"deleted": True}, "meta": {"total_subscriptions": 2}}
    missing = await api.user("DELETE", one)
    assert_problem(missing, 404, "SubscriptionNotFound", "resource-not-found")


async def test_activity_deliveries_follow_subscribed_event_types(
    make_api: ApiFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    api = await make_api()
    emulator = api.emulator
    receiver = await make_receiver()
    hook = await register(api, receiver)
    route = "/2/activity/subscriptions"
    base = {"filter": {"user_id": BOT}, "tag": "cats", "webhook_id": hook}
    await api.user("POST", route, json={**base, "event_type": "dm.received"})

    answer = await dm(http, emulator, "hello")
    assert answer["deliveries"][0]["status"] == 200
    headers, body = receiver.posts[-1]
    assert headers[SIGNATURE_HEADER] == hmac_b64(SECRET, body)
    data = json.loads(body)["data"]
    assert data["event_type"] == "dm.received" and data["filter"] == {"user_id": BOT}
    assert data["tag"] == "cats" and isinstance(data["event_uuid"], str)
    assert data["payload"]["direct_message_events"][0]["id"] == answer["event_id"]

    # The bot's own DM: not delivered while only dm.received is subscribed...
    await api.user_client.create_direct_message(participant_id="42", text="fact one")
    await asyncio.sleep(0.3)
    assert len(receiver.posts) == 1
    # ...and delivered as dm.sent once that is subscribed too.
    await api.user("POST", route, json={**base, "event_type": "dm.sent"})
    await api.user_client.create_direct_message(participant_id="42", text="fact two")

    async def echoed() -> bool:
        return len(receiver.posts) == 2

    await eventually(echoed)
    echo = receiver.payloads()[-1]["data"]
    assert echo["event_type"] == "dm.sent"
    assert echo["payload"]["direct_message_events"][0]["message_create"]["sender_id"] == BOT


# --- v1.1 premium ----------------------------------------------------------------------


async def test_v11_premium_lifecycle(
    make_api: ApiFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    api = await make_api(env_names=("dev", "prod"), max_webhooks=2)
    emulator = api.emulator
    receiver, spare = await make_receiver(), await make_receiver()

    created = await api.user("POST", f"{V11}/dev/webhooks.json", params={"url": receiver.url})
    assert created.status == 200
    hook = created.body
    assert set(hook) == {"id", "url", "valid", "created_timestamp"}
    assert hook["valid"] is True and hook["url"] == receiver.url
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000$", hook["created_timestamp"])
    assert_v11_error(
        await api.user("POST", f"{V11}/dev/webhooks.json", params={"url": spare.url}),
        403,
        214,
        "Too many resources already created.",
    )
    unknown_env = await api.user("POST", f"{V11}/staging/webhooks.json", params={"url": spare.url})
    assert_v11_error(unknown_env, 404, 34)

    assert (await api.app("GET", f"{V11}/dev/webhooks.json")).body == [hook]
    assert (await api.app("GET", f"{V11}/prod/webhooks.json")).body == []
    assert (await api.app("GET", f"{V11}/webhooks.json")).body == {
        "environments": [
            {"environment_name": "dev", "webhooks": [hook]},
            {"environment_name": "prod", "webhooks": []},
        ]
    }

    subscribe = await api.user("POST", f"{V11}/dev/subscriptions.json")
    assert subscribe.status == 204 and subscribe.raw == b""
    assert_v11_error(
        await api.user("POST", f"{V11}/dev/subscriptions.json"),
        409,
        355,
        "Subscription already exists.",
    )
    assert_v11_error(await api.user("POST", f"{V11}/prod/subscriptions.json"), 404, 34)
    check = await api.user("GET", f"{V11}/dev/subscriptions.json")
    assert check.status == 204 and check.raw == b""
    listed = await api.app("GET", f"{V11}/dev/subscriptions/list.json")
    assert listed.body == {
        "environment": "dev",
        "application_id": "3033300",
        "subscriptions": [{"user_id": BOT}],
    }
    count = await api.app("GET", f"{V11}/count.json")
    assert count.body["subscriptions_count_all"] == "1"
    answer = await dm(http, emulator)
    assert answer["deliveries"][0]["status"] == 200
    assert receiver.payloads()[-1]["for_user_id"] == BOT

    removed = await api.app("DELETE", f"{V11}/dev/subscriptions/{BOT}.json")
    assert removed.status == 204 and removed.raw == b""
    assert_v11_error(await api.user("GET", f"{V11}/dev/subscriptions.json"), 404, 34)
    assert_v11_error(await api.app("DELETE", f"{V11}/dev/subscriptions/{BOT}.json"), 404, 34)
    assert (await dm(http, emulator))["deliveries"] == []

    one = f"{V11}/dev/webhooks/{hook['id']}.json"
    assert (await api.user("PUT", one)).status == 204
    receiver.mode = "error"
    assert_v11_error(
        await api.user("PUT", one),
        403,
        214,
        "Non-200 response code during CRC GET request (i.e. 404, 500, etc).",
    )
    assert (await api.app("GET", f"{V11}/dev/webhooks.json")).body[0]["valid"] is False
    assert_v11_error(await api.user("PUT", f"{V11}/prod/webhooks/{hook['id']}.json"), 404, 34)
    deleted = await api.user("DELETE", one)
    assert deleted.status == 204 and deleted.raw == b""
    assert_v11_error(
        await api.user("DELETE", one),
        404,
        34,
        "Webhook does not exist or is associated with a different twitter application.",
    )
    # Bearer-only and user-only routes refuse the other kind of credential.
    assert (await api.user("GET", f"{V11}/dev/subscriptions/list.json")).status == 403
    assert (await api.app("POST", f"{V11}/dev/subscriptions.json")).status == 403


async def test_v11_crc_failures_use_xs_messages(
    make_api: ApiFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    api = await make_api(crc_timeout=0.3)
    receiver = await make_receiver()
    route = f"{V11}/dev/webhooks.json"
    expected = {
        "slow": "High latency on CRC GET request. Your webhook should respond in less than "
        "3 seconds.",
        "wrong_secret": "Webhook URL does not meet the requirements. Invalid CRC token or json "
        "response format.",
        "error": "Non-200 response code during CRC GET request (i.e. 404, 500, etc).",
    }
    for mode, message in expected.items():
        receiver.mode = mode
        answer = await api.user("POST", route, params={"url": receiver.url})
        assert_v11_error(answer, 403, 214, message)
        assert isinstance(answer.error, tweepy.Forbidden)
    assert_v11_error(
        await api.user("POST", route, params={"url": "http://example.com/hook"}),
        403,
        214,
        "Webhook URL does not meet the requirements.",
    )
    assert (await api.app("GET", route)).body == []


async def test_v11_registration_with_a_signed_form_body(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    """Older clients send `url` form-encoded and sign it into the OAuth base string."""
    emulator = await make_emulator()
    receiver = await make_receiver()
    url = emulator.url + f"{V11}/dev/webhooks.json"
    signer = oauth_signer()
    form = {"url": receiver.url}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    _, signed_headers, signed_body = signer.sign(url, "POST", body=form, headers=headers)
    async with http.post(url, data=signed_body, headers=signed_headers) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["url"] == receiver.url
    forged = dict(signed_headers)
    async with http.post(url, data="url=https%3A%2F%2Fevil.example%2Fx", headers=forged) as resp:
        assert resp.status == 401 and (await resp.json())["errors"][0]["code"] == 32


# --- start-up registration and configuration -------------------------------------------


@pytest.mark.parametrize(
    ("flavour", "expected"),
    [
        ("v2", [("account_activity", None)]),
        ("v1.1", [("account_activity", None)]),
        (
            "activity",
            [
                ("activity", "dm.received"),
                ("activity", "post.mention.create"),
                ("activity", "post.reply.create"),
            ],
        ),
    ],
)
async def test_startup_webhook_is_registered_and_subscribed_like_x_would(
    make_api: ApiFactory,
    make_receiver: ReceiverFactory,
    http: aiohttp.ClientSession,
    flavour: str,
    expected: list[tuple[str, str | None]],
) -> None:
    receiver = await make_receiver()
    api = await make_api(receiver.url, api=flavour, env={**ENV, "CATBOT_X_ENV_NAME": "dev"})
    emulator = api.emulator

    async def valid() -> bool:
        hooks = (await api.app("GET", "/2/webhooks")).body.get("data", [])
        return bool(hooks) and hooks[0]["valid"] is True

    await eventually(valid)
    subs = (await control(http, emulator, "GET", "subscriptions"))["subscriptions"]
    assert [(s["kind"], s["event_type"]) for s in subs] == expected
    assert {s["user_id"] for s in subs} == {BOT}
    if flavour == "v1.1":
        listed = await api.app("GET", f"{V11}/dev/webhooks.json")
        assert [h["url"] for h in listed.body] == [receiver.url]
        assert (await api.user("GET", f"{V11}/dev/subscriptions.json")).status == 204
    if flavour == "v2":
        [hook] = (await api.app("GET", "/2/webhooks")).body["data"]
        check = await api.user("GET", f"{AA}/{hook['id']}/subscriptions/all")
        assert check.body == {"data": {"subscribed": True}}
    # The tier is full: X's own routes now refuse another webhook.
    other = await make_receiver()
    limited = await api.user("POST", "/2/webhooks", json={"url": other.url})
    assert_problem(limited, 400, "WebhookLimitExceeded", "invalid-request")


def test_tier_options_on_the_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    tier = ["--max-webhooks", "2", "--max-subscriptions", "15", "--crc-interval", "0.5"]
    args = parser.parse_args([*tier, "--env-name", "dev", "--env-name", "prod"])
    config = config_from_args(args)
    assert (config.max_webhooks, config.max_subscriptions) == (2, 15)
    assert config.crc_interval == 0.5 and config.env_names == ("dev", "prod")
    defaults = config_from_env(ENV)
    assert (defaults.max_webhooks, defaults.max_subscriptions) == (1, 3)
    assert defaults.crc_interval == 3600.0 and defaults.env_names == ()
    assert defaults.env_allowed("any_Label-1") and not defaults.env_allowed("bad label")
    assert config.env_allowed("dev") and not config.env_allowed("staging")

    with pytest.raises(ConfigError, match="max-webhooks"):
        config_from_env(ENV, webhook_urls=["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"])
    with pytest.raises(ConfigError, match="max-subscriptions"):
        config_from_env(
            ENV, api="activity", max_subscriptions=1, webhook_urls=["http://127.0.0.1:1/a"]
        )
    with pytest.raises(ConfigError, match="crc interval"):
        config_from_env(ENV, crc_interval=0)
    with pytest.raises(ConfigError, match="environment name"):
        config_from_env(ENV, env_names=["no spaces"])
