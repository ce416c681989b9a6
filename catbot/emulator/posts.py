"""Public posts (tweets): mentions of the bot, replies to it, the bot's own posts, and how
they are delivered. Each builder names the X page whose example it follows.

Who gets a post:
- An Account Activity subscription for user U gets `tweet_create_events` for every post U
  wrote (so the bot's own replies come back, as on X), every post naming U, and every reply
  to one of U's posts ("Posts (by user)", "@mentions (of user)", "Replies (to or from user)":
  x-api/account-activity/introduction).
- An X Activity API subscription for user U (x-api/activity/event-payloads), each event
  as its own condition reads: `post.reply.create` for a direct reply by someone else to one
  of U's posts ("Direct replies only": `filter.user_id` = U, the replied-to post's author),
  `post.mention.create` for a post by someone else that @mentions U. A direct reply that
  names U (X's own reply example does, "@ExampleUser Great post") meets both, so it comes as
  both, one delivery each with the same post: X says nothing against it, and a client must
  answer it once (by post id) either way.

Account Activity envelope (x-api/account-activity/introduction, "tweet_create_events
(@mentions)" and "Support for longform posts"), one post per delivery:

    {"for_user_id", "user_has_blocked"?, "is_blocked_by"?, "tweet_create_events": [tweet]}

`user_has_blocked` comes as given to `/_emulator/mention` (X's example has the string
"false"; the default) and is absent on the bot's own posts; `is_blocked_by` ("shown only for
Post mention events if the mentioning user is blocked by the subscribed user", the page's
data object table) only when given. The tweet is a v1.1 Tweet object as Account Activity
delivers it (compatibility mode): `created_at` ("Mon May 19 14:01:46 +0000 2025"), `id`
(int), `id_str`, `text`, `display_text_range`, `truncated`, `user`, `entities`; a post over
140 characters has `text` cut to 115 characters + "… " + its t.co permalink, `truncated:
true`, top-level entities within the kept text plus that link, and `extended_tweet`
{`full_text`, `display_text_range`, `entities`} holding everything (the page's longform
example). Beside those the root-level attributes of the Tweet object data dictionary
(x-api/enterprise-gnip-2.0/fundamentals/data-dictionary), which X's example elides as "...":
`source`, `in_reply_to_status_id`(+`_str`), `in_reply_to_user_id`(+`_str`),
`in_reply_to_screen_name`, `is_quote_status`, `lang`, `timestamp_ms`, and `retweeted_status`
on retweets.

X Activity API envelope (x-api/activity/event-payloads, `post.mention.create` and
`post.reply.create`): `data.payload` IS the v2 post, `data.includes` sits beside it:

    {"data": {"event_uuid", "filter": {"user_id"}, "event_type", "tag"?,
              "payload": <v2 post>, "includes": {"users": [...], "tweets": [...]}}}

The v2 post: `id`, `text`, `author_id`, `created_at` (ISO 8601), `conversation_id`,
`edit_history_tweet_ids`, `display_text_range`, `edit_controls`, `entities.mentions[{start,
start_str, end, end_str, username, id}]` (only when it names someone), `possibly_sensitive`,
`paid_partnership`, `public_metrics` (each count also as a string), `reply_settings`, `lang`;
a reply adds `in_reply_to_tweet_id`, `in_reply_to_user_id`, `referenced_tweets`. `includes`
holds the users involved and the posts (the post itself, and the one replied to: "includes
may contain related users and tweets (including the Post being replied to)"). X documents
no X Activity API payload for a post over 280 characters: `text` is the whole text here.

Offsets (`indices`, `start`/`end`) count code points, as X does. Only `@names` of users the
emulator knows become mentions (X links existing accounts only).
"""

from __future__ import annotations

import hashlib
import re
import string
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from twitter_text import parse_tweet

from catbot.emulator.delivery import DeliveryOutcome
from catbot.emulator.dispatch import deliver_envelopes
from catbot.emulator.payloads import (
    Envelope,
    EventUuidSource,
    activity_data_envelope,
    audience_of,
    metric_pairs,
    new_event_uuid,
    v2_timestamp,
    v2_user,
    v11_profile,
)
from catbot.emulator.runtime import Runtime
from catbot.emulator.state import EmulatorState
from catbot.emulator.state.posts import Mention, Post
from catbot.emulator.state.registry import Subscription
from catbot.emulator.state.users import UserProfile

MENTION_EVENT_TYPE = "post.mention.create"
REPLY_EVENT_TYPE = "post.reply.create"
# What a post may weigh as X counts it (docs.x.com fundamentals/counting-characters).
MAX_POST_LENGTH = 280
# What a user of the control API may post: X Premium's longform limit (X's own Account
# Activity longform example is 2,051 characters long; docs.x.com states no limit).
MAX_LONGFORM_LENGTH = 25_000
# Account Activity's compatibility mode: text past 140 characters moves to extended_tweet.
COMPAT_TEXT_LENGTH = 140
# A t.co link always takes 23 characters (fundamentals/counting-characters).
_TCO_LENGTH = 23
_ELLIPSIS = "…"
# X's edit window, as its examples show it: `editable_until` is `created_at` + 1 hour.
_EDIT_WINDOW_MS = 3_600_000
_EDITS_ALLOWED = 5

# X screen names: up to 15 letters, digits and underscores; not inside a word or an e-mail.
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_@])@([A-Za-z0-9_]{1,15})(?![A-Za-z0-9_@])")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SOURCE = '<a href="https://x.com" rel="nofollow">X Web App</a>'
_BASE62 = string.digits + string.ascii_letters


def weighted_length(text: str) -> int:
    """A post's length as X counts it: twitter-text v3 (NFC, most CJK and emoji 2, URLs 23)."""
    return int(parse_tweet(text).weightedLength)


def find_mentions(state: EmulatorState, text: str) -> tuple[Mention, ...]:
    mentions = []
    for match in _MENTION_RE.finditer(text):
        user = state.users.by_screen_name(match.group(1))
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
    is_blocked_by: bool | str | None = None,
) -> Post:
    """Record a post (a retweet of a fresh original when `retweet`) and tell listeners."""
    author = state.users.ensure(author_id)
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
        is_blocked_by=is_blocked_by,
    )
    return state.posts.add(post)


# --- Account Activity (v1.1 tweet objects) ---------------------------------------------


def v11_created_at(epoch_ms: int) -> str:
    """X's v1.1 timestamp ("Mon May 19 14:01:46 +0000 2025"), whatever the locale."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return (
        f"{_DAYS[moment.weekday()]} {_MONTHS[moment.month - 1]} {moment.day:02d} "
        f"{moment:%H:%M:%S} +0000 {moment.year}"
    )


def _v11_mention(users: Mapping[str, UserProfile], mention: Mention) -> dict[str, Any]:
    profile = users.get(mention.user_id)
    return {
        "screen_name": mention.screen_name,
        "name": profile.name if profile is not None else mention.screen_name,
        "id": int(mention.user_id),
        "id_str": mention.user_id,
        "indices": [mention.start, mention.end],
    }


def tco_link(post_id: str) -> str:
    """A stable stand-in for X's t.co permalink of a post (23 characters, as X's are)."""
    number = int.from_bytes(hashlib.sha256(post_id.encode()).digest()[:8], "big")
    code = ""
    for _ in range(_TCO_LENGTH - len("https://t.co/")):
        number, digit = divmod(number, len(_BASE62))
        code += _BASE62[digit]
    return f"https://t.co/{code}"


def _v11_entities(mentions: Iterable[dict[str, Any]], urls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"hashtags": [], "urls": urls, "user_mentions": list(mentions), "symbols": []}


def _compat_text(
    post_id: str, text: str, mentioned: list[Mention], users: Mapping[str, UserProfile]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The tweet's text fields, its entities and its `extended_tweet` (None when the text
    fits in compatibility mode's 140 characters)."""
    if len(text) <= COMPAT_TEXT_LENGTH:
        fields = {"text": text, "display_text_range": [0, len(text)], "truncated": False}
        return fields, _v11_entities((_v11_mention(users, m) for m in mentioned), []), None
    # X's longform example: 115 characters, "… ", then the post's 23-character t.co link:
    # 140 in all, the link as the one top-level URL entity.
    kept = COMPAT_TEXT_LENGTH - _TCO_LENGTH - 2
    link = tco_link(post_id)
    fields = {
        "text": f"{text[:kept]}{_ELLIPSIS} {link}",
        "display_text_range": [0, COMPAT_TEXT_LENGTH],
        "truncated": True,
    }
    url_entity = {
        "url": link,
        "expanded_url": f"https://twitter.com/i/web/status/{post_id}",
        "display_url": f"twitter.com/i/web/status/{post_id[0]}{_ELLIPSIS}",
        "indices": [kept + 2, COMPAT_TEXT_LENGTH],
    }
    entities = _v11_entities(
        (_v11_mention(users, m) for m in mentioned if m.end <= kept), [url_entity]
    )
    extended = {
        "full_text": text,
        "display_text_range": [0, len(text)],
        "entities": _v11_entities((_v11_mention(users, m) for m in mentioned), []),
    }
    return fields, entities, extended


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
    text_fields, entities, extended = _compat_text(post_id, text, list(mentions), users)
    tweet: dict[str, Any] = {
        "created_at": v11_created_at(created_ms),
        "id": int(post_id),
        "id_str": post_id,
        **text_fields,
        "source": _SOURCE,
        "in_reply_to_status_id": int(reply_to.id) if reply_to is not None else None,
        "in_reply_to_status_id_str": reply_to.id if reply_to is not None else None,
        "in_reply_to_user_id": int(reply_to.author_id) if reply_to is not None else None,
        "in_reply_to_user_id_str": reply_to.author_id if reply_to is not None else None,
        "in_reply_to_screen_name": (
            replied_author.screen_name if replied_author is not None else None
        ),
        "user": {"id": int(author.id), "id_str": author.id, **v11_profile(author)},
        "is_quote_status": False,
    }
    if extended is not None:
        tweet["extended_tweet"] = extended
    tweet["entities"] = entities
    tweet["lang"] = "und"
    tweet["timestamp_ms"] = str(created_ms)
    return tweet


def tweet_create_event(state: EmulatorState, post: Post) -> dict[str, Any]:
    users = state.users
    author = users.ensure(post.author_id)
    reply_to = state.posts.by_id(post.in_reply_to_tweet_id) if post.in_reply_to_tweet_id else None
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
    if post.is_blocked_by is not None:
        payload["is_blocked_by"] = post.is_blocked_by
    payload["tweet_create_events"] = [tweet_create_event(state, post)]
    return payload


# --- X Activity API (v2 posts) ---------------------------------------------------------


def _display_start(post: Post) -> int:
    """Where a reply's own words begin: X's display range leaves out the leading @names."""
    if post.in_reply_to_tweet_id is None:
        return 0
    start = 0
    for mention in sorted(post.mentions, key=lambda m: m.start):
        if mention.start != start:
            break
        start = mention.end
        while start < len(post.text) and post.text[start] == " ":
            start += 1
    return start


def v2_post(post: Post) -> dict[str, Any]:
    """The v2 Post of x-api/activity/event-payloads' `post.mention.create` payload (with
    the reply fields of its `post.reply.create` example)."""
    data: dict[str, Any] = {
        "id": post.id,
        "text": post.text,
        "author_id": post.author_id,
        "created_at": v2_timestamp(post.created_ms),
        "conversation_id": post.conversation_id,
        "edit_history_tweet_ids": [post.id],
    }
    referenced = []
    if post.in_reply_to_tweet_id is not None:
        data["in_reply_to_tweet_id"] = post.in_reply_to_tweet_id
        data["in_reply_to_user_id"] = post.in_reply_to_user_id
        referenced.append({"type": "replied_to", "id": post.in_reply_to_tweet_id})
    if post.retweeted_status_id is not None:
        referenced.append({"type": "retweeted", "id": post.retweeted_status_id})
    if referenced:
        data["referenced_tweets"] = referenced
    data["display_text_range"] = [_display_start(post), len(post.text)]
    data["edit_controls"] = {
        "edits_remaining": _EDITS_ALLOWED,
        "edits_remaining_str": str(_EDITS_ALLOWED),
        "is_edit_eligible": True,
        "editable_until": v2_timestamp(post.created_ms + _EDIT_WINDOW_MS),
    }
    if post.mentions:
        # X's post.create example, which names nobody, has no `entities` at all.
        data["entities"] = {
            "mentions": [
                {
                    "start": m.start,
                    "start_str": str(m.start),
                    "end": m.end,
                    "end_str": str(m.end),
                    "username": m.screen_name,
                    "id": m.user_id,
                }
                for m in post.mentions
            ]
        }
    data["possibly_sensitive"] = False
    data["paid_partnership"] = False
    data["public_metrics"] = metric_pairs(
        retweet_count=0,
        reply_count=0,
        like_count=0,
        quote_count=0,
        bookmark_count=0,
        impression_count=0,
    )
    data["reply_settings"] = "everyone"
    # The emulator detects no language: "und", as X's mention example has it.
    data["lang"] = "und"
    return data


def activity_includes(state: EmulatorState, post: Post) -> dict[str, Any]:
    """`includes` of a post event: the users involved (author first, as in X's mention
    example) and the posts (the post itself, then the one it replies to)."""
    replied = state.posts.by_id(post.in_reply_to_tweet_id) if post.in_reply_to_tweet_id else None
    user_ids = [post.author_id, *post.mentioned_ids]
    if replied is not None:
        user_ids.append(replied.author_id)
    users = []
    for uid in dict.fromkeys(user_ids):
        latest = state.posts.latest_by(uid)
        users.append(
            v2_user(state.users.ensure(uid), most_recent_tweet_id=latest.id if latest else None)
        )
    tweets = [v2_post(post)] + ([v2_post(replied)] if replied is not None else [])
    return {"users": users, "tweets": tweets}


def activity_post_envelope(
    state: EmulatorState,
    subscription: Subscription,
    post: Post,
    new_uuid: EventUuidSource = new_event_uuid,
) -> dict[str, Any]:
    return activity_data_envelope(
        subscription,
        v2_post(post),
        includes=activity_includes(state, post),
        new_uuid=new_uuid,
    )


# --- who gets what ---------------------------------------------------------------------


def activity_event_types(post: Post, user_id: str) -> frozenset[str]:
    """The X Activity API post events `post` fires for `user_id` (see the module doc)."""
    if post.author_id == user_id:
        return frozenset()
    types = set()
    if post.in_reply_to_user_id == user_id:
        types.add(REPLY_EVENT_TYPE)
    if user_id in post.mentioned_ids:
        types.add(MENTION_EVENT_TYPE)
    return frozenset(types)


def _matches(subscription: Subscription, post: Post) -> bool:
    user = subscription.user_id
    if subscription.kind == "account_activity":
        return user in (post.author_id, post.in_reply_to_user_id) or user in post.mentioned_ids
    return subscription.event_type in activity_event_types(post, user)


def envelopes_for_post(state: EmulatorState, post: Post) -> list[Envelope]:
    envelopes = []
    for sub in state.subscriptions.all():
        if sub.webhook_id is None or not _matches(sub, post):
            continue
        if sub.kind == "account_activity":
            payload = account_activity_post_envelope(state, sub.user_id, post)
            audience = audience_of(sub)
        else:
            payload = activity_post_envelope(state, sub, post)
            audience = audience_of(sub, post.id)
        envelopes.append(Envelope(sub.webhook_id, payload, audience, (post.id,)))
    return envelopes


async def dispatch_post(runtime: Runtime, post: Post) -> list[DeliveryOutcome]:
    """Sign and deliver a post to every matching subscription; `redeliver` can repeat it."""
    return await deliver_envelopes(runtime, envelopes_for_post(runtime.state, post), [post.id])
