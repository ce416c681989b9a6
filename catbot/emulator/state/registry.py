"""The app's webhooks and the subscriptions that point at them, as X models them.

Webhooks carry their CRC validity; subscriptions are either Account Activity ones (every
event of one user) or X Activity API ones (one event type of one user). These rooms only
keep records: X's rules and tier limits are applied first, by `catbot.emulator.webhooks` and
`catbot.emulator.subscriptions`, so that X's routes, the start-up `--webhook-url` and the
control API all share them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from catbot.emulator.state.common import ChangeFeed, IdGenerator, iso_timestamp

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

    def record_crc(self, ok: bool, status: int | None, error: str | None) -> None:
        """A CRC's result decides validity either way."""
        self.valid = ok
        if ok:
            self.startup_pending = False
        self.last_crc_status = status
        self.last_crc_error = error
        self.last_crc_at = time.time()

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

    def is_activity(self, event_type: str, user_id: str, webhook_id: str | None) -> bool:
        """The X Activity API subscription for this event type, user and webhook?"""
        return self.kind == "activity" and (self.event_type, self.user_id, self.webhook_id) == (
            event_type,
            user_id,
            webhook_id,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = iso_timestamp(self.created_at)
        data["updated_at"] = iso_timestamp(self.updated_at)
        return data


class WebhookRegistry:
    """The app's webhooks, in registration order (the order round-robin delivery turns in)."""

    def __init__(self, ids: IdGenerator, feed: ChangeFeed) -> None:
        self._ids = ids
        self._feed = feed
        self._hooks: dict[str, Webhook] = {}

    def add(self, url: str, env_name: str | None = None) -> Webhook:
        webhook = Webhook(id=self._ids.next(), url=url, created_at=time.time(), env_name=env_name)
        self._hooks[webhook.id] = webhook
        self._feed.notify("webhooks", {})
        return webhook

    def remove(self, webhook_id: str) -> Webhook | None:
        """Forget the webhook alone: `EmulatorState.remove_webhook` drops its subscriptions."""
        webhook = self._hooks.pop(webhook_id, None)
        if webhook is not None:
            self._feed.notify("webhooks", {})
        return webhook

    def crc_checked(
        self, webhook: Webhook, ok: bool, status: int | None, error: str | None
    ) -> None:
        webhook.record_crc(ok, status, error)
        self._feed.notify("webhooks", {})

    def get(self, webhook_id: str) -> Webhook | None:
        return self._hooks.get(webhook_id)

    def by_url(self, url: str) -> Webhook | None:
        return next((w for w in self._hooks.values() if w.url == url), None)

    def in_env(self, env_name: str) -> list[Webhook]:
        """The v1.1 premium environment's webhooks (premium allows one)."""
        return [w for w in self._hooks.values() if w.env_name == env_name]

    def ids(self) -> list[str]:
        return list(self._hooks)

    def all(self) -> list[Webhook]:
        return list(self._hooks.values())

    def __contains__(self, webhook_id: object) -> bool:
        return webhook_id in self._hooks

    def __len__(self) -> int:
        return len(self._hooks)


class SubscriptionBook:
    """Every subscription of both kinds, in creation order (the order deliveries go out in)."""

    def __init__(self, ids: IdGenerator, feed: ChangeFeed) -> None:
        self._ids = ids
        self._feed = feed
        self._subs: dict[str, Subscription] = {}

    def add(
        self,
        *,
        webhook_id: str | None,
        user_id: str,
        kind: SubscriptionKind,
        event_type: str | None = None,
        tag: str | None = None,
    ) -> Subscription:
        """Store without checks: the registry modules apply X's rules first."""
        sub = Subscription(self._ids.next(), webhook_id, user_id, kind, event_type, tag)
        self._subs[sub.id] = sub
        self._feed.notify("webhooks", {})
        return sub

    def remove(self, subscription_id: str) -> None:
        del self._subs[subscription_id]

    def drop_webhook(self, webhook_id: str) -> None:
        """Forget every subscription bound to a webhook that is gone, as X does."""
        for sub in self.for_webhook(webhook_id):
            del self._subs[sub.id]

    def get(self, subscription_id: str) -> Subscription | None:
        return self._subs.get(subscription_id)

    def all(self) -> list[Subscription]:
        return list(self._subs.values())

    def for_webhook(self, webhook_id: str) -> list[Subscription]:
        return [s for s in self._subs.values() if s.webhook_id == webhook_id]

    def of_kind(self, kind: SubscriptionKind) -> list[Subscription]:
        return [s for s in self._subs.values() if s.kind == kind]

    def account_activity(self, webhook_id: str, user_id: str) -> Subscription | None:
        return next(
            (
                s
                for s in self.of_kind("account_activity")
                if (s.webhook_id, s.user_id) == (webhook_id, user_id)
            ),
            None,
        )

    def activity(
        self, event_type: str, user_id: str, webhook_id: str | None, *, ignore: str | None = None
    ) -> Subscription | None:
        """The X Activity API subscription for this event type, user and webhook, if any
        (other than `ignore`)."""
        return next(
            (
                s
                for s in self._subs.values()
                if s.id != ignore and s.is_activity(event_type, user_id, webhook_id)
            ),
            None,
        )

    def delivering(self, event_type: str, user_id: str) -> list[Subscription]:
        """X Activity API subscriptions to this event type of this user that have a webhook
        to deliver to (the others are stream-only)."""
        return [
            s
            for s in self._subs.values()
            if s.kind == "activity"
            and s.webhook_id is not None
            and (s.event_type, s.user_id) == (event_type, user_id)
        ]
