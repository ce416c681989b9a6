"""Webhook registration as X does it: check the URL, pass a CRC, then subscribe the bot.

Shared by the start-up `--webhook-url`, the control API and (next) X's own registration
routes, so every path applies the same rules.
"""

from __future__ import annotations

import time

from catbot.emulator.runtime import Runtime
from catbot.emulator.state import Webhook
from catbot.emulator.urls import webhook_url_problem


class RegistrationRefused(Exception):
    """X's failure name (e.g. `CrcValidationFailed`) and the human reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


def subscribe_bot(runtime: Runtime, webhook: Webhook) -> None:
    """Subscribe the bot account to DMs on this webhook, in the configured envelope."""
    state, config = runtime.state, runtime.config
    if config.api == "activity":
        # dm.sent too, so the bot's own replies come back as they do on X.
        for event_type in ("dm.received", "dm.sent"):
            state.subscribe(
                webhook_id=webhook.id,
                user_id=state.bot_user_id,
                kind="activity",
                event_type=event_type,
                tag=config.activity_tag,
            )
    else:
        state.subscribe(webhook_id=webhook.id, user_id=state.bot_user_id, kind="account_activity")


def add_startup_webhook(runtime: Runtime, url: str) -> Webhook:
    """Register without a CRC yet: the receiver may not be up; validation retries later."""
    webhook = runtime.state.webhook_by_url(url) or runtime.state.add_webhook(url)
    subscribe_bot(runtime, webhook)
    return webhook


async def register_checked(runtime: Runtime, url: str) -> Webhook:
    """Register a webhook only after its CRC passes; RegistrationRefused otherwise."""
    problem = webhook_url_problem(url)
    if problem is not None:
        raise RegistrationRefused("UrlValidationFailed", problem)
    if runtime.state.webhook_by_url(url) is not None:
        raise RegistrationRefused("DuplicateUrlFailed", f"{url} is already registered")
    outcome = await runtime.deliverer.check_url(url)
    if not outcome.ok:
        raise RegistrationRefused("CrcValidationFailed", outcome.error or "CRC failed")
    # Checked again: another registration of the same URL may have finished meanwhile.
    if runtime.state.webhook_by_url(url) is not None:
        raise RegistrationRefused("DuplicateUrlFailed", f"{url} is already registered")
    webhook = runtime.state.add_webhook(url)
    webhook.valid = True
    webhook.last_crc_status = outcome.status
    webhook.last_crc_at = time.time()
    subscribe_bot(runtime, webhook)
    return webhook
