"""Subscription rules: who gets which events on which webhook, within the tier's limits.

Two kinds live side by side, as on X:
- Account Activity (v2 and v1.1): a user subscribed on a webhook gets every DM event the
  user takes part in, and the posts the user wrote, is named in or is replied to in.
  Unique per (webhook, user).
- X Activity API: one event type for one filtered user, optionally bound to a webhook.
  Unique per (event type, filter, webhook).
Each kind counts against `max_subscriptions` on its own (the tier limit X documents is per
product); `enforce_limits=False` is for the emulator's own control API only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from catbot.emulator.refusals import (
    Reason,
    RegistryError,
    require_activity_subscription,
    require_webhook,
)
from catbot.emulator.runtime import Runtime
from catbot.emulator.state.registry import (
    BOT_ACTIVITY_EVENT_TYPES,
    Subscription,
    SubscriptionKind,
    Webhook,
)

# DM and chat event types X's Activity API accepts, plus profile ones from its OpenAPI
# description, mentions and replies (x-api/activity/event-payloads). Only dm.received,
# dm.sent, post.mention.create and post.reply.create ever produce deliveries here.
ACTIVITY_EVENT_TYPES: Final = frozenset(
    {
        "dm.received",
        "dm.sent",
        "dm.read",
        "dm.indicate_typing",
        "chat.received",
        "chat.sent",
        "chat.conversation_join",
        "profile.update.bio",
        "profile.update.profile_picture",
        "profile.update.banner_picture",
        "post.mention.create",
        "post.reply.create",
    }
)


def _check_limit(runtime: Runtime, kind: SubscriptionKind, enforce: bool) -> None:
    limit = runtime.config.max_subscriptions
    if enforce and len(runtime.state.subscriptions.of_kind(kind)) >= limit:
        raise RegistryError(
            Reason.SUBSCRIPTION_LIMIT,
            f"this app's tier allows {limit} subscription(s); delete one first",
        )


# --- Account Activity ------------------------------------------------------------------


def subscribe_account_activity(
    runtime: Runtime, webhook_id: str, user_id: str, *, enforce_limits: bool = True
) -> Subscription:
    state = runtime.state
    require_webhook(state.webhooks, webhook_id)
    if state.subscriptions.account_activity(webhook_id, user_id) is not None:
        raise RegistryError(
            Reason.DUPLICATE_SUBSCRIPTION,
            f"user {user_id} is already subscribed to webhook {webhook_id}",
        )
    _check_limit(runtime, "account_activity", enforce_limits)
    return state.subscriptions.add(webhook_id=webhook_id, user_id=user_id, kind="account_activity")


def is_subscribed(runtime: Runtime, webhook_id: str, user_id: str) -> bool:
    require_webhook(runtime.state.webhooks, webhook_id)
    return runtime.state.subscriptions.account_activity(webhook_id, user_id) is not None


def unsubscribe_account_activity(runtime: Runtime, webhook_id: str, user_id: str) -> None:
    state = runtime.state
    require_webhook(state.webhooks, webhook_id)
    sub = state.subscriptions.account_activity(webhook_id, user_id)
    if sub is None:
        raise RegistryError(
            Reason.SUBSCRIPTION_NOT_FOUND,
            f"user {user_id} is not subscribed to webhook {webhook_id}",
        )
    state.subscriptions.remove(sub.id)


# --- X Activity API --------------------------------------------------------------------


def _check_activity_duplicate(
    runtime: Runtime,
    event_type: str,
    user_id: str,
    webhook_id: str | None,
    ignore: str | None = None,
) -> None:
    sub = runtime.state.subscriptions.activity(event_type, user_id, webhook_id, ignore=ignore)
    if sub is not None:
        raise RegistryError(
            Reason.DUPLICATE_SUBSCRIPTION,
            f"a {event_type} subscription for user {user_id} on this webhook exists "
            f"already ({sub.id})",
        )


def create_activity_subscription(
    runtime: Runtime,
    *,
    event_type: str,
    user_id: str,
    webhook_id: str | None,
    tag: str | None,
    enforce_limits: bool = True,
) -> Subscription:
    if webhook_id is not None:
        require_webhook(runtime.state.webhooks, webhook_id)
    _check_activity_duplicate(runtime, event_type, user_id, webhook_id)
    _check_limit(runtime, "activity", enforce_limits)
    return runtime.state.subscriptions.add(
        webhook_id=webhook_id, user_id=user_id, kind="activity", event_type=event_type, tag=tag
    )


UPDATABLE_FIELDS: Final = frozenset({"tag", "webhook_id"})


def update_activity_subscription(
    runtime: Runtime, subscription_id: str, changes: Mapping[str, str | None]
) -> Subscription:
    """Change `tag` and/or `webhook_id` in place (X allows nothing else: delete + create)."""
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
    state = runtime.state
    sub = require_activity_subscription(state.subscriptions, subscription_id)
    new_webhook = changes.get("webhook_id", sub.webhook_id)
    if new_webhook is not None:
        require_webhook(state.webhooks, new_webhook)
    assert sub.event_type is not None  # activity subscriptions always have one
    _check_activity_duplicate(runtime, sub.event_type, sub.user_id, new_webhook, ignore=sub.id)
    sub.webhook_id = new_webhook
    if "tag" in changes:
        sub.tag = changes["tag"]
    sub.updated_at = time.time()
    return sub


def delete_activity_subscription(runtime: Runtime, subscription_id: str) -> None:
    sub = require_activity_subscription(runtime.state.subscriptions, subscription_id)
    runtime.state.subscriptions.remove(sub.id)


# --- the bot ---------------------------------------------------------------------------


def subscribe_bot(runtime: Runtime, webhook: Webhook, *, enforce_limits: bool) -> None:
    """Subscribe the bot to DMs, mentions and replies on this webhook in the configured
    flavour; idempotent.

    Start-up `--webhook-url` and the control API's registration use it, so that "registered
    and subscribed" means the same records X's own routes would have created.
    """
    state, config = runtime.state, runtime.config
    bot = state.bot_user_id
    if config.api == "activity":
        # What the bot answers: DMs, mentions and replies to its posts.
        for event_type in BOT_ACTIVITY_EVENT_TYPES:
            if state.subscriptions.activity(event_type, bot, webhook.id) is not None:
                continue
            create_activity_subscription(
                runtime,
                event_type=event_type,
                user_id=bot,
                webhook_id=webhook.id,
                tag=config.activity_tag,
                enforce_limits=enforce_limits,
            )
    elif state.subscriptions.account_activity(webhook.id, bot) is None:
        subscribe_account_activity(runtime, webhook.id, bot, enforce_limits=enforce_limits)
