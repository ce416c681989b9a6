"""Delivery envelopes: which subscription receives which DM events, and in what shape.

Every builder names the X page it follows. Where X documents nothing, the comment says so.

- Account Activity (v2 and v1.1), docs.x.com x-api/account-activity/introduction
  ("direct_message_events" example): `{"for_user_id", "direct_message_events": [...],
  "apps"?, "users"}`, v1.1 user objects keyed by id. One body per subscriber may hold several
  events (a batch).
- X Activity API, docs.x.com x-api/activity/event-payloads ("Event envelope", `dm.received`,
  `dm.sent`): `{"data": {"event_uuid", "filter": {"user_id"}, "event_type", "tag"?,
  "payload": {"direct_message_events": [one message_create], "users": {id: {"data": v2
  user}}}}}`. X's examples carry one event per delivery, each with its own `event_uuid` (a
  signed 64-bit decimal string: "-6850472171600526495"), so a batch of DMs becomes one
  delivery per DM here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from catbot.emulator.state.messages import Message
from catbot.emulator.state.registry import Subscription
from catbot.emulator.state.users import UserProfile

# X's placeholder picture for accounts without one (the Account Activity DM example's
# 4337869213 has it): every user object carries a picture URL.
DEFAULT_AVATAR = "https://abs.twimg.com/sticky/default_profile_images/default_profile_normal.png"

EventUuidSource = Callable[[], str]


@dataclass(frozen=True)
class AppInfo:
    id: str
    name: str


@dataclass(frozen=True)
class Envelope:
    webhook_id: str
    payload: dict[str, Any]
    # The subscriber's copy this is (kind, event type, user, and for the X Activity API the
    # event): round-robin spreading sends each audience to one webhook.
    audience: str = ""
    event_ids: tuple[str, ...] = ()


def encode(payload: Any) -> bytes:
    """Serialize once: the signature covers exactly these bytes."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def new_event_uuid() -> str:
    """An X Activity API `event_uuid`: X's examples show signed 64-bit decimals, not UUIDs
    ("2080761390344937796", "-6850472171600526495"; x-api/activity/event-payloads)."""
    return str(int.from_bytes(os.urandom(8), "big", signed=True))


def v2_timestamp(epoch_ms: int | float) -> str:
    """X v2's `created_at`: ISO 8601 in UTC at whole seconds ("2026-07-24T21:23:23.000Z", as
    every timestamp in x-api/activity/event-payloads)."""
    return datetime.fromtimestamp(int(epoch_ms) // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def message_create_event(message: Message, *, source_app: bool = True) -> dict[str, Any]:
    """One `message_create` event (x-api/account-activity/introduction, DM example).

    `source_app_id` only when an app sent it (the Account Activity example's field); the X
    Activity API's `dm.sent` example, an app's own DM, has none, so `source_app=False` there.
    """
    message_data: dict[str, Any] = {
        "text": message.text,
        "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
    }
    if message.media_ids:
        # X documents no DM attachment on these pages; this is the v1.1 DM event's
        # `attachment` (x-api.md), kept for media DMs.
        message_data["attachment"] = {
            "type": "media",
            "media": {"id": int(message.media_ids[0]), "id_str": message.media_ids[0]},
        }
    message_create: dict[str, Any] = {
        "target": {"recipient_id": message.recipient_id},
        "sender_id": message.sender_id,
    }
    if source_app and message.source_app_id is not None:
        message_create["source_app_id"] = message.source_app_id
    message_create["message_data"] = message_data
    return {
        "type": "message_create",
        "id": message.id,
        "created_timestamp": message.created_timestamp,
        "message_create": message_create,
    }


def _participants(messages: Iterable[Message]) -> list[str]:
    seen: dict[str, None] = {}
    for m in messages:
        seen.setdefault(m.sender_id)
        seen.setdefault(m.recipient_id)
    return list(seen)


def v11_profile(profile: UserProfile) -> dict[str, Any]:
    """A v1.1 user's fields after its id, alike in the Account Activity DM example's `users`
    map and in a tweet's `user` (X's longform example). `description` and `url` are left
    out: X's own example omits them for an account without them (4337869213). `location` is
    "" for one without a location."""
    return {
        "name": profile.name,
        "screen_name": profile.screen_name,
        "location": "",
        "protected": False,
        "verified": False,
        "followers_count": 0,
        "friends_count": 0,
        "statuses_count": 0,
        "profile_image_url_https": DEFAULT_AVATAR,
    }


def account_activity_user(profile: UserProfile) -> dict[str, Any]:
    """A v1.1 user as the Account Activity DM example shows one (its `users` map)."""
    return {
        "id": profile.id,
        "created_timestamp": profile.created_timestamp,
        **v11_profile(profile),
    }


def metric_pairs(**counts: int) -> dict[str, Any]:
    """X v2 public metrics as the Activity API sends them: each count also as a string."""
    metrics: dict[str, Any] = {}
    for name, value in counts.items():
        metrics[name] = value
        metrics[f"{name}_str"] = str(value)
    return metrics


def v2_user(profile: UserProfile, *, most_recent_tweet_id: str | None = None) -> dict[str, Any]:
    """A v2 user as x-api/activity/event-payloads shows them (`dm.received` users, and
    `includes.users` of `post.mention.create`).

    X's example accounts also carry `affiliation` (a badge of an affiliated organisation),
    `location`, `entities` and `pinned_tweet_id`; accounts without those have none, so the
    emulator's users, which have none, leave them out. `most_recent_tweet_id` appears in
    `includes.users` only.
    """
    user: dict[str, Any] = {
        "id": profile.id,
        "name": profile.name,
        "username": profile.screen_name,
        "created_at": v2_timestamp(int(profile.created_timestamp)),
        "description": "",
        "url": "",
        "protected": False,
        "verified": False,
        "verified_type": "none",
        "is_identity_verified": False,
        "profile_image_url": DEFAULT_AVATAR,
        "profile_banner_url": "",
        "public_metrics": metric_pairs(
            followers_count=0,
            following_count=0,
            tweet_count=0,
            listed_count=0,
            like_count=0,
            media_count=0,
        ),
    }
    if most_recent_tweet_id is not None:
        user["most_recent_tweet_id"] = most_recent_tweet_id
    return user


def activity_user(profile: UserProfile) -> dict[str, Any]:
    """The `users` map's value in the X Activity API's DM payloads: the v2 user in `data`."""
    return {"data": v2_user(profile)}


def account_activity_envelope(
    for_user_id: str,
    messages: Sequence[Message],
    users: Mapping[str, UserProfile],
    app: AppInfo,
) -> dict[str, Any]:
    """x-api/account-activity/introduction, `direct_message_events`: every event of the
    batch for one subscribed user; `apps` only when one of them was sent by an app."""
    payload: dict[str, Any] = {
        "for_user_id": for_user_id,
        "direct_message_events": [message_create_event(m) for m in messages],
    }
    app_ids = {m.source_app_id for m in messages if m.source_app_id is not None}
    if app_ids:
        payload["apps"] = {
            app_id: {"id": app_id, "name": app.name, "url": ""} for app_id in sorted(app_ids)
        }
    payload["users"] = {uid: account_activity_user(users[uid]) for uid in _participants(messages)}
    return payload


def activity_data_envelope(
    subscription: Subscription,
    payload: dict[str, Any],
    *,
    includes: dict[str, Any] | None = None,
    new_uuid: EventUuidSource = new_event_uuid,
) -> dict[str, Any]:
    """x-api/activity/event-payloads, "Event envelope": one event for one subscription.

    `tag` only when the subscription has one ("Optional tag from your subscription (when
    set)"); `includes` beside `payload`, when the event type has expansions (posts).
    """
    data: dict[str, Any] = {
        "event_uuid": new_uuid(),
        "filter": {"user_id": subscription.user_id},
        "event_type": subscription.event_type,
    }
    if subscription.tag is not None:
        data["tag"] = subscription.tag
    data["payload"] = payload
    if includes is not None:
        data["includes"] = includes
    return {"data": data}


def activity_dm_envelope(
    subscription: Subscription,
    message: Message,
    users: Mapping[str, UserProfile],
    new_uuid: EventUuidSource = new_event_uuid,
) -> dict[str, Any]:
    """x-api/activity/event-payloads, `dm.received` / `dm.sent`: one DM, both participants."""
    return activity_data_envelope(
        subscription,
        {
            "direct_message_events": [message_create_event(message, source_app=False)],
            "users": {uid: activity_user(users[uid]) for uid in _participants([message])},
        },
        new_uuid=new_uuid,
    )


def _matches(subscription: Subscription, message: Message) -> bool:
    user = subscription.user_id
    if subscription.kind == "account_activity":
        # "Direct Messages sent" and "received" (x-api/account-activity/introduction): a
        # subscribed user gets every DM it takes part in, its own too.
        return user in (message.sender_id, message.recipient_id)
    if subscription.event_type == "dm.received":
        return message.recipient_id == user and message.sender_id != user
    if subscription.event_type == "dm.sent":
        return message.sender_id == user
    return False


def audience_of(subscription: Subscription, *event_ids: str) -> str:
    key = f"{subscription.kind}:{subscription.event_type or '*'}:{subscription.user_id}"
    return ":".join((key, *event_ids)) if subscription.kind == "activity" else key


def envelopes_for(
    messages: Sequence[Message],
    subscriptions: Iterable[Subscription],
    users: Mapping[str, UserProfile],
    app: AppInfo,
) -> list[Envelope]:
    """Account Activity: one envelope per matching subscription with all of its events. X
    Activity API: one envelope per matching subscription and event."""
    envelopes: list[Envelope] = []
    for sub in subscriptions:
        if sub.webhook_id is None:  # stream-only XAA subscription: no webhook to POST to
            continue
        matching = [m for m in messages if _matches(sub, m)]
        if not matching:
            continue
        if sub.kind == "account_activity":
            payload = account_activity_envelope(sub.user_id, matching, users, app)
            ids = tuple(m.id for m in matching)
            envelopes.append(Envelope(sub.webhook_id, payload, audience_of(sub), ids))
            continue
        for message in matching:
            envelopes.append(
                Envelope(
                    sub.webhook_id,
                    activity_dm_envelope(sub, message, users),
                    audience_of(sub, message.id),
                    (message.id,),
                )
            )
    return envelopes
