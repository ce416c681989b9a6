"""The X API as the bot sees it, for every flavour (v2, X Activity API, v1.1).

- `dm`: `DMSender` sends a DM or a public reply through tweepy and sorts X's failures into
  what the outbox does next (`TransientSendError`, `RateLimited`, `PermanentSendError`,
  `AppSendError`); the X Chat client reuses the same classes and helpers.
- `management`: webhooks and subscriptions (`management_for` picks the flavour's
  `WebhookManager`), failures as `XApiError`.
- `registration`: `ensure_webhook`, the idempotent "this URL is registered, valid and
  subscribed" that `catbot webhooks ensure`, dev mode and the demo share.
- `session`: the aiohttp session that sends tweepy's requests to `CATBOT_X_API_BASE`.
"""

from __future__ import annotations

from catbot.x.dm import (
    AppSendError,
    Credentials,
    DMSender,
    PermanentSendError,
    RateLimited,
    SendError,
    SentDM,
    TransientSendError,
    classify_client_error,
    describe_http_error,
    rate_limit_reset,
    tweepy_client,
)
from catbot.x.management import (
    ActivityApi,
    Subscription,
    Webhook,
    WebhookManager,
    XApiError,
    management_for,
)
from catbot.x.registration import EnsureResult, RegistrationError, ensure_webhook

__all__ = [
    "ActivityApi",
    "AppSendError",
    "Credentials",
    "DMSender",
    "EnsureResult",
    "PermanentSendError",
    "RateLimited",
    "RegistrationError",
    "SendError",
    "SentDM",
    "Subscription",
    "TransientSendError",
    "Webhook",
    "WebhookManager",
    "XApiError",
    "classify_client_error",
    "describe_http_error",
    "ensure_webhook",
    "management_for",
    "rate_limit_reset",
    "tweepy_client",
]
