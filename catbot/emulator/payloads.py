"""Delivery envelopes: which subscription receives which DM events, and in what shape.

Account Activity (v2 and v1.1) wraps events as `{"for_user_id", "direct_message_events",
"users", "apps"}`; the X Activity API as `{"data": {"event_uuid", "filter", "event_type",
"tag", "payload"}}` with v2 user objects. Both carry the same `message_create` objects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from catbot.emulator.state import Message, Subscription, UserProfile

# Stable placeholder picture: X always sends one, and parsers may expect the field.
_DEFAULT_AVATAR = "https://abs.twimg.com/sticky/default_profile_images/default_profile_normal.png"


@dataclass(frozen=True)
class AppInfo:
    id: str
    name: str


@dataclass(frozen=True)
class Envelope:
    webhook_id: str
    payload: dict[str, Any]
    # The subscriber it is for: envelopes of one audience on several webhooks are copies.
    audience: str = ""


def encode(payload: Any) -> bytes:
    """Serialize once: the signature covers exactly these bytes."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def message_create_event(message: Message) -> dict[str, Any]:
    message_data: dict[str, Any] = {
        "text": message.text,
        "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
    }
    if message.media_ids:
        message_data["attachment"] = {
            "type": "media",
            "media": {"id": int(message.media_ids[0]), "id_str": message.media_ids[0]},
        }
    message_create: dict[str, Any] = {
        "target": {"recipient_id": message.recipient_id},
        "sender_id": message.sender_id,
    }
    if message.source_app_id is not None:
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


def account_activity_user(profile: UserProfile) -> dict[str, Any]:
    return {
        "id": profile.id,
        "created_timestamp": profile.created_timestamp,
        "name": profile.name,
        "screen_name": profile.screen_name,
        "protected": False,
        "verified": False,
        "followers_count": 0,
        "friends_count": 0,
        "statuses_count": 0,
        "profile_image_url_https": _DEFAULT_AVATAR,
    }


def activity_user(profile: UserProfile) -> dict[str, Any]:
    return {
        "data": {
            "id": profile.id,
            "username": profile.screen_name,
            "name": profile.name,
            "protected": False,
        }
    }


def account_activity_envelope(
    for_user_id: str,
    messages: Sequence[Message],
    users: Mapping[str, UserProfile],
    app: AppInfo,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "for_user_id": for_user_id,
        "direct_message_events": [message_create_event(m) for m in messages],
        "users": {uid: account_activity_user(users[uid]) for uid in _participants(messages)},
    }
    app_ids = {m.source_app_id for m in messages if m.source_app_id is not None}
    if app_ids:
        payload["apps"] = {
            app_id: {"id": app_id, "name": app.name, "url": ""} for app_id in sorted(app_ids)
        }
    return payload


def activity_envelope(
    subscription: Subscription,
    messages: Sequence[Message],
    users: Mapping[str, UserProfile],
    new_event_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> dict[str, Any]:
    return activity_data_envelope(subscription, {
        "direct_message_events": [message_create_event(m) for m in messages],
        "users": {uid: activity_user(users[uid]) for uid in _participants(messages)},
    }, new_event_uuid)


def activity_data_envelope(
    subscription: Subscription,
    payload: dict[str, Any],
    new_event_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> dict[str, Any]:
    """The X Activity API's `data` envelope around one event's payload (DMs and posts)."""
    data: dict[str, Any] = {
        "event_uuid": new_event_uuid(),
        "filter": {"user_id": subscription.user_id},
        "event_type": subscription.event_type,
    }
    if subscription.tag is not None:
        data["tag"] = subscription.tag
    data["payload"] = payload
    return {"data": data}


def _matches(subscription: Subscription, message: Message) -> bool:
    user = subscription.user_id
    if subscription.kind == "account_activity":
        # Account Activity sends a subscribed user every DM it takes part in, its own too.
        return user in (message.sender_id, message.recipient_id)
    if subscription.event_type == "dm.received":
        return message.recipient_id == user and message.sender_id != user
    if subscription.event_type == "dm.sent":
        return message.sender_id == user
    return False


def envelopes_for(
    messages: Sequence[Message],
    subscriptions: Iterable[Subscription],
    users: Mapping[str, UserProfile],
    app: AppInfo,
) -> list[Envelope]:
    """One envelope per matching subscription, holding every event of the batch it gets."""
    envelopes: list[Envelope] = []
    for sub in subscriptions:
        if sub.webhook_id is None:  # stream-only XAA subscription: no webhook to POST to
            continue
        matching = [m for m in messages if _matches(sub, m)]
        if not matching:
            continue
        if sub.kind == "account_activity":
            payload = account_activity_envelope(sub.user_id, matching, users, app)
        else:
            payload = activity_envelope(sub, matching, users)
        audience = f"{sub.kind}:{sub.event_type or '*'}:{sub.user_id}"
        envelopes.append(Envelope(sub.webhook_id, payload, audience))
    return envelopes
