"""DM deliveries shaped as X sends them: a `users` map with the sender's full profile.

`bench.load.delivery` is the smallest body the webhook answers (one event, two three-field
users, ~0.4 KB). X's deliveries carry much more: the sender's and the bot's profiles, and in
Account Activity the sending app. These bodies are built here from the fields X documents
(values invented, varied per sender so no two bodies are alike), at about the size X's own
examples have (1-2 KB, compact JSON):

- Account Activity (`direct_message_events`): docs.x.com x-api/account-activity/introduction,
  the direct_message_events example: `for_user_id`, one `message_create` event with
  `source_app_id`, `apps` (id, name, url) and `users` keyed by id (id, created_timestamp,
  name, screen_name, location, description, url, protected, verified, followers_count,
  friends_count, statuses_count, profile_image_url_https).
- X Activity API (`dm.received`): docs.x.com x-api/activity/event-payloads, the dm.received
  example: `data.event_uuid` (a signed 64-bit decimal string), `data.filter.user_id`,
  `event_type`, `tag`, and `payload` holding the same `direct_message_events` plus `users`,
  each a v2 user wrapped in `data` (id, name, username, created_at, description, location,
  url, entities, profile_image_url, profile_banner_url, protected, verified, verified_type,
  is_identity_verified, affiliation, public_metrics with the `*_str` twins).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from catbot.signing import sign_body
from testkit.processes import BOT_ID

SHAPES = ("aaa", "xaa")

_FIRST = ("Jordan", "Mei", "Amara", "Lukas", "Sofia", "Hiro", "Priya", "Mateo", "Noor", "Ewan")
_LAST = ("Brinks", "Chen", "Okafor", "Schmidt", "Rossi", "Tanaka", "Nair", "Silva", "Haddad")
_PLACES = ("Boulder, CO", "Shanghai", "Lagos, Nigeria", "Berlin", "Milano, Italia",
           "Osaka", "Bengaluru", "São Paulo", "Beirut", "Edinburgh, Scotland")
_BIOS = (
    "Cat person, coffee drinker, occasional runner. Opinions are my own.",
    "Software engineer by day, foster parent to three very loud kittens by night.",
    "喜欢猫，也喜欢摄影。偶尔写写代码。",
    "Vet nurse. Feline behaviour nerd. Ask me about litter boxes (please don't).",
    "Trying to get my cat to like me. Progress: slow. 🐈",
    "Product designer · tea · plants · a tabby called Miso",
)
_TEXTS = ("cat fact please", "fact", "Tell me something about cats!", "hi", "more",
          "猫的知识", "another one please", "what do you know about lions?")
_BOT_BIO = ("I answer direct messages with cat facts. Send FACT for one, STOP to stop, "
            "HELP for help.")
_APP = {"id": "13090192", "name": "catbot bench app", "url": "https://x.com/catbot"}


def _rand(i: int, salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}{i}".encode(), digest_size=8).digest(), "big")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _profile(user_id: str, n: int) -> dict[str, Any]:
    """One invented person: the values both flavours render in their own field names."""
    first, last = _FIRST[n % len(_FIRST)], _LAST[(n // 7) % len(_LAST)]
    handle = f"{first.lower()}_{last.lower()}{n % 1000}"
    return {
        "id": user_id,
        "name": f"{first} {last}",
        "handle": handle,
        "created_ms": 1_300_000_000_000 + _rand(n, "created") % 400_000_000_000,
        "location": _PLACES[n % len(_PLACES)],
        "description": _BIOS[n % len(_BIOS)],
        "followers": _rand(n, "followers") % 5000,
        "following": _rand(n, "following") % 1000,
        "posts": _rand(n, "posts") % 20000,
        "image": f"https://pbs.twimg.com/profile_images/{_rand(n, 'img') % 10**18}/"
                 f"{handle[:8]}_normal.jpg",
    }


def _aaa_user(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": p["id"], "created_timestamp": str(p["created_ms"]), "name": p["name"],
        "screen_name": p["handle"], "location": p["location"], "description": p["description"],
        "url": f"https://t.co/{p['handle'][:10]}", "protected": False, "verified": False,
        "followers_count": p["followers"], "friends_count": p["following"],
        "statuses_count": p["posts"], "profile_image_url_https": p["image"],
    }


def _xaa_user(p: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for key, value in (("followers_count", p["followers"]), ("following_count", p["following"]),
                       ("tweet_count", p["posts"]), ("listed_count", p["followers"] // 50),
                       ("like_count", p["posts"] // 3), ("media_count", p["posts"] // 40)):
        metrics[key] = value
        metrics[key + "_str"] = str(value)
    link = f"https://t.co/{p['handle'][:10]}"
    return {"data": {
        "description": p["description"],
        "profile_banner_url": f"https://pbs.twimg.com/profile_banners/{p['id']}/1600000000",
        "entities": {"url": {"urls": [{
            "start": 0, "start_str": "0", "end": 23, "end_str": "23", "url": link,
            "expanded_url": f"https://example.com/{p['handle']}",
            "display_url": f"example.com/{p['handle']}"}]}},
        "public_metrics": metrics,
        "location": p["location"],
        "protected": False,
        "url": link,
        "is_identity_verified": False,
        "id": p["id"],
        "profile_image_url": p["image"],
        "verified_type": "none",
        "created_at": _iso(p["created_ms"]),
        "username": p["handle"],
        "verified": False,
        "name": p["name"],
    }}


def _bot_profile() -> dict[str, Any]:
    p = _profile(BOT_ID, 0)
    p.update(name="catbot", handle="catbot", description=_BOT_BIO, location="the internet")
    return p


_BOT = _bot_profile()


def _message_create(event_id: str, sender_id: str, created_ms: int, text: str,
                    app: bool) -> dict[str, Any]:
    mc: dict[str, Any] = {"target": {"recipient_id": BOT_ID}, "sender_id": sender_id}
    if app:
        mc["source_app_id"] = _APP["id"]
    mc["message_data"] = {"text": text, "entities": {
        "hashtags": [], "symbols": [], "user_mentions": [], "urls": []}}
    return {"type": "message_create", "id": event_id, "created_timestamp": str(created_ms),
            "message_create": mc}


def delivery(shape: str, event_id: str, sender_id: str, n: int, created_ms: int) -> bytes:
    """One delivery of `shape` ("aaa" or "xaa") from sender `sender_id` (profile number n)."""
    text = _TEXTS[n % len(_TEXTS)]
    sender = _profile(sender_id, n)
    body: dict[str, Any]
    if shape == "aaa":
        body = {
            "for_user_id": BOT_ID,
            "direct_message_events": [_message_create(event_id, sender_id, created_ms, text,
                                                      app=True)],
            "apps": {_APP["id"]: _APP},
            "users": {sender_id: _aaa_user(sender), BOT_ID: _aaa_user(_BOT)},
        }
    elif shape == "xaa":
        uuid = _rand(int(event_id), "uuid") - 2**63  # signed 64-bit, as in X's examples
        body = {"data": {
            "event_uuid": str(uuid),
            "filter": {"user_id": BOT_ID},
            "event_type": "dm.received",
            "tag": "catbot-dm",
            "payload": {
                "direct_message_events": [_message_create(event_id, sender_id, created_ms,
                                                          text, app=False)],
                "users": {sender_id: _xaa_user(sender), BOT_ID: _xaa_user(_BOT)},
            },
        }}
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return orjson.dumps(body)


def signed_bodies(secret: str, shape: str, prefix: str, count: int, users: int = 50_000,
                  first_user: int = 2_000_000) -> Iterator[tuple[str, bytes]]:
    """`count` signed deliveries of `shape` with unique digit ids (per-run `prefix`);
    senders cycle over `users` ids, each with its own profile."""
    now_ms = int(time.time() * 1000)
    tag = _rand(0, prefix) % 10_000_000
    for i in range(count):
        n = i % users
        body = delivery(shape, f"8{tag:07d}{i:09d}", str(first_user + n), n, now_ms)
        yield sign_body(secret, body), body
