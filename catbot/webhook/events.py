"""Parsing X's delivery bodies into direct messages, mentions and counted-but-ignored events.

Two envelopes arrive at the same URL whatever flavour the bot manages:
- Account Activity (v2 and v1.1): `{"for_user_id": ..., "direct_message_events": [...], ...}`;
- X Activity API: `{"data": {"event_type": "dm.received", "filter": {"user_id": ...},
  "payload": {"direct_message_events": [...]}}}`.
Anything else that is a JSON object is acknowledged and ignored: answering an unknown kind
with an error would only make X retry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from catbot.models import InboundDM

# Account Activity arrays and X Activity API event types, mapped to bounded metric labels.
_ACCOUNT_ACTIVITY_KINDS = {
    "direct_message_events": "direct_message",
    "direct_message_indicate_typing_events": "typing",
    "direct_message_mark_read_events": "read",
    "tweet_create_events": "tweet_create",
    "favorite_events": "favorite",
    "follow_events": "follow",
    "block_events": "block",
    "mute_events": "mute",
    "tweet_delete_events": "tweet_delete",
    "user_event": "user_event",
    "replay_job_status": "replay_job_status",
}
_ACTIVITY_KINDS = {
    "dm.received": "direct_message",
    "dm.sent": "direct_message",
    "dm.read": "read",
    "dm.indicate_typing": "typing",
    "chat.received": "chat",
    "chat.sent": "chat",
    "post.mention.create": "mention",
}


class MalformedBody(ValueError):
    """The body is JSON but not an object: no envelope can be read from it."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)


class _MessageData(_Model):
    text: str = ""


class _Target(_Model):
    recipient_id: str = Field(pattern=r"^[0-9]{1,19}$")


class _MessageCreate(_Model):
    sender_id: str = Field(pattern=r"^[0-9]{1,19}$")
    target: _Target
    message_data: _MessageData = _MessageData()


class _DMEvent(_Model):
    type: str
    id: str = Field(min_length=1, max_length=64)
    created_timestamp: int = Field(ge=0, le=10**15)
    message_create: _MessageCreate


class _UserRef(_Model):
    id_str: str = Field(pattern=r"^[0-9]{1,19}$")


class _Mentioned(_Model):
    id_str: str = ""


class _TweetEntities(_Model):
    user_mentions: list[_Mentioned] = []


class _Tweet(_Model):
    """A v1.1 tweet object from `tweet_create_events`."""

    id_str: str = Field(pattern=r"^[0-9]{1,19}$")
    text: str = ""
    user: _UserRef
    timestamp_ms: int | None = Field(default=None, ge=0, le=10**15)
    entities: _TweetEntities = _TweetEntities()
    retweeted_status: dict[str, Any] | None = None


class _Post(_Model):
    """A v2 post object, the X Activity API's `post.mention.create` payload."""

    id: str = Field(pattern=r"^[0-9]{1,19}$")
    text: str = ""
    author_id: str = Field(pattern=r"^[0-9]{1,19}$")
    created_at: datetime | None = None


@dataclass
class Delivery:
    envelope: str  # "account_activity", "activity" or "unknown"
    for_user_id: str | None
    direct_messages: list[InboundDM] = field(default_factory=list)
    # Posts mentioning the bot (kind "mention"), answerable with a public reply.
    mentions: list[InboundDM] = field(default_factory=list)
    # (kind, fate) pairs for everything that is not an answerable DM, for metrics.
    ignored: list[tuple[str, str]] = field(default_factory=list)


def parse_delivery(body: Any) -> Delivery:
    """Read a decoded JSON body. Raises `MalformedBody` only when it is not an object."""
    if not isinstance(body, dict):
        raise MalformedBody("the body is not a JSON object")
    data = body.get("data")
    if isinstance(data, dict) and isinstance(data.get("event_type"), str):
        return _parse_activity(data)
    if "for_user_id" in body or any(key in body for key in _ACCOUNT_ACTIVITY_KINDS):
        return _parse_account_activity(body)
    return Delivery("unknown", None, ignored=[("unknown", "ignored")])


def _parse_account_activity(body: dict[str, Any]) -> Delivery:
    for_user_id = _user_id(body.get("for_user_id"))
    delivery = Delivery("account_activity", for_user_id)
    for key, value in body.items():
        if key == "direct_message_events":
            _parse_dm_events(value, for_user_id, delivery)
        elif key == "tweet_create_events":
            _parse_tweets(value, for_user_id, _truthy(body.get("user_has_blocked")), delivery)
        elif key in _ACCOUNT_ACTIVITY_KINDS:
            delivery.ignored.extend(
                (_ACCOUNT_ACTIVITY_KINDS[key], "ignored") for _ in _as_list(value)
            )
        elif key.endswith("_events") or key.endswith("_event"):
            delivery.ignored.extend(("unknown", "ignored") for _ in _as_list(value))
    return delivery


def _parse_activity(data: dict[str, Any]) -> Delivery:
    event_type = str(data["event_type"])
    filt = data.get("filter")
    for_user_id = _user_id(filt.get("user_id")) if isinstance(filt, dict) else None
    delivery = Delivery("activity", for_user_id)
    kind = _ACTIVITY_KINDS.get(event_type, "unknown")
    payload = data.get("payload")
    if kind == "direct_message" and isinstance(payload, dict):
        _parse_dm_events(payload.get("direct_message_events"), for_user_id, delivery)
    elif kind == "mention" and isinstance(payload, dict):
        _parse_post(payload.get("data"), for_user_id, delivery)
    else:
        delivery.ignored.append((kind, "ignored"))
    return delivery


def _parse_dm_events(value: Any, for_user_id: str | None, delivery: Delivery) -> None:
    for raw in _as_list(value):
        if isinstance(raw, dict) and raw.get("type") not in (None, "message_create"):
            delivery.ignored.append(("direct_message", "ignored"))
            continue
        try:
            event = _DMEvent.model_validate(raw)
        except ValidationError:
            delivery.ignored.append(("direct_message", "malformed"))
            continue
        message = event.message_create
        delivery.direct_messages.append(
            InboundDM(
                event_id=event.id,
                sender_id=message.sender_id,
                recipient_id=message.target.recipient_id,
                for_user_id=for_user_id or message.target.recipient_id,
                text=message.message_data.text,
                created_at=event.created_timestamp / 1000.0,
            )
        )


def _parse_tweets(
    value: Any, for_user_id: str | None, blocked: bool, delivery: Delivery
) -> None:
    for raw in _as_list(value):
        try:
            tweet = _Tweet.model_validate(raw)
        except ValidationError:
            delivery.ignored.append(("tweet_create", "malformed"))
            continue
        mentioned = {m.id_str for m in tweet.entities.user_mentions}
        if tweet.retweeted_status is not None:
            fate = "retweet"
        elif blocked:
            # X says the author blocked the bot: a reply would be unwelcome (and refused).
            fate = "blocked"
        elif for_user_id is None or (
            for_user_id not in mentioned and tweet.user.id_str != for_user_id
        ):
            fate = "not_a_mention"
        else:
            fate = ""
        if fate or for_user_id is None:
            delivery.ignored.append(("tweet_create", fate))
            continue
        created = (tweet.timestamp_ms or 0) / 1000.0
        delivery.mentions.append(_mention(tweet.id_str, tweet.user.id_str, tweet.text,
                                          created, for_user_id))


def _parse_post(value: Any, for_user_id: str | None, delivery: Delivery) -> None:
    try:
        post = _Post.model_validate(value)
    except ValidationError:
        delivery.ignored.append(("mention", "malformed"))
        return
    if for_user_id is None:
        delivery.ignored.append(("mention", "not_a_mention"))
        return
    created = post.created_at.timestamp() if post.created_at else 0.0
    delivery.mentions.append(_mention(post.id, post.author_id, post.text, created,
                                      for_user_id))


def _mention(
    tweet_id: str, author_id: str, text: str, created: float, for_user_id: str
) -> InboundDM:
    # Tweet and DM ids come from different sequences: keep their dedupe keys apart.
    return InboundDM(
        event_id="tweet:" + tweet_id,
        sender_id=author_id,
        recipient_id=for_user_id,
        for_user_id=for_user_id,
        text=text,
        created_at=created,
        kind="mention",
        tweet_id=tweet_id,
    )


def _truthy(value: Any) -> bool:
    """`user_has_blocked` arrives as a bool or as a string ("true"/"false")."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _user_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return value
    return None
