"""Idempotent "ensure": make X deliver the bot's DMs to one URL, whatever state X is in.

- a valid webhook with that URL is reused; an invalid one is revalidated (a CRC now);
- when the tier's webhook limit is taken by a stale dev tunnel (a URL this machine's dev mode
  registered before, or an ngrok host), that webhook is replaced;
- when it is taken by any other URL, nothing is touched unless `replace=True`;
- then the bot account is subscribed, unless it already is (in the X Activity API, to each
  event type it answers: `dm.received`, `chat.received` with X Chat on, `post.*` with
  mention replies on).
Every step is reported in `EnsureResult.actions`, so the CLI and dev mode can say what they did.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from catbot.x.management import ActivityApi, Webhook, WebhookManager, XApiError

# Hosts that ngrok hands out for temporary tunnels: a webhook there outlives its tunnel.
_TUNNEL_DOMAINS = (".ngrok.io", ".ngrok-free.app", ".ngrok.app", ".ngrok-free.dev", ".ngrok.dev")

# v2 names the failure; v1.1 says it in the text of its code 214.
LIMIT_REASONS = ("WebhookLimitExceeded", "Too many resources")


class RegistrationError(Exception):
    """Ensuring failed; the message says what happened and what to do about it."""


@dataclass
class EnsureResult:
    webhook: Webhook
    created: bool = False
    replaced: list[Webhook] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


def _is_tunnel_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host.endswith(_TUNNEL_DOMAINS)


def crc_failure_hint(url: str) -> str:
    return (
        f"X could not validate {url} with a CRC challenge. Check that the daemon is running "
        "and reachable at that URL, that CATBOT_WEBHOOK_PATH matches its path, that "
        "CATBOT_X_CONSUMER_SECRET is this app's consumer secret (the CRC is signed with it), "
        "and that the answer comes within 3 seconds."
    )


async def ensure_webhook(
    manager: WebhookManager,
    url: str,
    *,
    replace: bool = False,
    stale_urls: Collection[str] = (),
) -> EnsureResult:
    webhooks = await manager.list_webhooks()
    result = await _ensure_registered(manager, url, webhooks, replace, stale_urls)
    if isinstance(manager, ActivityApi):
        # One subscription per answered event type: say which were added (chat.received
        # when X Chat was just turned on, post.* for mentions).
        missing = await manager.missing_event_types(result.webhook.id)
        if missing:
            await manager.subscribe(result.webhook.id)
            result.actions.append(f"subscribed the bot account to {', '.join(missing)}")
        else:
            result.actions.append("the bot account was already subscribed to "
                                  + ", ".join(manager.event_types))
    elif await manager.is_subscribed(result.webhook.id):
        result.actions.append("the bot account was already subscribed")
    else:
        await manager.subscribe(result.webhook.id)
        result.actions.append("subscribed the bot account")
    return result


async def _ensure_registered(
    manager: WebhookManager,
    url: str,
    webhooks: list[Webhook],
    replace: bool,
    stale_urls: Collection[str],
) -> EnsureResult:
    for webhook in webhooks:
        if webhook.url != url:
            continue
        if webhook.valid:
            return EnsureResult(webhook, actions=[f"reused valid webhook {webhook.id}"])
        if not await _revalidate(manager, webhook.id):
            raise RegistrationError(
                f"webhook {webhook.id} for {url} is invalid and failed to revalidate. "
                + crc_failure_hint(url)
            )
        revalidated = Webhook(webhook.id, webhook.url, True, webhook.created_at)
        return EnsureResult(revalidated, actions=[f"revalidated webhook {webhook.id}"])

    try:
        return _created(await manager.create_webhook(url))
    except XApiError as exc:
        if not exc.means(*LIMIT_REASONS):
            raise _explain(exc, url) from exc

    stale = [w for w in webhooks if w.url in stale_urls or _is_tunnel_url(w.url)]
    doomed = stale or (webhooks if replace else [])
    if not doomed:
        taken = ", ".join(f"{w.id} ({w.url})" for w in webhooks) or "unknown webhooks"
        raise RegistrationError(
            f"the app's webhook limit is reached by {taken}. catbot will not remove a "
            "webhook it did not make: delete it with `catbot webhooks delete ID`, or run "
            "again with --replace."
        )
    for webhook in doomed:
        await manager.delete_webhook(webhook.id)
    try:
        result = _created(await manager.create_webhook(url))
    except XApiError as exc:
        raise _explain(exc, url) from exc
    result.replaced = doomed
    result.actions[:0] = [f"deleted webhook {w.id} ({w.url})" for w in doomed]
    return result


def _created(webhook: Webhook) -> EnsureResult:
    return EnsureResult(webhook, created=True,
                        actions=[f"registered webhook {webhook.id} for {webhook.url}"])


async def _revalidate(manager: WebhookManager, webhook_id: str) -> bool:
    try:
        return await manager.revalidate(webhook_id)
    except XApiError as exc:
        if exc.means("Crc", "CRC", "code 214"):
            return False
        raise


def _explain(exc: XApiError, url: str) -> RegistrationError:
    if exc.means("CrcValidationFailed", "CRC", "latency", "code 214"):
        return RegistrationError(f"{exc}. {crc_failure_hint(url)}")
    if exc.means("UrlValidationFailed"):
        return RegistrationError(
            f"{exc}. X wants a public https URL (at most 200 characters) for the webhook."
        )
    if exc.means("DuplicateUrlFailed"):
        return RegistrationError(f"{exc}. Another webhook of this app already has this URL.")
    return RegistrationError(str(exc))
