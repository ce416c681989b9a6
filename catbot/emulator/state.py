"""Everything the emulator remembers: DMs, users, webhooks, subscriptions, faults, budgets.

Plain in-memory objects mutated from the event loop only, so no locking is needed. The
webhook and subscription registry mirrors X's model (webhooks with CRC validity, per-user
subscriptions that point at a webhook) so X's own registration routes can sit on top of it.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from catbot.emulator.faults import FAULT_DEFAULT_RESET_IN, Faults

__all__ = ["FAULT_DEFAULT_RESET_IN", "Faults"]

Direction = Literal["in", "out"]
# "dm": a legacy DM; "xchat": an end-to-end encrypted X Chat message, its text as the
# recipient's app shows it once decrypted.
Channel = Literal["dm", "xchat"]
# Account Activity subscriptions get every event of the user; X Activity API subscriptions
# name one event type each (e.g. "dm.received").
SubscriptionKind = Literal["account_activity", "activity"]
# The X Activity API event types the bot is subscribed to on each start-up webhook: the ones
# it answers, as `catbot webhooks ensure` subscribes them. Three, the pay-per-use tier's
# subscription limit; `dm.sent` (the bot's own DMs coming back) can be added through
# `/2/activity/subscriptions` on a tier that allows more.
BOT_ACTIVITY_EVENT_TYPES: tuple[str, ...] = (
    "dm.received",
    "post.mention.create",
    "post.reply.create",
)

# Told about changes as they happen (the chat page's live updates): a topic ("message",
# "post", "delivery", "webhooks", "reset") and its JSON data. Called in the event loop;
# must not block.
Listener = Callable[[str, dict[str, Any]], None]

# Twitter's snowflake epoch, so generated ids look and sort like X's.
_SNOWFLAKE_EPOCH_MS = 1288834974657
_REMEMBERED_BODIES = 10_000
_DELIVERY_LOG_SIZE = 1_000
_REQUEST_LOG_SIZE = 5_000

# "all": every event to every valid subscribed webhook (X's behaviour). "round_robin": each
# delivery to one of them in turn, as a load balancer in front of replicas would.
DeliveryMode = Literal["all", "round_robin"]
DELIVERY_MODES: tuple[str, ...] = get_args(DeliveryMode)


def now_ms() -> int:
    return int(time.time() * 1000)


class IdGenerator:
    """Snowflake-like numeric ids, strictly increasing even within one millisecond."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        candidate = (now_ms() - _SNOWFLAKE_EPOCH_MS) << 22
        self._last = max(self._last + 1, candidate)
        return str(self._last)


@dataclass(frozen=True)
class Message:
    id: str
    sender_id: str
    recipient_id: str
    text: str
    created_timestamp: str  # epoch milliseconds as a string, as X sends it
    direction: Direction
    source_app_id: str | None = None
    media_ids: tuple[str, ...] = ()
    channel: Channel = "dm"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "sender_id": self.sender_id,
            "recipient_id": self.recipient_id,
            "text": self.text,
            "created_timestamp": self.created_timestamp,
            "direction": self.direction,
            "channel": self.channel,
        }
        if self.media_ids:
            data["media_ids"] = list(self.media_ids)
        return data


@dataclass(frozen=True)
class Mention:
    """One `@screen_name` in a post's text that names a known user (code point offsets)."""

    user_id: str
    screen_name: str
    start: int
    end: int


@dataclass(frozen=True)
class Post:
    """A public post (tweet): a user's mention of the bot, or the bot's own post or reply."""

    id: str
    author_id: str
    text: str
    created_ms: int
    conversation_id: str
    in_reply_to_tweet_id: str | None = None
    in_reply_to_user_id: str | None = None
    mentions: tuple[Mention, ...] = ()
    # A retweet: the id of the original post (which `retweeted_text` holds the text of).
    retweeted_status_id: str | None = None
    retweeted_text: str | None = None
    # Account Activity's `user_has_blocked` and `is_blocked_by` exactly as given (bool or
    # string); None: absent from the envelope.
    user_has_blocked: bool | str | None = None
    is_blocked_by: bool | str | None = None

    @property
    def mentioned_ids(self) -> tuple[str, ...]:
        return tuple(m.user_id for m in self.mentions)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author_id": self.author_id,
            "text": self.text,
            "in_reply_to_tweet_id": self.in_reply_to_tweet_id,
            "created_at": iso_timestamp(self.created_ms / 1000),
            "conversation_id": self.conversation_id,
            "retweeted_status_id": self.retweeted_status_id,
        }


@dataclass
class UserProfile:
    id: str
    name: str
    screen_name: str
    created_timestamp: str


@dataclass
class Webhook:
    id: str
    url: str
    created_at: float
    valid: bool = False
    last_crc_status: int | None = None
    last_crc_error: str | None = None
    last_crc_at: float | None = None
    # The v1.1 premium environment it was registered in (None: registered through v2).
    env_name: str | None = None
    # Registered at start-up before its receiver could answer: delivery may still try a
    # CRC. Once one passes it is an ordinary webhook, which only `PUT` revalidates.
    startup_pending: bool = False

    @property
    def invalid_reason(self) -> str:
        return self.last_crc_error or "not validated yet"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "valid": self.valid,
            "last_crc_status": self.last_crc_status,
            "last_crc_error": self.last_crc_error,
            "last_crc_at": None if self.last_crc_at is None else iso_timestamp(self.last_crc_at),
            "created_at": iso_timestamp(self.created_at),
            "env_name": self.env_name,
        }


@dataclass
class Subscription:
    """One Account Activity user subscription, or one X Activity API subscription.

    Mutable because XAA's `PUT` changes `tag` and `webhook_id` in place, keeping the id.
    """

    id: str
    webhook_id: str | None  # XAA subscriptions may have none (stream-only)
    user_id: str
    kind: SubscriptionKind
    event_type: str | None = None  # activity kind only
    tag: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = iso_timestamp(self.created_at)
        data["updated_at"] = iso_timestamp(self.updated_at)
        return data


@dataclass(frozen=True)
class SignedBody:
    """One delivery exactly as it went out, kept so that redelivery repeats the same bytes."""

    webhook_id: str
    body: bytes
    signature: str | None
    # Which subscriber this delivery is for (kind, event type, user): round-robin spreading
    # sends one delivery per audience, where "all" sends one per subscribed webhook.
    audience: str = ""
    # The events (DM ids, post ids) this body carries: what `redeliver` looks them up by.
    event_ids: tuple[str, ...] = ()


@dataclass
class Stats:
    dm_requests: int = 0
    dm_sent: int = 0
    dm_failed: int = 0
    dm_rate_limited: int = 0
    auth_failures: int = 0
    events_received: int = 0
    # Public posts: POST /2/tweets calls, posts created, refused ones; mentions played.
    post_requests: int = 0
    posts_created: int = 0
    post_failed: int = 0
    mentions_received: int = 0
    # X Chat: messages friends wrote to the bot (`/_emulator/xchat`); the bot's sends
    # (POST /2/chat/conversations/{id}/messages): calls, accepted, refused (429s apart),
    # answered 429, injected drops and permanent refusals.
    xchat_received: int = 0
    xchat_requests: int = 0
    xchat_sent: int = 0
    xchat_failed: int = 0
    xchat_rate_limited: int = 0
    xchat_dropped: int = 0
    xchat_forbidden: int = 0
    deliveries: int = 0
    delivery_failures: int = 0
    crc_checks: int = 0
    crc_failures: int = 0
    # Injected and emulated trouble.
    dm_dropped: int = 0
    dm_forbidden: int = 0
    latency_injected: int = 0
    delivery_timeouts: int = 0
    redeliveries: int = 0
    redeliveries_exhausted: int = 0
    duplicates_sent: int = 0
    deliveries_held: int = 0
    reorder_flushes: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class DeliverySpreading:
    """How events spread over several webhooks (see `DeliveryMode`), and where the turn is."""

    mode: DeliveryMode = "all"
    duplicate_every: int = 0
    # Round-robin bookkeeping: the webhook that got the last delivery, deliveries planned.
    last_webhook_id: str | None = None
    planned: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "duplicate_every": self.duplicate_every,
            "last_webhook_id": self.last_webhook_id,
            "planned": self.planned,
        }


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds

    def headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset": str(self.reset),
        }


class RateWindow:
    """A fixed window starting at the first request, like X's 15-minute buckets."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._start: float | None = None
        self._used = 0

    def _roll(self, now: float) -> float:
        if self._start is None or now >= self._start + self.window:
            self._start = now
            self._used = 0
        return self._start

    def _verdict(self, allowed: bool, start: float) -> RateVerdict:
        # Rounded up: a client that waits until the header's second must find a fresh window.
        reset = math.ceil(start + self.window)
        return RateVerdict(allowed, self.limit, max(self.limit - self._used, 0), reset)

    def peek(self, now: float) -> RateVerdict:
        """The budget as headers would show it, without opening a window."""
        if self._start is None or now >= self._start + self.window:
            return RateVerdict(True, self.limit, self.limit, math.ceil(now + self.window))
        return self._verdict(self._used < self.limit, self._start)

    def consume(self, now: float) -> RateVerdict:
        start = self._roll(now)
        if self._used >= self.limit:
            return self._verdict(False, start)
        self._used += 1
        return self._verdict(True, start)


def iso_timestamp(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class EmulatorState:
    bot_user_id: str
    dm_rate_limit: int
    dm_rate_window: float
    ids: IdGenerator = field(default_factory=IdGenerator)
    messages: list[Message] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    users: dict[str, UserProfile] = field(default_factory=dict)
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    rate_windows: dict[str, RateWindow] = field(default_factory=dict)
    sent_bodies: OrderedDict[str, tuple[SignedBody, ...]] = field(default_factory=OrderedDict)
    delivery_log: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=_DELIVERY_LOG_SIZE)
    )
    # X API requests (not the control API): arrival, answer time, status, outcome.
    request_log: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=_REQUEST_LOG_SIZE)
    )
    spreading: DeliverySpreading = field(default_factory=DeliverySpreading)
    # The configured DM budget, restored when an injected one is cleared.
    configured_dm_budget: tuple[int, float] | None = None
    listeners: list[Listener] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.configured_dm_budget is None:
            self.configured_dm_budget = (self.dm_rate_limit, self.dm_rate_window)

    def notify(self, topic: str, data: dict[str, Any]) -> None:
        """Tell every listener about a change; a failing listener is dropped."""
        for listener in list(self.listeners):
            try:
                listener(topic, data)
            except Exception:
                self.listeners.remove(listener)

    # --- users and messages ------------------------------------------------------------

    def ensure_user(self, user_id: str, name: str | None = None) -> UserProfile:
        profile = self.users.get(user_id)
        if profile is None:
            profile = UserProfile(
                id=user_id,
                name=name or f"User {user_id}",
                screen_name=f"user{user_id}",
                created_timestamp=str(now_ms()),
            )
            self.users[user_id] = profile
        elif name:
            profile.name = name
        return profile

    def record_message(
        self,
        *,
        sender_id: str,
        recipient_id: str,
        text: str,
        direction: Direction,
        created_timestamp: str | None = None,
        source_app_id: str | None = None,
        media_ids: tuple[str, ...] = (),
        channel: Channel = "dm",
        message_id: str | None = None,
    ) -> Message:
        """`message_id`: an id the sender chose (X Chat clients make their own); else a new
        snowflake."""
        message = Message(
            id=message_id or self.ids.next(),
            sender_id=sender_id,
            recipient_id=recipient_id,
            text=text,
            created_timestamp=created_timestamp or str(now_ms()),
            direction=direction,
            source_app_id=source_app_id,
            media_ids=media_ids,
            channel=channel,
        )
        self.messages.append(message)
        self.notify("message", message.to_json())
        return message

    def conversation(self, user_id: str | None) -> list[Message]:
        if user_id is None:
            return list(self.messages)
        return [m for m in self.messages if user_id in (m.sender_id, m.recipient_id)]

    def user_by_screen_name(self, screen_name: str) -> UserProfile | None:
        wanted = screen_name.lower()
        return next((u for u in self.users.values() if u.screen_name.lower() == wanted), None)

    def add_post(self, post: Post) -> Post:
        self.posts.append(post)
        self.notify("post", post.to_json())
        return post

    def post_by_id(self, post_id: str) -> Post | None:
        return next((p for p in reversed(self.posts) if p.id == post_id), None)

    def thread(self, user_id: str | None) -> list[Post]:
        """Posts oldest first; with a user: theirs, those naming them, and replies to them."""
        if user_id is None:
            return list(self.posts)
        return [
            p
            for p in self.posts
            if user_id in (p.author_id, p.in_reply_to_user_id) or user_id in p.mentioned_ids
        ]

    # --- webhooks and subscriptions ----------------------------------------------------

    def add_webhook(self, url: str, env_name: str | None = None) -> Webhook:
        webhook = Webhook(id=self.ids.next(), url=url, created_at=time.time(), env_name=env_name)
        self.webhooks[webhook.id] = webhook
        self.notify("webhooks", {})
        return webhook

    def webhook_by_url(self, url: str) -> Webhook | None:
        return next((w for w in self.webhooks.values() if w.url == url), None)

    def remove_webhook(self, webhook_id: str) -> Webhook | None:
        """Forget a webhook and every subscription bound to it, as X does."""
        webhook = self.webhooks.pop(webhook_id, None)
        if webhook is not None:
            for sub in self.subscriptions_for_webhook(webhook_id):
                del self.subscriptions[sub.id]
            self.notify("webhooks", {})
        return webhook

    def add_subscription(
        self,
        *,
        webhook_id: str | None,
        user_id: str,
        kind: SubscriptionKind,
        event_type: str | None = None,
        tag: str | None = None,
    ) -> Subscription:
        """Store without checks: the registry modules apply X's rules first."""
        sub = Subscription(self.ids.next(), webhook_id, user_id, kind, event_type, tag)
        self.subscriptions[sub.id] = sub
        self.notify("webhooks", {})
        return sub

    def subscriptions_for_webhook(self, webhook_id: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.webhook_id == webhook_id]

    def subscriptions_of_kind(self, kind: SubscriptionKind) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.kind == kind]

    def account_activity_subscription(self, webhook_id: str, user_id: str) -> Subscription | None:
        return next(
            (
                s
                for s in self.subscriptions_of_kind("account_activity")
                if (s.webhook_id, s.user_id) == (webhook_id, user_id)
            ),
            None,
        )

    # --- rate limits -------------------------------------------------------------------

    def set_dm_budget(self, limit: int, window: float) -> bool:
        """Change the DM budget; fresh windows start when it changed. True if it did."""
        if (limit, window) == (self.dm_rate_limit, self.dm_rate_window):
            return False
        self.dm_rate_limit, self.dm_rate_window = limit, window
        for key in [k for k in self.rate_windows if not k.startswith("app:")]:
            del self.rate_windows[key]
        return True

    def apply_faults(self, faults: Faults) -> None:
        """Install faults, with the DM budget they name (or the configured one)."""
        self.faults = faults
        assert self.configured_dm_budget is not None
        limit, window = self.configured_dm_budget
        self.set_dm_budget(faults.dm_budget_limit or limit, faults.dm_budget_window or window)

    def dm_window(self, user_id: str) -> RateWindow:
        window = self.rate_windows.get(user_id)
        if window is None:
            window = RateWindow(self.dm_rate_limit, self.dm_rate_window)
            self.rate_windows[user_id] = window
        return window

    # --- deliveries --------------------------------------------------------------------

    def log_delivery(self, entry: dict[str, Any]) -> None:
        self.delivery_log.append(entry)
        self.notify("delivery", entry)

    def remember_bodies(self, bodies: Iterable[SignedBody]) -> None:
        """Keep each body under every event it carries, so a redelivery repeats only those."""
        carried: dict[str, list[SignedBody]] = {}
        for body in bodies:
            for event_id in body.event_ids:
                carried.setdefault(event_id, []).append(body)
        for event_id, held in carried.items():
            self.sent_bodies[event_id] = tuple(held)
        while len(self.sent_bodies) > _REMEMBERED_BODIES:
            self.sent_bodies.popitem(last=False)

    def reset(self) -> None:
        """Forget traffic, faults, counters and budgets; keep webhooks, subscriptions and the
        delivery mode (a setting, like the command-line flag it mirrors)."""
        self.messages.clear()
        self.posts.clear()
        self.apply_faults(Faults())
        self.stats = Stats()
        self.rate_windows.clear()
        self.sent_bodies.clear()
        self.delivery_log.clear()
        self.request_log.clear()
        self.spreading.last_webhook_id = None
        self.spreading.planned = 0
        self.notify("reset", {})
