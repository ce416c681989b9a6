"""Public posts (tweets): mentions of the bot, the bot's replies, and how they are delivered.

Who gets a post:
- An Account Activity subscription for user U gets `tweet_create_events` for every post U
  wrote (so the bot's own replies come back, as on X), every post naming U, and every reply
  to one of U's posts.
- An X Activity API subscription with event type `post.mention.create` for user U gets every
  post naming U that U did not write.

Account Activity envelope (v2 and v1.1 alike), one post per delivery:

    {"for_user_id": "<subscribed user>",
     "user_has_blocked": <as given to /_emulator/mention: a bool, or a "true"/"false" string;
                          false when not given; absent on the bot's own posts>,
     "tweet_create_events": [<v1.1 tweet object>]}

The v1.1 tweet object: `created_at` ("Sun Nov 29 07:00:00 +0000 2026"), `id` (int), `id_str`,
`text`, `source`, `truncated`, `in_reply_to_status_id`(+`_str`), `in_reply_to_user_id`(+`_str`),
`in_reply_to_screen_name`, `user` {`id` (int), `id_str`, `name`, `screen_name`, ...},
`is_quote_status`, counts, `entities` {`hashtags`, `urls`, `symbols`, `user_mentions`:
[{`id`, `id_str`, `screen_name`, `name`, `indices`: [start, end]}]}, `favorited`,
`retweeted`, `filter_level`, `lang`, `timestamp_ms` (epoch ms as a string), and for retweets
only `retweeted_status` (the original post's tweet object).

X Activity API envelope: x-api.md documents no payload for `post.mention.create`, so this
shape is the emulator's choice: a v2 post with its author expanded, as X's v2 post lookups
answer with `expansions=author_id`:

    {"data": {"event_uuid": "<uuid>", "filter": {"user_id": "<bot>"},
              "event_type": "post.mention.create", "tag": "<tag, when set>",
              "payload": {"data": {"id", "text", "author_id", "created_at" (ISO 8601),
                                   "conversation_id", "edit_history_tweet_ids": [id],
                                   "entities": {"mentions": [{"id", "username", "start", "end"}]},
                                   "in_reply_to_user_id"?: str,
                                   "referenced_tweets"?: [{"type": "replied_to"|"retweeted",
                                                           "id"}]},
                          "includes": {"users": [{"id", "username", "name"}]}}}}

Offsets (`indices`, `start`/`end`) count code points, as X does. Only `@names` of users the
emulator knows become mentions (X links existing accounts only).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from catbot.emulator.delivery import DeliveryOutcome
from catbot.emulator.payloads import Envelope, activity_data_envelope, encode
from catbot.emulator.runtime import Runtime
from catbot.emulator.state import (
    EmulatorState,
    Mention,
    Post,
    SignedBody,
    Subscription,
    UserProfile,
    iso_timestamp,
)
from catbot.signing import sign_body

MENTION_EVENT_TYPE = "post.mention.create"
MAX_POST_LENGTH = 280
# X screen names: up to 15 letters, digits and underscores; not inside a word or an e-mail.
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_@])@([A-Za-z0-9_]{1,15})(?![A-Za-z0-9_@])")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SOURCE = '<a href="https://x.com" rel="nofollow">X Web App</a>'


def find_mentions(state: EmulatorState, text: str) -> tuple[Mention, ...]:
    mentions = []
    for match in _MENTION_RE.finditer(text):
        user = state.user_by_screen_name(match.group(1))
        if user is not None:
            mentions.append(Mention(user.id, user.screen_name, match.start(), match.end()))
    return tuple(mentions)


def create_post(
    state: EmulatorState,
    *,
    author_id: str,
    text: str,
    in_reply_to: Post | None = None,
    retweet: bool = False,
    user_has_blocked: bool | str | None = None,
) -> Post:
    """Record a post (a retweet of a fresh original when `retweet`) and tell listeners."""
    author = state.ensure_user(author_id)
    now = int(time.time() * 1000)
    retweeted_id: str | None = None
    retweeted_text: str | None = None
    if retweet:
        retweeted_id, retweeted_text = state.ids.next(), text
        text = f"RT @{author.screen_name}: {text}"
    post_id = state.ids.next()
    post = Post(
        id=post_id,
        author_id=author_id,
        text=text,
        created_ms=now,
        conversation_id=in_reply_to.conversation_id if in_reply_to is not None else post_id,
        in_reply_to_tweet_id=in_reply_to.id if in_reply_to is not None else None,
        in_reply_to_user_id=in_reply_to.author_id if in_reply_to is not None else None,
        mentions=find_mentions(state, text),
        retweeted_status_id=retweeted_id,
        retweeted_text=retweeted_text,
        user_has_blocked=user_has_blocked,
    )
    return state.add_post(post)


# --- Account Activity (v1.1 tweet objects) ---------------------------------------------


def v11_created_at(epoch_ms: int) -> str:
    """X's v1.1 timestamp ("Sun Nov 29 07:00:00 +0000 2026"), whatever the locale."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return (
        f"{_DAYS[moment.weekday()]} {_MONTHS[moment.month - 1]} {moment.day:02d} "
        f"{moment:%H:%M:%S} +0000 {moment.year}"
    )


def _v11_user(profile: UserProfile) -> dict[str, Any]:
    return {
        "id": int(profile.id),
        "id_str": profile.id,
        "name": profile.name,
        "screen_name": profile.screen_name,
        "protected": False,
        "verified": False,
        "followers_count": 0,
        "friends_count": 0,
        "statuses_count": 0,
    }


def _v11_mention(users: Mapping[str, UserProfile], mention: Mention) -> dict[str, Any]:
    profile = users.get(mention.user_id)
    return {
        "screen_name": mention.screen_name,
        "name": profile.name if profile is not None else mention.screen_name,
        "id": int(mention.user_id),
        "id_str": mention.user_id,
        "indices": [mention.start, mention.end],
    }


def _tweet_object(
    *,
    post_id: str,
    author: UserProfile,
    text: str,
    created_ms: int,
    mentions: Iterable[Mention],
    users: Mapping[str, UserProfile],
    reply_to: Post | None,
) -> dict[str, Any]:
    replied_author = users.get(reply_to.author_id) if reply_to is not None else None
    return {
        "created_at": v11_created_at(created_ms),
        "id": int(post_id),
        "id_str": post_id,
        "text": text,
        "source": _SOURCE,
        "truncated": False,
        "in_reply_to_status_id": int(reply_to.id) if reply_to is not None else None,
        "in_reply_to_status_id_str": reply_to.id if reply_to is not None else None,
        "in_reply_to_user_id": int(reply_to.author_id) if reply_to is not None else None,
        "in_reply_to_user_id_str": reply_to.author_id if reply_to is not None else None,
        "in_reply_to_screen_name": (
            replied_author.screen_name if replied_author is not None else None
        ),
        "user": _v11_user(author),
        "geo": None,
        "coordinates": None,
        "place": None,
        "is_quote_status": False,
        "quote_count": 0,
        "reply_count": 0,
        "retweet_count": 0,
        "favorite_count": 0,
        "entities": {
            "hashtags": [],
            "urls": [],
            "user_mentions": [_v11_mention(users, m) for m in mentions],
            "symbols": [],
        },
        "favorited": False,
        "retweeted": False,
        "filter_level": "low",
        "lang": "en",
        "timestamp_ms": str(created_ms),
    }


def tweet_create_event(state: EmulatorState, post: Post) -> dict[str, Any]:
    users = state.users
    author = state.ensure_user(post.author_id)
    reply_to = state.post_by_id(post.in_reply_to_tweet_id) if post.in_reply_to_tweet_id else None
    tweet = _tweet_object(
        post_id=post.id,
        author=author,
        text=post.text,
        created_ms=post.created_ms,
        mentions=post.mentions,
        users=users,
        reply_to=reply_to,
    )
    if post.retweeted_status_id is not None and post.retweeted_text is not None:
        original = post.retweeted_text
        tweet["retweeted_status"] = _tweet_object(
            post_id=post.retweeted_status_id,
            author=author,
            text=original,
            created_ms=post.created_ms,
            mentions=find_mentions(state, original),
            users=users,
            reply_to=None,
        )
    return tweet


def account_activity_post_envelope(
    state: EmulatorState, for_user_id: str, post: Post
) -> dict[str, Any]:
    payload: dict[str, Any] = {"for_user_id": for_user_id}
    if post.user_has_blocked is not None:
        payload["user_has_blocked"] = post.user_has_blocked
    payload["tweet_create_events"] = [tweet_create_event(state, post)]
    return payload


# --- X Activity API (v2 posts) ---------------------------------------------------------


def v2_post(post: Post) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": post.id,
        "text": post.text,
        "author_id": post.author_id,
        "created_at": iso_timestamp(post.created_ms / 1000),
        "conversation_id": post.conversation_id,
        "edit_history_tweet_ids": [post.id],
        "entities": {
            "mentions": [
                {"id": m.user_id, "username": m.screen_name, "start": m.start, "end": m.end}
                for m in post.mentions
            ]
        },
    }
    referenced = []
    if post.in_reply_to_tweet_id is not None:
        data["in_reply_to_user_id"] = post.in_reply_to_user_id
        referenced.append({"type": "replied_to", "id": post.in_reply_to_tweet_id})
    if post.retweeted_status_id is not None:
        referenced.append({"type": "retweeted", "id": post.retweeted_status_id})
    if referenced:
        data["referenced_tweets"] = referenced
    return data


def activity_post_envelope(
    state: EmulatorState,
    subscription: Subscription,
    post: Post,
    new_event_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> dict[str, Any]:
    author = state.ensure_user(post.author_id)
    return activity_data_envelope(subscription, {
        "data": v2_post(post),
        "includes": {
            "users": [{"id": author.id, "username": author.screen_name, "name": author.name}]
        },
    }, new_event_uuid)


# --- who gets what ---------------------------------------------------------------------


def _matches(subscription: Subscription, post: Post) -> bool:
    user = subscription.user_id
    if subscription.kind == "account_activity":
        return user in (post.author_id, post.in_reply_to_user_id) or user in post.mentioned_ids
    if subscription.event_type == MENTION_EVENT_TYPE:
        return user in post.mentioned_ids and post.author_id != user
    return False


def envelopes_for_post(state: EmulatorState, post: Post) -> list[Envelope]:
    envelopes = []
    for sub in state.subscriptions.values():
        if sub.webhook_id is None or not _matches(sub, post):
            continue
        if sub.kind == "account_activity":
            payload = account_activity_post_envelope(state, sub.user_id, post)
        else:
            payload = activity_post_envelope(state, sub, post)
        audience = f"{sub.kind}:{sub.event_type or '*'}:{sub.user_id}"
        envelopes.append(Envelope(sub.webhook_id, payload, audience))
    return envelopes


async def dispatch_post(runtime: Runtime, post: Post) -> list[DeliveryOutcome]:
    """Sign and deliver a post to every matching subscription; `redeliver` can repeat it."""
    secret = runtime.config.consumer_secret
    bodies = []
    for envelope in envelopes_for_post(runtime.state, post):
        body = encode(envelope.payload)
        bodies.append(
            SignedBody(envelope.webhook_id, body, sign_body(secret, body), envelope.audience)
        )
    signed = tuple(bodies)
    runtime.state.remember_bodies([post.id], signed)
    return await runtime.pipeline.deliver(signed, [post.id])
