"""Mentions in the emulator: `POST /2/tweets`, `/_emulator/mention`, both delivery envelopes.

Real loopback sockets throughout. A fake webhook receiver (its own CRC and signature maths,
never `catbot.signing`) plays the daemon; tweepy's AsyncClient, unchanged, plays its X client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tweepy

from catbot.emulator import RunningEmulator, config_from_env, start_emulator
from tests.emulator_fixtures import (
    BOT,
    ENV,
    SECRET,
    SIGNATURE_HEADER,
    EmulatorFactory,
    Receiver,
    bearer_client,
    hmac_b64,
    oauth_signer,
    tweepy_client,
    wait_valid,
)

FRIEND = "42"
V11_DATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} \+0000 \d{4}$"
)


async def control(
    http: aiohttp.ClientSession, emulator: RunningEmulator, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, f"{emulator.url}/_emulator/{path}", **kw) as resp:
        return resp.status, await resp.json()


async def ready(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver, **kw: Any
) -> RunningEmulator:
    emulator = await make_emulator(receiver.url, **kw)
    await wait_valid(http, emulator)
    return emulator


async def mention(
    http: aiohttp.ClientSession, emulator: RunningEmulator, **body: Any
) -> dict[str, Any]:
    body.setdefault("sender_id", FRIEND)
    body.setdefault("text", "@catbot tell me something")
    status, answer = await control(http, emulator, "POST", "mention", json=body)
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


def signed_payloads(receiver: Receiver) -> list[dict[str, Any]]:
    """Every delivery so far, after checking its signature with our own HMAC."""
    payloads = []
    for headers, body in receiver.posts:
        assert headers[SIGNATURE_HEADER] == hmac_b64(SECRET, body)
        payloads.append(json.loads(body))
    return payloads


async def settle(receiver: Receiver, count: int) -> None:
    """Wait for `count` deliveries, then a little longer: no unexpected extra may follow."""
    await receiver.wait_posts(count)
    await asyncio.sleep(0.15)
    assert len(receiver.posts) == count, [json.loads(b) for _, b in receiver.posts]


# --- POST /2/tweets ----------------------------------------------------------------------


async def test_reply_with_tweepy_is_201_recorded_and_echoed(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    asked = await mention(http, emulator, sender_name="Grace")
    assert [d["status"] for d in asked["deliveries"]] == [200]
    await settle(receiver, 1)
    [incoming] = signed_payloads(receiver)

    # The Account Activity envelope of a mention.
    # `user_has_blocked` as X's @mentions example has it when nobody said otherwise.
    assert incoming["for_user_id"] == BOT and incoming["user_has_blocked"] == "false"
    assert "is_blocked_by" not in incoming
    [tweet] = incoming["tweet_create_events"]
    assert tweet["id_str"] == asked["tweet_id"] and tweet["id"] == int(asked["tweet_id"])
    assert tweet["text"] == "@catbot tell me something"
    assert V11_DATE.match(tweet["created_at"]), tweet["created_at"]
    assert tweet["timestamp_ms"].isdigit()
    assert tweet["user"]["id_str"] == FRIEND and tweet["user"]["id"] == int(FRIEND)
    assert (tweet["user"]["name"], tweet["user"]["screen_name"]) == ("Grace", "user42")
    assert tweet["entities"]["user_mentions"] == [
        {
            "screen_name": "catbot",
            "name": "catbot",
            "id": int(BOT),
            "id_str": BOT,
            "indices": [0, 7],
        }
    ]
    assert tweet["entities"]["hashtags"] == tweet["entities"]["urls"] == []
    assert tweet["in_reply_to_status_id_str"] is None and "retweeted_status" not in tweet
    # Short enough for compatibility mode: the whole text, nothing moved to extended_tweet.
    assert tweet["truncated"] is False and "extended_tweet" not in tweet
    assert tweet["display_text_range"] == [0, len(tweet["text"])]

    # The bot replies publicly through tweepy, unchanged.
    client = tweepy_client(http, emulator)
    response = await client.create_tweet(
        text="@user42 Cats sleep 16 hours a day.",
        in_reply_to_tweet_id=asked["tweet_id"],
        user_auth=True,
    )
    reply_id = response.data["id"]
    assert response.data == {
        "id": reply_id,
        "text": "@user42 Cats sleep 16 hours a day.",
        "edit_history_tweet_ids": [reply_id],
    }
    assert int(reply_id) > int(asked["tweet_id"])

    # Like X, the bot's own post comes back to its Account Activity webhook.
    await settle(receiver, 2)
    echo = signed_payloads(receiver)[1]
    assert echo["for_user_id"] == BOT and "user_has_blocked" not in echo
    [own] = echo["tweet_create_events"]
    assert own["user"]["id_str"] == BOT and own["id_str"] == reply_id
    assert own["in_reply_to_status_id_str"] == asked["tweet_id"]
    assert own["in_reply_to_user_id_str"] == FRIEND
    assert own["in_reply_to_screen_name"] == "user42"

    # The public thread, oldest first.
    status, listed = await control(http, emulator, "GET", "posts")
    assert status == 200
    assert [
        (p["id"], p["author_id"], p["text"], p["in_reply_to_tweet_id"]) for p in listed["posts"]
    ] == [
        (asked["tweet_id"], FRIEND, "@catbot tell me something", None),
        (reply_id, BOT, "@user42 Cats sleep 16 hours a day.", asked["tweet_id"]),
    ]
    assert all(p["created_at"].endswith("Z") for p in listed["posts"])
    mine = (await control(http, emulator, "GET", "posts?user_id=42"))[1]["posts"]
    assert len(mine) == 2
    assert (await control(http, emulator, "GET", "posts?user_id=99"))[1]["posts"] == []
    assert (await control(http, emulator, "GET", "posts?user_id=x"))[0] == 400

    [logged] = (await control(http, emulator, "GET", "requests?route=tweets"))[1]["requests"]
    assert (logged["path"], logged["status"], logged["outcome"]) == ("/2/tweets", 201, "sent")
    stats = (await control(http, emulator, "GET", "stats"))[1]
    assert (stats["post_requests"], stats["posts_created"], stats["mentions_received"]) == (1, 1, 1)

    # The DM conversation is untouched, and reset forgets the thread.
    assert (await control(http, emulator, "GET", "messages"))[1]["messages"] == []
    await control(http, emulator, "POST", "reset")
    assert (await control(http, emulator, "GET", "posts"))[1]["posts"] == []


async def test_post_needs_the_bots_user_context(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    forged = tweepy_client(http, emulator, consumer_secret="not-the-secret")
    with pytest.raises(tweepy.Unauthorized):
        await forged.create_tweet(text="hello", user_auth=True)

    bearer = bearer_client(http, emulator, emulator.runtime.config.app_bearer_token)
    with pytest.raises(tweepy.Forbidden):
        await bearer.create_tweet(text="hello", user_auth=False)

    async with http.post(emulator.url + "/2/tweets", json={"text": "hello"}) as resp:
        assert resp.status == 401 and "title" in await resp.json()

    assert (await control(http, emulator, "GET", "posts"))[1]["posts"] == []
    outcomes = [
        r["outcome"] for r in (await control(http, emulator, "GET", "requests"))[1]["requests"]
    ]
    assert outcomes == ["unauthorized"] * 3
    await asyncio.sleep(0.1)
    assert receiver.posts == []


async def test_post_validation_answers_x_problems(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    client = tweepy_client(http, emulator)

    # X refuses a too-long post with the 403 problem shape docs.x.com x-api/posts/create-post
    # documents for content it will not post.
    with pytest.raises(tweepy.Forbidden) as too_long:
        await client.create_tweet(text="x" * 281, user_auth=True)
    assert too_long.value.response.status == 403
    body = await too_long.value.response.json()
    assert (body["title"], body["type"], body["status"]) == ("Forbidden", "about:blank", 403)
    assert body["detail"].startswith("Your Tweet text is too long.")
    assert too_long.value.api_messages == [body["detail"]]

    with pytest.raises(tweepy.BadRequest) as unknown:
        await client.create_tweet(text="hi", in_reply_to_tweet_id="123456", user_auth=True)
    assert "does not exist" in unknown.value.api_messages[0]

    # Exactly 280 characters is fine; a body without text is not.
    assert (await client.create_tweet(text="y" * 280, user_auth=True)).data["text"] == "y" * 280
    with pytest.raises(tweepy.BadRequest):
        await client.request("POST", "/2/tweets", params={}, json={"reply": {}}, user_auth=True)

    stats = (await control(http, emulator, "GET", "stats"))[1]
    assert (stats["post_requests"], stats["posts_created"], stats["post_failed"]) == (4, 1, 3)


FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"  # 7 code points
LONG_URL = "https://example.com/a/path/much/longer/than/twenty/three/characters"

# (text, weight by docs.x.com fundamentals/counting-characters, worked out by hand from its
# rules: Latin 1, CJK and emoji 2, any emoji sequence 2, any URL 23, NFC before counting).
WEIGHED_TEXTS = [
    ("\u732b" * 140, 280),  # CJK: 140 characters fill a post
    ("\u732b" * 141, 282),  # 141 code points only, yet too long
    ("\U0001F63A" * 141, 282),  # emoji: 2 each
    (FAMILY * 140, 280),  # 980 code points, but a ZWJ sequence is one emoji
    ("a" * 256 + " " + LONG_URL, 280),  # 324 code points: the URL counts 23
    ("a" * 257 + " " + LONG_URL, 281),
    ("e\u0301" * 280, 280),  # 560 code points that NFC composes into 280
    ("\u00e9" * 281, 281),  # Latin-1 accents weigh 1
]


@pytest.mark.parametrize(("text", "weight"), WEIGHED_TEXTS)
async def test_posts_are_counted_as_x_counts_them(
    make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
    receiver: Receiver,
    text: str,
    weight: int,
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    client = tweepy_client(http, emulator)
    if weight <= 280:
        assert (await client.create_tweet(text=text, user_auth=True)).data["text"] == text
        return
    with pytest.raises(tweepy.Forbidden) as refused:
        await client.create_tweet(text=text, user_auth=True)
    assert refused.value.api_messages[0].startswith("Your Tweet text is too long.")
    status, posts = await control(http, emulator, "GET", "posts")
    assert status == 200 and posts["posts"] == []


async def test_post_problem_body_is_x_like(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    client = tweepy_client(http, emulator)
    with pytest.raises(tweepy.BadRequest) as caught:
        await client.create_tweet(text="hi", in_reply_to_tweet_id="99", user_auth=True)
    body = await caught.value.response.json()
    assert body["title"] == "Invalid Request" and body["status"] == 400
    assert body["type"].endswith("/invalid-request")
    assert body["errors"][0]["parameters"] == {"reply.in_reply_to_tweet_id": ["99"]}
    assert "x-rate-limit-remaining" in caught.value.response.headers


async def test_post_faults_latency_failure_and_rate_limit(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    client = tweepy_client(http, emulator)
    status, faults = await control(
        http,
        emulator,
        "POST",
        "faults",
        json={"post_fail_next": 1, "post_rate_limit_next": 1, "latency": {"tweets": 0.3}},
    )
    assert status == 200 and faults["post_fail_status"] == 503

    started = time.monotonic()
    with pytest.raises(tweepy.TooManyRequests):
        await client.create_tweet(text="one", user_auth=True)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(tweepy.TwitterServerError) as failed:
        await client.create_tweet(text="two", user_auth=True)
    assert failed.value.response.status == 503
    assert (await client.create_tweet(text="three", user_auth=True)).data["text"] == "three"

    logged = (await control(http, emulator, "GET", "requests?route=tweets"))[1]["requests"]
    assert [(r["status"], r["outcome"]) for r in logged] == [
        (429, "rate_limited"),
        (503, "failed"),
        (201, "sent"),
    ]
    assert all(r["latency_injected"] == 0.3 for r in logged)
    assert [p["text"] for p in (await control(http, emulator, "GET", "posts"))[1]["posts"]] == [
        "three"
    ]
    assert (await control(http, emulator, "POST", "faults", json={"post_fail_status": 200}))[
        0
    ] == 400


# --- /_emulator/mention --------------------------------------------------------------------


@pytest.mark.parametrize("flag", [True, False, "true", "false", "True"])
async def test_user_has_blocked_is_passed_through_as_given(
    make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
    receiver: Receiver,
    flag: bool | str,
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    await mention(http, emulator, user_has_blocked=flag)
    await settle(receiver, 1)
    [payload] = signed_payloads(receiver)
    assert payload["user_has_blocked"] == flag and type(payload["user_has_blocked"]) is type(flag)


async def test_retweet_carries_retweeted_status(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    asked = await mention(http, emulator, retweet=True, text="@catbot is great")
    await settle(receiver, 1)
    [tweet] = signed_payloads(receiver)[0]["tweet_create_events"]
    assert tweet["text"] == "RT @user42: @catbot is great"
    original = tweet["retweeted_status"]
    assert original["text"] == "@catbot is great" and original["id_str"] != asked["tweet_id"]
    assert original["user"]["id_str"] == FRIEND
    assert original["entities"]["user_mentions"][0]["indices"] == [0, 7]
    # Offsets count from the start of the retweet's own text.
    assert [m["id_str"] for m in tweet["entities"]["user_mentions"]] == [FRIEND, BOT]
    assert tweet["entities"]["user_mentions"][1]["indices"] == [12, 19]
    [listed] = (await control(http, emulator, "GET", "posts"))[1]["posts"]
    assert listed["retweeted_status_id"] == original["id_str"]


async def test_mention_control_checks_and_prefixes(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    bad_bodies: list[dict[str, Any]] = [
        {"sender_id": BOT, "text": "@catbot hi"},
        {"sender_id": "x", "text": "hi"},
        {"sender_id": FRIEND, "text": ""},
        {"sender_id": FRIEND, "text": "hi", "user_has_blocked": "maybe"},
        {"sender_id": FRIEND, "text": "hi", "user_has_blocked": 1},
        {"sender_id": FRIEND, "text": "hi", "retweet": "yes"},
        {"sender_id": FRIEND, "text": "hi", "colour": "red"},
        {"sender_id": FRIEND, "text": "hi", "is_blocked_by": "no"},
        # Longform (X Premium) goes up to 25,000: too long once @catbot is put in front.
        {"sender_id": FRIEND, "text": "x" * 25_000},
    ]
    for body in bad_bodies:
        status, answer = await control(http, emulator, "POST", "mention", json=body)
        assert status == 400 and answer["error"], body
    status, _ = await control(
        http,
        emulator,
        "POST",
        "mention",
        json={"sender_id": FRIEND, "text": "hi", "in_reply_to_tweet_id": "5"},
    )
    assert status == 404

    # A text that does not name the bot gets "@catbot " in front: it is a mention.
    asked = await mention(http, emulator, text="tell me something")
    await settle(receiver, 1)
    [tweet] = signed_payloads(receiver)[0]["tweet_create_events"]
    assert tweet["text"] == "@catbot tell me something"
    assert (await control(http, emulator, "GET", "posts"))[1]["posts"][0]["text"] == tweet["text"]

    # A case-insensitive mention counts; and the same bytes can be redelivered.
    await mention(http, emulator, text="hey @CatBot, a fact?")
    await settle(receiver, 2)
    assert signed_payloads(receiver)[1]["tweet_create_events"][0]["text"] == "hey @CatBot, a fact?"
    status, again = await control(
        http, emulator, "POST", "redeliver", json={"event_id": asked["tweet_id"]}
    )
    assert status == 200 and [d["status"] for d in again["deliveries"]] == [200]
    await settle(receiver, 3)
    assert receiver.posts[2][1] == receiver.posts[0][1]

    # A friend may answer in the thread: a reply to the bot's post.
    client = tweepy_client(http, emulator)
    reply = await client.create_tweet(
        text="@user42 fact", in_reply_to_tweet_id=asked["tweet_id"], user_auth=True
    )
    await settle(receiver, 4)
    follow = await mention(
        http, emulator, text="@catbot more!", in_reply_to_tweet_id=reply.data["id"]
    )
    await settle(receiver, 5)
    [tweet] = signed_payloads(receiver)[4]["tweet_create_events"]
    assert tweet["id_str"] == follow["tweet_id"]
    assert tweet["in_reply_to_status_id_str"] == reply.data["id"]
    assert tweet["in_reply_to_user_id_str"] == BOT


async def test_long_mention_moves_to_extended_tweet_as_in_x_longform_example(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)
    words = " ".join(f"word{i}" for i in range(60))
    text = f"{words} @catbot"  # the mention sits far past the first 140 characters
    asked = await mention(http, emulator, text=text, is_blocked_by=True)
    await settle(receiver, 1)
    [envelope] = signed_payloads(receiver)
    assert envelope["is_blocked_by"] is True and envelope["user_has_blocked"] == "false"
    [tweet] = envelope["tweet_create_events"]

    # Compatibility mode, as x-api/account-activity/introduction shows it: 115 characters,
    # an ellipsis, a space and the post's 23-character t.co link, 140 in all.
    shown = tweet["text"]
    assert tweet["truncated"] is True and len(shown) == 140
    assert shown.startswith(text[:115] + "\u2026 https://t.co/")
    assert tweet["display_text_range"] == [0, 140]
    [link] = tweet["entities"]["urls"]
    assert link["url"] == shown[117:] and link["indices"] == [117, 140]
    assert link["expanded_url"] == f"https://twitter.com/i/web/status/{asked['tweet_id']}"
    assert tweet["entities"]["user_mentions"] == []  # the mention is not in the kept text

    extended = tweet["extended_tweet"]
    assert extended["full_text"] == text
    assert extended["display_text_range"] == [0, len(text)]
    start = text.index("@catbot")
    assert extended["entities"]["user_mentions"] == [
        {
            "screen_name": "catbot",
            "name": "catbot",
            "id": int(BOT),
            "id_str": BOT,
            "indices": [start, start + len("@catbot")],
        }
    ]
    assert extended["entities"]["urls"] == extended["entities"]["hashtags"] == []


async def test_v11_environment_subscriptions_get_tweet_create_events_too(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver, api="v1.1", default_env_name="dev")
    asked = await mention(http, emulator, user_has_blocked="true")
    await settle(receiver, 1)
    [payload] = signed_payloads(receiver)
    assert payload["for_user_id"] == BOT and payload["user_has_blocked"] == "true"
    assert payload["tweet_create_events"][0]["id_str"] == asked["tweet_id"]


# --- the X Activity API ------------------------------------------------------------------


async def test_activity_startup_subscribes_mentions_and_delivers_v2_posts(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver, api="activity")
    subs = (await control(http, emulator, "GET", "subscriptions"))[1]["subscriptions"]
    assert [s["event_type"] for s in subs] == [
        "dm.received",
        "post.mention.create",
        "post.reply.create",
    ]

    asked = await mention(http, emulator, sender_name="Grace", user_has_blocked="false")
    assert [d["status"] for d in asked["deliveries"]] == [200]
    await settle(receiver, 1)
    [payload] = signed_payloads(receiver)
    data = payload["data"]
    # x-api/activity/event-payloads: `payload` IS the post, `includes` sits beside it.
    assert set(data) == {"event_uuid", "filter", "event_type", "tag", "payload", "includes"}
    assert data["filter"] == {"user_id": BOT} and data["event_type"] == "post.mention.create"
    assert data["tag"] == "catbot" and re.fullmatch(r"-?[0-9]{1,19}", data["event_uuid"])
    post = data["payload"]
    assert "data" not in post and "includes" not in post
    assert post["id"] == asked["tweet_id"] and post["author_id"] == FRIEND
    assert post["text"] == "@catbot tell me something"
    assert post["conversation_id"] == asked["tweet_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", post["created_at"])
    assert post["entities"]["mentions"] == [
        {"start": 0, "start_str": "0", "end": 7, "end_str": "7", "username": "catbot", "id": BOT}
    ]
    assert post["display_text_range"] == [0, len(post["text"])]
    assert "referenced_tweets" not in post and "in_reply_to_user_id" not in post
    includes = data["includes"]
    assert [(u["id"], u["username"], u["name"]) for u in includes["users"]] == [
        (FRIEND, "user42", "Grace"),
        (BOT, "catbot", "catbot"),
    ]
    assert includes["users"][0]["most_recent_tweet_id"] == asked["tweet_id"]
    assert includes["tweets"] == [post]

    # The bot's own post is no mention of the bot: nothing comes back on XAA.
    client = tweepy_client(http, emulator)
    reply = await client.create_tweet(
        text="@user42 fact", in_reply_to_tweet_id=post["id"], user_auth=True
    )
    assert reply.data["id"]
    await settle(receiver, 1)

    # Retweets are named in referenced_tweets.
    rt = await mention(http, emulator, retweet=True)
    await settle(receiver, 2)
    retweeted = signed_payloads(receiver)[1]["data"]
    assert retweeted["event_type"] == "post.mention.create"
    assert retweeted["payload"]["id"] == rt["tweet_id"]
    assert [r["type"] for r in retweeted["payload"]["referenced_tweets"]] == ["retweeted"]

    # A direct reply to the bot's post that names it meets both events' conditions: it comes
    # as `post.reply.create` (for the bot, the replied-to post's author) and as a mention.
    follow = await mention(http, emulator, in_reply_to_tweet_id=reply.data["id"])
    await settle(receiver, 4)
    by_type = {p["data"]["event_type"]: p["data"] for p in signed_payloads(receiver)[2:]}
    assert set(by_type) == {"post.reply.create", "post.mention.create"}
    replied = by_type["post.reply.create"]
    assert replied["filter"] == {"user_id": BOT}
    assert replied["payload"] == by_type["post.mention.create"]["payload"]
    answer = replied["payload"]
    assert answer["id"] == follow["tweet_id"]
    assert answer["referenced_tweets"] == [{"type": "replied_to", "id": reply.data["id"]}]
    assert answer["in_reply_to_tweet_id"] == reply.data["id"]
    assert answer["in_reply_to_user_id"] == BOT and answer["conversation_id"] == post["id"]
    # The reply's own words start after the leading "@catbot ".
    assert answer["display_text_range"] == [len("@catbot "), len(answer["text"])]
    expected_tweets = [follow["tweet_id"], reply.data["id"]]
    assert [t["id"] for t in replied["includes"]["tweets"]] == expected_tweets
    # Every delivery has its own event_uuid.
    uuids = {p["data"]["event_uuid"] for p in signed_payloads(receiver)}
    assert len(uuids) == 4



async def test_activity_subscription_route_accepts_mentions_beside_account_activity(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await ready(make_emulator, http, receiver)  # v2: Account Activity for the bot
    webhook_id = emulator.runtime.state.webhooks.ids()[0]
    client = tweepy_client(http, emulator)
    created = await client.request(
        "POST",
        "/2/activity/subscriptions",
        params={},
        json={
            "event_type": "post.mention.create",
            "filter": {"user_id": BOT},
            "webhook_id": webhook_id,
        },
        user_auth=True,
    )
    assert created.status == 200
    body = await created.json()
    assert body["data"]["subscription"]["event_type"] == "post.mention.create"

    asked = await mention(http, emulator)
    assert [d["status"] for d in asked["deliveries"]] == [200, 200]
    await settle(receiver, 2)
    kinds = sorted(
        "data" if "data" in p else "tweet_create_events" for p in signed_payloads(receiver)
    )
    assert kinds == ["data", "tweet_create_events"]

    # Another user's mention subscription is refused (only the bot authorised the app).
    with pytest.raises(tweepy.Forbidden):
        await client.request(
            "POST",
            "/2/activity/subscriptions",
            params={},
            json={"event_type": "post.mention.create", "filter": {"user_id": FRIEND}},
            user_auth=True,
        )


async def test_mentions_reach_only_subscribed_valid_webhooks(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator = await make_emulator()  # no webhook at all
    asked = await mention(http, emulator)
    assert asked["deliveries"] == []
    assert len((await control(http, emulator, "GET", "posts"))[1]["posts"]) == 1
    with contextlib.suppress(Exception):
        await receiver.wait_posts(1, within=0.1)
    assert receiver.posts == []


# --- the chat page's public thread ---------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def threaded_emulator() -> Iterator[RunningEmulator]:
    """An emulator on its own event loop in a thread, for the synchronous Playwright API."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    config = config_from_env(ENV, host="127.0.0.1", port=0)
    emulator = asyncio.run_coroutine_threadsafe(start_emulator(config), loop).result(10)
    try:
        yield emulator
    finally:
        asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _bot_posts(base: str, text: str, reply_to: str) -> dict[str, Any]:
    signer = oauth_signer()
    _, headers, _ = signer.sign("https://api.x.com/2/tweets", "POST")
    body = json.dumps({"text": text, "reply": {"in_reply_to_tweet_id": reply_to}}).encode()
    request = urllib.request.Request(
        base + "/2/tweets",
        data=body,
        method="POST",
        headers={"Authorization": headers["Authorization"], "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 201
        result: dict[str, Any] = json.loads(answer.read())
        return result


def test_chat_page_posts_a_mention_and_shows_the_public_thread(
    threaded_emulator: RunningEmulator,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "no /usr/bin/chromium: run `make test` (it installs chromium)"
    base = threaded_emulator.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"], headless=True
        )
        try:
            page = browser.new_page()
            page.goto(f"{base}/_emulator/chat")
            expect(page.locator("#connection")).to_have_text("Live")
            page.get_by_label("User id (digits)").fill(FRIEND)
            page.get_by_label("Name", exact=True).fill("Grace")
            page.get_by_label("Name", exact=True).press("Enter")

            box = page.get_by_label("Public post mentioning the bot")
            box.fill("@catbot tell me something")
            box.press("Enter")
            posts = page.locator("#posts li.post")
            expect(posts).to_have_count(1)
            expect(posts.nth(0)).to_contain_text("Grace")
            expect(posts.nth(0)).to_contain_text("@catbot tell me something")
            # No webhook here: the page says so rather than failing silently.
            expect(page.locator("#mention-error")).to_contain_text("No webhook")

            mention_id = posts.nth(0).get_attribute("data-post-id")
            assert mention_id is not None
            _bot_posts(base, "@user42 Cats purr at 25 Hz.", mention_id)
            expect(posts).to_have_count(2)
            expect(posts.nth(1)).to_have_attribute("data-author", "bot")
            expect(posts.nth(1)).to_contain_text("Replying to Grace")
            expect(posts.nth(1)).to_contain_text("Cats purr at 25 Hz.")
            assert page.locator("#posts").get_attribute("aria-live") == "polite"

            # A fresh page gets the thread from the snapshot.
            page.reload()
            expect(page.locator("#connection")).to_have_text("Live")
            expect(posts).to_have_count(2)
        finally:
            browser.close()
