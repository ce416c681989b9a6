"""`catbot webhooks ...` and `catbot subscriptions ...`: managing the webhook at X by hand.

Human-readable output by default, `--json` for scripts. Exit codes: 0 success, 1 X refused
or could not be reached, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from catbot.config import Settings, credentials_from, load_settings, redact_url
from catbot.x.management import Webhook, WebhookManager, XApiError, management_for
from catbot.x.registration import RegistrationError, ensure_webhook

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-file", type=Path, default=Path(".env"),
                        help="read settings from this file too (default: .env, if present)")
    parser.add_argument("--api-base", default=None,
                        help="X API base URL (overrides CATBOT_X_API_BASE), e.g. the emulator")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def configure_webhooks_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_common_options(actions.add_parser("list", help="the app's webhooks and their state"))
    ensure = actions.add_parser(
        "ensure", help="make URL the valid webhook, subscribed (idempotent)",
        description="Reuse a valid webhook with URL, revalidate an invalid one, replace a "
        "stale dev tunnel's, then subscribe the bot account.",
    )
    ensure.add_argument("url")
    ensure.add_argument("--replace", action="store_true",
                        help="delete other webhooks when the tier limit is reached")
    add_common_options(ensure)
    revalidate = actions.add_parser("revalidate", help="ask X to run a CRC against it now")
    revalidate.add_argument("webhook_id")
    add_common_options(revalidate)
    delete = actions.add_parser("delete", help="delete a webhook (and its subscriptions)")
    delete.add_argument("webhook_id")
    add_common_options(delete)


def configure_subscriptions_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("list", "who is subscribed to the webhook"),
                       ("add", "subscribe the bot account's DMs"),
                       ("remove", "unsubscribe an account (default: the bot)")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("--webhook-id", default=None,
                         help="which webhook (default: the app's only one)")
        if name == "remove":
            sub.add_argument("--user-id", default=None, help="default: the bot account")
        add_common_options(sub)


@asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[tuple[WebhookManager, Settings]]:
    credentials = credentials_from(settings)
    bot_id = settings.bot_user_id
    timeout = aiohttp.ClientTimeout(total=settings.send_timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        manager = management_for(settings, credentials, session)
        if not bot_id and settings.x_api == "activity":
            # The X Activity API filters by user id; ask X whose token this is.
            manager = management_for(settings, credentials, session, await manager.whoami())
        yield manager, settings


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {"x_api_base": args.api_base} if getattr(args, "api_base", None) else {}
    settings = load_settings(args.env_file, **overrides)
    settings.require_credentials()
    return settings


def run_webhooks(args: argparse.Namespace) -> int:
    return _run(args, _webhooks)


def run_subscriptions(args: argparse.Namespace) -> int:
    return _run(args, _subscriptions)


def _run(
    args: argparse.Namespace,
    action: Callable[[argparse.Namespace, WebhookManager, Settings], Awaitable[Any]],
) -> int:
    settings = settings_from_args(args)

    async def main() -> Any:
        async with connect(settings) as (manager, s):
            return await action(args, manager, s)

    try:
        result = asyncio.run(main())
    except (XApiError, RegistrationError) as exc:
        _fail(args, str(exc))
        return EXIT_FAILED
    except (aiohttp.ClientError, TimeoutError) as exc:
        _fail(args, f"cannot reach the X API at {redact_url(settings.api_base)}: "
              f"{exc or type(exc).__name__}")
        return EXIT_FAILED
    except ValueError as exc:
        # aiohttp refuses a request it cannot build, e.g. credentials in the base URL
        # beside X's Authorization header: say so, never as a traceback with the URL in it.
        _fail(args, f"cannot call the X API at {redact_url(settings.api_base)}: {exc}")
        return EXIT_FAILED
    except UsageError as exc:
        _fail(args, str(exc))
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result, indent=2))
    return EXIT_OK


class UsageError(Exception):
    pass


def _fail(args: argparse.Namespace, message: str) -> None:
    if args.json:
        print(json.dumps({"ok": False, "error": message}))
    print(f"error: {message}", file=sys.stderr)


async def _webhooks(args: argparse.Namespace, manager: WebhookManager, _: Settings) -> Any:
    if args.action == "list":
        hooks = await manager.list_webhooks()
        if not args.json:
            _print_webhooks(hooks)
        return {"webhooks": [asdict(h) for h in hooks]}
    if args.action == "ensure":
        result = await ensure_webhook(manager, args.url, replace=args.replace)
        if not args.json:
            for line in result.actions:
                print(f"- {line}")
            print(f"webhook {result.webhook.id} is valid and the bot account is subscribed")
        return {"webhook": asdict(result.webhook), "created": result.created,
                "replaced": [asdict(w) for w in result.replaced], "actions": result.actions}
    if args.action == "revalidate":
        valid = await manager.revalidate(args.webhook_id)
        if not args.json:
            print(f"webhook {args.webhook_id} is {'valid' if valid else 'INVALID'}")
        if not valid:
            raise XApiError(0, "CrcValidationFailed",
                            f"webhook {args.webhook_id} failed the CRC check")
        return {"webhook_id": args.webhook_id, "valid": valid}
    await manager.delete_webhook(args.webhook_id)
    if not args.json:
        print(f"deleted webhook {args.webhook_id}")
    return {"webhook_id": args.webhook_id, "deleted": True}


async def _subscriptions(
    args: argparse.Namespace, manager: WebhookManager, settings: Settings
) -> Any:
    webhook_id = args.webhook_id or await _only_webhook(manager)
    if args.action == "list":
        subs = await manager.list_subscriptions(webhook_id)
        if not args.json:
            print(f"webhook {webhook_id}: {len(subs)} subscription(s)")
            for sub in subs:
                extra = f" {sub.event_type} (id {sub.subscription_id})" if sub.event_type else ""
                print(f"- user {sub.user_id}{extra}")
        return {"webhook_id": webhook_id, "subscriptions": [asdict(s) for s in subs]}
    if args.action == "add":
        await manager.subscribe(webhook_id)
        if not args.json:
            print(f"the bot account is subscribed to webhook {webhook_id}")
        return {"webhook_id": webhook_id, "subscribed": True}
    user_id = args.user_id or settings.bot_user_id or await manager.whoami()
    await manager.unsubscribe(webhook_id, user_id)
    if not args.json:
        print(f"user {user_id} unsubscribed from webhook {webhook_id}")
    return {"webhook_id": webhook_id, "user_id": user_id, "subscribed": False}


async def _only_webhook(manager: WebhookManager) -> str:
    hooks = await manager.list_webhooks()
    if len(hooks) == 1:
        return hooks[0].id
    if not hooks:
        raise UsageError("the app has no webhook: run `catbot webhooks ensure URL` first")
    ids = ", ".join(h.id for h in hooks)
    raise UsageError(f"the app has several webhooks ({ids}): choose one with --webhook-id")


def _print_webhooks(hooks: list[Webhook]) -> None:
    if not hooks:
        print("no webhooks registered")
        return
    print(f"{'ID':<22} {'VALID':<6} {'CREATED':<26} URL")
    for hook in hooks:
        valid = "yes" if hook.valid else "NO"
        print(f"{hook.id:<22} {valid:<6} {hook.created_at or '-':<26} {hook.url}")
