"""`catbot doctor`: a preflight checklist, each failure with the fix.

Checks, in order (a failure skips the checks that depend on it): configuration, credentials
(a signed call), the webhook's state at X, the bot's subscription, X Chat (when it is on: the
configured key is the one X lists for the bot, under CATBOT_XCHAT_KEY_VERSION), and, given
the public URL, a CRC challenge through that URL answered correctly and fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from dataclasses import asdict, dataclass
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from catbot.commands.admin import add_common_options, connect
from catbot.config import ConfigError, Settings, credentials_from, load_settings, redact_url
from catbot.signing import crc_response_token
from catbot.x.dm import SendError
from catbot.x.management import ActivityApi, Webhook, WebhookManager, XApiError
from catbot.xchat.client import XChatClient
from catbot.xchat.identity import check_registered

CRC_DEADLINE_SECONDS = 3.0


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str
    fix: str = ""
    warning: bool = False  # worth acting on, but not a failure (ok stays None)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=None,
        help="the webhook's public URL (default: CATBOT_PUBLIC_URL); enables the CRC check",
    )
    add_common_options(parser)


def run_from_args(args: argparse.Namespace) -> int:
    checks = asyncio.run(diagnose(args.env_file, args.api_base, args.url))
    if args.json:
        print(json.dumps({"ok": all(c.ok is not False for c in checks),
                          "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for check in checks:
            mark = "!" if check.warning else {True: "✓", False: "✗", None: "-"}[check.ok]
            print(f"{mark} {check.name}: {check.detail}")
            if check.fix:
                print(f"    fix: {check.fix}")
    return 1 if any(c.ok is False for c in checks) else 0


async def diagnose(env_file: Path | None, api_base: str | None, url: str | None) -> list[Check]:
    checks: list[Check] = []
    try:
        overrides = {"x_api_base": api_base} if api_base else {}
        settings = load_settings(env_file, **overrides)
        settings.require_credentials()
    except ConfigError as exc:
        checks.append(Check("configuration", False, str(exc).splitlines()[0],
                            "set the variables listed: " + "; ".join(
                                line.strip() for line in str(exc).splitlines()[1:])))
        return [*checks, *_skipped("credentials", "webhook", "subscription", "X Chat", "CRC")]
    checks.append(Check("configuration", True,
                        f"api={settings.x_api}, X at {redact_url(settings.api_base)}"))
    url = url or settings.public_url
    if url:
        url = url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + (
            settings.webhook_path)

    async with connect(settings) as (manager, _):
        credentials = await _check_credentials(manager, settings)
        checks.append(credentials)
        if not credentials.ok:
            return [*checks, *_skipped("webhook", "subscription", "X Chat"),
                    *([await check_crc(url, settings)] if url else [])]
        webhook, check = await _check_webhook(manager, url)
        checks.append(check)
        if webhook is None:
            checks.extend(_skipped("subscription"))
        else:
            checks.append(await _check_subscription(manager, webhook))
        checks.extend(await _check_xchat(settings))
    if url:
        checks.append(await check_crc(url, settings))
    else:
        checks.append(Check("CRC", None, "skipped: no public URL",
                            "pass --url https://... (or set CATBOT_PUBLIC_URL) to test it"))
    return checks


def _skipped(*names: str) -> list[Check]:
    return [Check(name, None, "skipped: an earlier check failed") for name in names]


async def _check_credentials(manager: WebhookManager, settings: Settings) -> Check:
    try:
        user_id = await manager.whoami()
    except XApiError as exc:
        return Check("credentials", False, f"X refused a signed call: {exc}",
                     "check the four CATBOT_X_* credentials; regenerate the access token "
                     "after changing the app's permissions (read, write, direct messages)")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check("credentials", False,
                     f"cannot reach X at {redact_url(settings.api_base)}: "
                     f"{exc or type(exc).__name__}",
                     "check the network, or CATBOT_X_API_BASE")
    expected = settings.bot_user_id
    if expected and expected != user_id:
        return Check("credentials", False,
                     f"the access token belongs to user {user_id}, not {expected}",
                     "use the bot account's own access token and secret")
    return Check("credentials", True, f"signed call accepted, bot account is user {user_id}")


async def _check_webhook(
    manager: WebhookManager, url: str | None
) -> tuple[Webhook | None, Check]:
    try:
        hooks = await manager.list_webhooks()
    except XApiError as exc:
        return None, Check("webhook", False, f"cannot list webhooks: {exc}",
                           "set CATBOT_X_BEARER_TOKEN, or check the app's access level")
    ensure = f"run `catbot webhooks ensure {url or 'https://your.host/webhook/twitter'}`"
    matching = [h for h in hooks if url is None or h.url == url]
    if not matching:
        where = f" for {url}" if url else ""
        others = f" (the app has: {', '.join(h.url for h in hooks)})" if hooks else ""
        return None, Check("webhook", False, f"no webhook registered{where}{others}", ensure)
    hook = matching[0]
    if not hook.valid:
        return hook, Check(
            "webhook", False, f"webhook {hook.id} ({hook.url}) is marked invalid by X",
            f"make sure the daemon answers there, then `catbot webhooks revalidate {hook.id}`",
        )
    return hook, Check("webhook", True, f"webhook {hook.id} ({hook.url}) is valid")


async def _check_subscription(manager: WebhookManager, webhook: Webhook) -> Check:
    try:
        subscribed = await manager.is_subscribed(webhook.id)
        # The X Activity API subscribes each event type apart: name the answered ones missing.
        missing = (await manager.missing_event_types(webhook.id)
                   if not subscribed and isinstance(manager, ActivityApi) else [])
    except XApiError as exc:
        return Check("subscription", False, f"cannot check: {exc}", "")
    types = f" ({', '.join(manager.event_types)})" if isinstance(manager, ActivityApi) else ""
    if not subscribed:
        what = f" for {', '.join(missing)}" if missing else ""
        return Check("subscription", False,
                     f"the bot account is not subscribed to webhook {webhook.id}{what}",
                     "run `catbot subscriptions add`")
    return Check("subscription", True,
                 f"the bot account is subscribed to webhook {webhook.id}{types}")


async def _check_xchat(settings: Settings) -> list[Check]:
    """X Chat's identity: the configured key must be the one X lists for the bot, under the
    configured version (a key change addressed to another version cannot be opened). The
    chat.received subscription is the subscription check's: it is an answered event type."""
    if settings.xchat_private_key is None and settings.xchat_key_version is None:
        return [Check("X Chat", None, "off: CATBOT_XCHAT_PRIVATE_KEY and "
                      "CATBOT_XCHAT_KEY_VERSION are not set (chat.* events are only counted)")]
    try:
        identity = settings.xchat_identity()
    except ConfigError as exc:
        # The daemon would refuse to start: the lines name the variables, never the key.
        problems = "; ".join(line.strip() for line in str(exc).splitlines()[1:])
        return [Check("X Chat", False, problems,
                      "make a key with `catbot xchat keygen`, register it with `catbot xchat "
                      "register`, and set both variables")]
    assert identity is not None
    checks: list[Check] = []
    if settings.x_api != "activity":
        checks.append(Check(
            "X Chat delivery", None,
            f"X Chat is on, but X delivers chat.received only through the X Activity API and "
            f"CATBOT_X_API is {settings.x_api}: no X Chat message will arrive",
            "set CATBOT_X_API=activity and run `catbot webhooks ensure URL`", warning=True,
        ))
    timeout = aiohttp.ClientTimeout(total=settings.send_timeout_seconds)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = XChatClient(credentials_from(settings), session, settings.x_api_base)
            records = await client.get_public_keys(identity.user_id)
    except SendError as exc:
        return [*checks, Check("X Chat", False, f"cannot read the bot's public keys at X: {exc}",
                               "check the network, CATBOT_X_API_BASE and the app's access")]
    found = check_registered(identity, records)
    if found.ok:
        fix = ""
    elif found.registered:
        fix = f"set CATBOT_XCHAT_KEY_VERSION={found.registered_version} and restart the daemon"
    else:
        fix = ("run `catbot xchat register` with this CATBOT_XCHAT_PRIVATE_KEY and set "
               "CATBOT_XCHAT_KEY_VERSION to the version it prints")
    return [*checks, Check("X Chat", found.ok, found.describe(), fix)]


async def check_crc(url: str, settings: Settings) -> Check:
    """Send a CRC challenge through the public URL, as X would, and judge the answer."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not _loopback(parts.hostname or ""):
        return Check("CRC", False, f"{url} is not https",
                     "X only calls https webhook URLs: put the daemon behind TLS")
    token = secrets.token_urlsafe(24)
    secret = settings.x_consumer_secret
    expected = crc_response_token(secret.get_secret_value() if secret else "", token)
    started = time.perf_counter()
    try:
        timeout = aiohttp.ClientTimeout(total=CRC_DEADLINE_SECONDS * 2)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
            url, params={"crc_token": token}, allow_redirects=False
        ) as response:
            elapsed = time.perf_counter() - started
            body = await response.json(content_type=None) if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Check("CRC", False, f"no usable answer from {url}: {exc or type(exc).__name__}",
                     "start the daemon (catbot run) and make sure the URL routes to its "
                     "CATBOT_PORT and CATBOT_WEBHOOK_PATH")
    if response.status != 200:
        return Check("CRC", False, f"{url} answered HTTP {response.status}",
                     "the URL must reach the daemon's webhook path without redirects")
    answer = body.get("response_token") if isinstance(body, dict) else None
    if answer != expected:
        return Check("CRC", False, "the CRC answer is wrong",
                     "the daemon behind this URL uses another CATBOT_X_CONSUMER_SECRET than "
                     "the app's consumer secret")
    if elapsed > CRC_DEADLINE_SECONDS:
        return Check("CRC", False, f"the answer took {elapsed:.1f} s",
                     "X requires an answer within 3 seconds: check the host and the tunnel")
    return Check("CRC", True, f"correct answer in {elapsed * 1000:.0f} ms")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
