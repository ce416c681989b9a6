"""X's named reasons for refusing a webhook or subscription change, independent of flavour.

The registry raises `RegistryError`; each flavour's routes render it in their own shape
(v2 problem with the reason in the message, v1.1 error code). Keeping the reason separate
from the rendering is what lets every registration path share one set of rules.
"""

from __future__ import annotations

from enum import StrEnum

from catbot.emulator.delivery import CrcOutcome
from catbot.emulator.state.registry import (
    Subscription,
    SubscriptionBook,
    Webhook,
    WebhookRegistry,
)


class Reason(StrEnum):
    CRC_VALIDATION_FAILED = "CrcValidationFailed"
    URL_VALIDATION_FAILED = "UrlValidationFailed"
    DUPLICATE_URL = "DuplicateUrlFailed"
    WEBHOOK_LIMIT = "WebhookLimitExceeded"
    WEBHOOK_ID_INVALID = "WebhookIdInvalid"
    DUPLICATE_SUBSCRIPTION = "DuplicateSubscriptionFailed"
    SUBSCRIPTION_LIMIT = "SubscriptionLimitExceeded"
    SUBSCRIPTION_NOT_FOUND = "SubscriptionNotFound"


class RegistryError(Exception):
    """A refusal: X's reason name, a human explanation, and the CRC result if one ran."""

    def __init__(self, reason: Reason, text: str, crc: CrcOutcome | None = None) -> None:
        super().__init__(f"{reason.value}: {text}")
        self.reason = reason
        self.crc = crc


def require_webhook(webhooks: WebhookRegistry, webhook_id: str) -> Webhook:
    webhook = webhooks.get(webhook_id)
    if webhook is None:
        raise RegistryError(
            Reason.WEBHOOK_ID_INVALID, f"webhook {webhook_id!r} does not exist for this app"
        )
    return webhook


def require_activity_subscription(
    subscriptions: SubscriptionBook, subscription_id: str
) -> Subscription:
    sub = subscriptions.get(subscription_id)
    if sub is None or sub.kind != "activity":
        raise RegistryError(
            Reason.SUBSCRIPTION_NOT_FOUND, f"subscription {subscription_id!r} does not exist"
        )
    return sub
