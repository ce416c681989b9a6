"""Parsing X's delivery bodies into direct messages, posts to answer and ignored events.

Two envelopes arrive at the same URL whatever flavour the bot manages:
- Account Activity (v2 and v1.1): `{"for_user_id": ..., "direct_message_events": [...], ...}`
  (docs.x.com/x-api/account-activity/introduction);
- X Activity API: `{"data": {"event_uuid", "event_type": "dm.received", "filter": {"user_id"},
  "payload": {...}, "includes": {...}}}` (docs.x.com/x-api/activity/event-payloads).
  With X Chat on, `chat.received` (same page, "Chat events") becomes a DM of kind "xchat"
  carrying the delivery as it came: ciphertext, read only by the outbox worker.
Anything else that is a JSON object is acknowledged and ignored: answering an unknown kind
with an error would only make X retry it. Every payload example X documents for these events
is in tests/fixtures/x/ with its expected outcome.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from catbot.models import InboundDM
from catbot.xchat.errors import XChatError
from catbot.xchat.wire import conversation_participants, parse_chat_received

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
# The X Activity API's event types (x-api/activity/introduction and event-payloads).
_ACTIVITY_KINDS = {
    "dm.received": "direct_message",
    "dm.sent": "direct_message",
    "dm.read": "read",
    "dm.indicate_typing": "typing",
    "chat.received": "chat",
    "chat.sent": "chat",
    "chat.conversation_join": "chat",
    # A reply to one of the bot's posts is a post addressed to the bot, as a mention is:
    # both are answered in public, counted under one label, deduplicated by post id (X
    # sends both types for a reply that also names the bot).
    "post.mention.create": "mention",
    "post.reply.create": "mention",
    # A quote is the quoter's comment to their own followers, not a question to the bot;
    # a quote that names the bot also arrives as post.mention.create and is answered there.
    "post.quote.create": "quote",
    "post.repost.create": "repost",
    "post.create": "post",
    "post.delete": "post_delete",
    "like.create": "like",
    "follow.follow": "follow",
    "follow.unfollow": "follow",
    "mute.mute": "mute",
    "mute.unmute": "mute",
    "block.block": "block",
    "block.unblock": "block",
    "spaces.start": "spaces",
    "spaces.end": "spaces",
    "news.new": "news",
    "oauth.revoke": "oauth_revoke",
}
# profile.update.bio, profile.update.handle, ...: one label for the whole family.
_PROFILE_PREFIX = "profile.update."

# X's ids are decimal strings of a 64-bit integer (docs.x.com/resources/fundamentals/x-ids);
# anything else is not from X and must not reach the store as a dedupe key.
_ID_PATTERN = r"^[0-9]{1,19}$"

# An X Chat delivery's own id (a UUID on x-api/activity/event-payloads) or its envelope's
# event_uuid (a signed decimal there, hex-and-hyphens on xchat/real-time-events): a dedupe key
# only when it has such a plain form.
_CHAT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# The envelope fields an X Chat job keeps: what the worker needs to read it, nothing more.
_CHAT_ENVELOPE = ("event_type", "event_uuid", "payload")

# v1.1 objects' `created_at`: "Wed Oct 10 20:19:24 +0000 2018" (the Account Activity
# long-post example). strptime's %a/%b read English names while LC_TIME stays "C", which
# Python leaves alone unless a program calls setlocale.
_V1_TIME_FORMAT = "%a %b %d %H:%M:%S %z %Y"


class MalformedBody(ValueError):
    """The body is JSON but not an object: no envelope can be read from it."""


def _epoch_seconds(value: Any) -> float:
    """X's time stamps as epoch seconds: v1.1's "Wed Oct 10 20:19:24 +0000 2018" or ISO 8601
    ("2026-07-24T21:23:23.000Z", v2 and the X Activity API). Anything else is refused (a
    ValueError becomes pydantic's validation error), a time without a zone too: its instant
    is unknown."""
    if not isinstance(value, str):
        raise ValueError("X sends times as text")
    try:
        moment = datetime.strptime(value, _V1_TIME_FORMAT)
    except ValueError:
        moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("a time without a zone")
    return moment.timestamp()


XTime = Annotated[float, BeforeValidator(_epoch_seconds), Field(ge=0, le=10**12)]
XId = Annotated[str, Field(pattern=_ID_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)


class _MessageData(_Model):
    text: str = ""


class _Target(_Model):
    recipient_id: XId


class _MessageCreate(_Model):
    sender_id: XId
    target: _Target
    message_data: _MessageData = _MessageData()


class _DMEvent(_Model):
    type: str
    id: XId
    created_timestamp: int = Field(ge=0, le=10**15)
    message_create: _MessageCreate


class _UserRef(_Model):
    id_str: XId


class _Mentioned(_Model):
    id_str: str = ""


class _TweetEntities(_Model):
    user_mentions: list[_Mentioned] = []


class _ExtendedTweet(_Model):
    """A long post's whole text and its entities, past the 140 characters of `text`
    (x-api/account-activity/introduction, "Support for Longform Posts")."""

    full_text: str = ""
    entities: _TweetEntities = _TweetEntities()


class _Tweet(_Model):
    """A v1.1 tweet object from `tweet_create_events`."""

    id_str: XId
    text: str = ""
    user: _UserRef
    timestamp_ms: int | None = Field(default=None, ge=0, le=10**15)
    # Read only without timestamp_ms: X's long-post example carries created_at alone.
    created_at: XTime | None = None
    entities: _TweetEntities = _TweetEntities()
    extended_tweet: _ExtendedTweet | None = None
    retweeted_status: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_a_time(self) -> _Tweet:
        if self.timestamp_ms is None and self.created_at is None:
            raise ValueError("neither timestamp_ms nor created_at")
        return self

    @property
    def created(self) -> float:
        if self.timestamp_ms is not None:
            return self.timestamp_ms / 1000.0
        assert self.created_at is not None  # _has_a_time
        return self.created_at

    @property
    def full_text(self) -> str:
        if self.extended_tweet is not None and self.extended_tweet.full_text:
            return self.extended_tweet.full_text
        return self.text

    @property
    def mentioned(self) -> set[str]:
        ids = {m.id_str for m in self.entities.user_mentions}
        if self.extended_tweet is not None:
            ids.update(m.id_str for m in self.extended_tweet.entities.user_mentions)
        return ids


class _NoteTweet(_Model):
    text: str = ""


class _ReferencedTweet(_Model):
    type: str = ""


class _Post(_Model):
    """A v2 post: the `payload` itself of the X Activity API's post.* events (`includes`,
    the expanded users and posts, sits beside `payload` in `data` and is not needed)."""

    id: XId
    text: str = ""
    author_id: XId
    # Required: without it the age check could not run (every documented post has one).
    created_at: XTime
    # v2's long posts keep their whole text here (the Post object's `note_tweet` field;
    # the X Activity API pages show no long-post example).
    note_tweet: _NoteTweet | None = None
    referenced_tweets: list[_ReferencedTweet] = []

    @property
    def full_text(self) -> str:
        if self.note_tweet is not None and self.note_tweet.text:
            return self.note_tweet.text
        return self.text


@dataclass
class Delivery:
    envelope: str  # "account_activity", "activity" or "unknown"
    for_user_id: str | None
    direct_messages: list[InboundDM] = field(default_factory=list)
    # Posts addressed to the bot (mentions, replies to its posts; kind "mention"),
    # answerable with a public reply.
    mentions: list[InboundDM] = field(default_factory=list)
    # (kind, fate) pairs for everything that is not an answerable DM, for metrics.
    ignored: list[tuple[str, str]] = field(default_factory=list)


def parse_delivery(body: Any, *, xchat: bool = False) -> Delivery:
    """Read a decoded JSON body. Raises `MalformedBody` only when it is not an object.
    `xchat`: X Chat is on, so `chat.received` is answerable (else only counted)."""
    if not isinstance(body, dict):
        raise MalformedBody("the body is not a JSON object")
    data = body.get("data")
    if isinstance(data, dict) and isinstance(data.get("event_type"), str):
        return _parse_activity(data, xchat)
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
            # Both name a mention by an author the bot has blocked (the data-object table of
            # x-api/account-activity/introduction names is_blocked_by; older pages and the
            # @mentions example show user_has_blocked).
            blocked = _truthy(body.get("user_has_blocked")) or _truthy(body.get("is_blocked_by"))
            _parse_tweets(value, for_user_id, blocked, delivery)
        elif key in _ACCOUNT_ACTIVITY_KINDS:
            delivery.ignored.extend(
                (_ACCOUNT_ACTIVITY_KINDS[key], "ignored") for _ in _as_list(value)
            )
        elif key.endswith("_events") or key.endswith("_event"):
            delivery.ignored.extend(("unknown", "ignored") for _ in _as_list(value))
    return delivery


def _parse_activity(data: dict[str, Any], xchat: bool = False) -> Delivery:
    # `event_uuid` is X's id of the delivery, not of the event (a decimal 64-bit value that
    # may be negative): dedupe uses the DM's or the post's own id, so it is not read.
    event_type = str(data["event_type"])
    filt = data.get("filter")
    for_user_id = _user_id(filt.get("user_id")) if isinstance(filt, dict) else None
    delivery = Delivery("activity", for_user_id)
    kind = _ACTIVITY_KINDS.get(event_type) or (
        "profile" if event_type.startswith(_PROFILE_PREFIX) else "unknown")
    payload = data.get("payload")
    if kind == "direct_message" and isinstance(payload, dict):
        _parse_dm_events(payload.get("direct_message_events"), for_user_id, delivery)
    elif kind == "mention":
        _parse_post(payload, for_user_id, delivery)
    elif xchat and event_type == "chat.received":
        _parse_chat(data, for_user_id, delivery)
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
        if tweet.retweeted_status is not None:
            fate = "retweet"
        elif blocked:
            # X says the bot blocked the author: a reply would be unwelcome.
            fate = "blocked"
        elif for_user_id is None or (
            for_user_id not in tweet.mentioned and tweet.user.id_str != for_user_id
        ):
            fate = "not_a_mention"
        else:
            fate = ""
        if fate or for_user_id is None:
            delivery.ignored.append(("tweet_create", fate))
            continue
        delivery.mentions.append(_mention(tweet.id_str, tweet.user.id_str, tweet.full_text,
                                          tweet.created, for_user_id))


def _parse_post(value: Any, for_user_id: str | None, delivery: Delivery) -> None:
    try:
        post = _Post.model_validate(value)
    except ValidationError:
        delivery.ignored.append(("mention", "malformed"))
        return
    if any(ref.type == "retweeted" for ref in post.referenced_tweets):
        # A repost repeats someone else's words: nobody asked the bot anything.
        delivery.ignored.append(("mention", "retweet"))
        return
    if for_user_id is None:
        delivery.ignored.append(("mention", "not_a_mention"))
        return
    delivery.mentions.append(_mention(post.id, post.author_id, post.full_text,
                                      post.created_at, for_user_id))


def _parse_chat(data: dict[str, Any], for_user_id: str | None, delivery: Delivery) -> None:
    """A `chat.received` delivery as an X Chat job: checked for shape only (ids, base64),
    stored as it came. Nothing is decrypted here: the webhook never holds plaintext."""
    try:
        chat = parse_chat_received({"data": data})
        participants = conversation_participants(chat.conversation_id)
    except XChatError:
        delivery.ignored.append(("chat", "malformed"))
        return
    dedupe_id = chat.dedupe_id
    if dedupe_id is None or not _CHAT_ID.match(dedupe_id):
        delivery.ignored.append(("chat", "malformed"))
        return
    if for_user_id is None or (
        not chat.conversation_id.startswith("g") and for_user_id not in participants
    ):
        delivery.ignored.append(("chat", "not_for_us"))
        return
    # X's documented example carries created_at_msec; the shorter live variant
    # (xchat/real-time-events) does not: such a message is as old as its arrival.
    created = (chat.created_at_msec / 1000.0 if chat.created_at_msec is not None
               else time.time())
    delivery.direct_messages.append(
        InboundDM(
            # DM, post and X Chat ids come from different sequences: dedupe keys kept apart.
            event_id="xchat:" + dedupe_id,
            sender_id=chat.sender_id,
            recipient_id=for_user_id,
            for_user_id=for_user_id,
            text="",
            created_at=created,
            kind="xchat",
            xchat={"data": {key: data[key] for key in _CHAT_ENVELOPE if key in data}},
        )
    )


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
