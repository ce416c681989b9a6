"""Webhook registration as X does it: check the URL, the duplicates and the tier, pass a CRC.

Shared by X's registration routes (v2 and v1.1), the start-up `--webhook-url` and the control
API, so every path applies the same rules. Webhooks are per app: the tier limit counts those
registered through any flavour's route.

The order of checks (URL, duplicate, limit, then the CRC) spares a receiver the challenge
when X would refuse anyway; duplicate and limit are checked again after the CRC, because
another registration may have finished while this one waited on the network.
"""

from __future__ import annotations

from catbot.emulator.delivery import CrcOutcome
from catbot.emulator.refusals import Reason, RegistryError, require_webhook
from catbot.emulator.runtime import Runtime
from catbot.emulator.state.registry import Webhook
from catbot.emulator.subscriptions import subscribe_bot
from catbot.emulator.urls import webhook_url_problem


def _admit(runtime: Runtime, url: str, *, enforce_limits: bool) -> None:
    """The checks that need no network: URL rules, duplicate URL, tier limit."""
    problem = webhook_url_problem(url)
    if problem is not None:
        raise RegistryError(Reason.URL_VALIDATION_FAILED, problem)
    state, limit = runtime.state, runtime.config.max_webhooks
    if state.webhooks.by_url(url) is not None:
        raise RegistryError(Reason.DUPLICATE_URL, f"{url} is already registered")
    if enforce_limits and len(state.webhooks) >= limit:
        raise RegistryError(
            Reason.WEBHOOK_LIMIT,
            f"this app's tier allows {limit} webhook(s); delete one first",
        )


async def register_webhook(
    runtime: Runtime, url: str, *, env_name: str | None = None, enforce_limits: bool = True
) -> Webhook:
    """Register a webhook only after its CRC passes; RegistryError otherwise."""
    _admit(runtime, url, enforce_limits=enforce_limits)
    outcome = await runtime.deliverer.check_url(url)
    if not outcome.ok:
        raise RegistryError(Reason.CRC_VALIDATION_FAILED, outcome.error or "CRC failed", outcome)
    _admit(runtime, url, enforce_limits=enforce_limits)
    webhook = runtime.state.webhooks.add(url, env_name=env_name)
    webhook.record_crc(True, outcome.status, None)
    return webhook


async def revalidate(runtime: Runtime, webhook_id: str) -> CrcOutcome:
    """X's `PUT`: a fresh CRC whose result sets `valid` either way."""
    webhook = require_webhook(runtime.state.webhooks, webhook_id)
    return await runtime.deliverer.crc(webhook)


def delete_webhook(runtime: Runtime, webhook_id: str) -> Webhook:
    require_webhook(runtime.state.webhooks, webhook_id)
    webhook = runtime.state.remove_webhook(webhook_id)
    assert webhook is not None
    return webhook


def add_startup_webhook(runtime: Runtime, url: str) -> Webhook:
    """Register and subscribe the bot without a CRC yet: the receiver may not be up.

    The CRC is retried in the background (and once more before a delivery) until it passes.
    Limits are enforced like X's routes would; the configuration already refused counts
    that cannot fit, so a refusal here is a bug and fails loudly. In round-robin delivery
    mode the start-up webhooks are replicas behind one load balancer: not counted apart.
    """
    existing = runtime.state.webhooks.by_url(url)
    if existing is not None:
        return existing
    enforce = not runtime.config.spread_startup_webhooks
    _admit(runtime, url, enforce_limits=enforce)
    webhook = runtime.state.webhooks.add(url, env_name=runtime.config.startup_env_name)
    webhook.startup_pending = True
    subscribe_bot(runtime, webhook, enforce_limits=enforce)
    return webhook


async def register_and_subscribe_bot(runtime: Runtime, url: str) -> Webhook:
    """The control API's shortcut: register with a CRC, then subscribe the bot.

    Tier limits do not apply: the control API is the tests' and the demo's back door, not X.
    """
    webhook = await register_webhook(
        runtime, url, env_name=runtime.config.startup_env_name, enforce_limits=False
    )
    subscribe_bot(runtime, webhook, enforce_limits=False)
    return webhook
