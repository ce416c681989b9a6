"""`catbot xchat keygen` and `catbot xchat register`: the bot's X Chat identity.

- `keygen` makes a new identity and prints its private key blob, base64, as the one stdout
  line `CATBOT_XCHAT_PRIVATE_KEY=...` (guidance goes to stderr, so
  `catbot xchat keygen > catbot-xchat.env` captures the setting alone). It keeps no copy.
- `register` publishes the public half at X for the bot account and prints
  `CATBOT_XCHAT_KEY_VERSION=...`. X allows only a few key writes per 24 hours, so it asks X
  first (`GET /2/users/{id}/public_keys`) and writes only when this key is not listed: run it
  as often as you like.

Exit codes as the other commands: 0 done, 1 X refused or could not be reached, 2 bad
configuration. The private key is never printed by `register`, nor put in any message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from catbot.config import ConfigError, Settings, credentials_from, load_settings, redact_url
from catbot.x.dm import AppSendError, RateLimited, SendError, TransientSendError
from catbot.x.management import XApiError, management_for
from catbot.xchat.client import Registration, XChatClient
from catbot.xchat.errors import IdentityError
from catbot.xchat.identity import (
    KEY_VERSION_SETTING,
    PRIVATE_KEY_SETTING,
    BotIdentity,
    generate_identity,
    load_identity,
)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class XChatCommandError(Exception):
    """The command failed; the message says why and what to do. `exit_code` is 1 (X) or 2
    (configuration)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def configure_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "keygen", help="make a new X Chat identity; print its private key setting",
        description=f"Generate the bot's X Chat keys (chatxdk) and print the private key blob, "
        f"base64, as the only line on stdout: {PRIVATE_KEY_SETTING}=... It is a secret: put it "
        "straight into the secret store (a Kubernetes Secret, a .env file outside git). "
        "Nothing is kept. Next: `catbot xchat register`.",
    )
    register = actions.add_parser(
        "register", help="register the bot's X Chat public keys at X (idempotent)",
        description=f"Register the public half of {PRIVATE_KEY_SETTING} for the bot account "
        f"(POST /2/users/{{id}}/public_keys) and print {KEY_VERSION_SETTING}=... X allows only "
        "a few key writes per 24 hours: X is asked first and nothing is written when it "
        "already lists this key.",
    )
    register.add_argument("--env-file", type=Path, default=Path(".env"),
                          help="read settings from this file too (default: .env, if present)")
    register.add_argument("--api-base", default=None,
                          help="X API base URL (overrides CATBOT_X_API_BASE), e.g. the emulator")


def run_from_args(args: argparse.Namespace) -> int:
    try:
        if args.action == "keygen":
            return keygen()
        return register(args.env_file, args.api_base)
    except XChatCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


# --- keygen ------------------------------------------------------------------------------


def keygen() -> int:
    identity = generate_identity()
    print(identity.setting_line(), flush=True)
    print(
        f"The line above is the bot's new X Chat private key ({PRIVATE_KEY_SETTING}). Keep "
        "it secret: whoever holds it reads the bot's X Chat conversations and signs as the "
        "bot. Put it in the secret store (Kubernetes: the Secret catbot-x), never in git, a "
        "ticket or a chat; this is the only copy.\n"
        f"Public key fingerprint: {identity.registration.public_key_fingerprint}\n"
        f"Next: with {PRIVATE_KEY_SETTING} set, run `catbot xchat register` and set "
        f"{KEY_VERSION_SETTING} to the version it prints.",
        file=sys.stderr,
    )
    return EXIT_OK


# --- register ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterOutcome:
    registration: Registration
    identity: BotIdentity


def register(env_file: Path | None, api_base: str | None) -> int:
    overrides = {"x_api_base": api_base} if api_base else {}
    try:
        settings = load_settings(env_file, **overrides)
        settings.require_credentials()
    except ConfigError as exc:
        raise XChatCommandError(str(exc), EXIT_CONFIG) from None
    key = settings.xchat_private_key
    if key is None:
        raise XChatCommandError(
            f"{PRIVATE_KEY_SETTING} is not set: make a key with `catbot xchat keygen`, put the "
            "line it prints in the environment or .env (a Secret in Kubernetes), then run "
            "`catbot xchat register` again",
            EXIT_CONFIG,
        )
    outcome = asyncio.run(_register(settings, key.get_secret_value()))
    version = outcome.registration.version
    print(f"{KEY_VERSION_SETTING}={version}", flush=True)
    fingerprint = outcome.identity.fingerprint
    if outcome.registration.created:
        print(f"Registered the bot's X Chat public keys (fingerprint {fingerprint}) for user "
              f"{outcome.identity.user_id} as version {version}: one of X's few key writes "
              "per 24 hours.", file=sys.stderr)
    else:
        print(f"X already has this key (fingerprint {fingerprint}) for user "
              f"{outcome.identity.user_id} as version {version}: nothing registered, no key "
              "write spent.", file=sys.stderr)
    configured = settings.xchat_key_version
    if configured is None:
        print(f"Next: set {KEY_VERSION_SETTING}={version} beside {PRIVATE_KEY_SETTING} "
              "(Kubernetes: the ConfigMap catbot), subscribe chat.received with "
              "`catbot webhooks ensure URL` (CATBOT_X_API=activity), and restart the daemon.",
              file=sys.stderr)
    elif configured != version:
        print(f"Note: {KEY_VERSION_SETTING} is set to {configured}; change it to {version} "
              "and restart the daemon.", file=sys.stderr)
    return EXIT_OK


async def _register(settings: Settings, private_key: str) -> RegisterOutcome:
    credentials = credentials_from(settings)
    where = redact_url(settings.api_base)
    timeout = aiohttp.ClientTimeout(total=settings.send_timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        user_id = settings.bot_user_id
        if user_id is None:
            # The token has no `<id>-` prefix: ask X whose token it is, as `webhooks` does.
            try:
                user_id = await management_for(settings, credentials, session).whoami()
            except XApiError as exc:
                raise XChatCommandError(f"X refused a signed call: {exc}. Check the four "
                                        "CATBOT_X_* credentials") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise XChatCommandError(
                    f"cannot reach the X API at {where}: {exc or type(exc).__name__}"
                ) from None
        try:
            identity = load_identity(private_key, user_id=user_id, key_version=None)
        except IdentityError as exc:
            # Names the variable, never its value.
            raise XChatCommandError(str(exc), EXIT_CONFIG) from None
        client = XChatClient(credentials, session, settings.x_api_base)
        try:
            registration = await client.ensure_registered(identity)
        except RateLimited as exc:
            raise XChatCommandError(_limit_message(exc)) from None
        except AppSendError as exc:
            raise XChatCommandError(
                f"X refused the bot's credentials ({exc}): check the four CATBOT_X_* "
                "credentials and that the app may use X Chat"
            ) from None
        except TransientSendError as exc:
            raise XChatCommandError(
                f"X at {where} did not answer usably ({exc}); run the command again: it "
                "writes nothing twice"
            ) from None
        except SendError as exc:
            raise XChatCommandError(f"X refused the key registration: {exc}") from None
    return RegisterOutcome(registration, identity)


def _limit_message(exc: RateLimited) -> str:
    text = (f"X refused: too many public key registrations for the bot ({exc}). X allows only "
            "a few per 24 hours")
    if exc.reset_at is None:
        return text + "; try again tomorrow"
    when = datetime.fromtimestamp(exc.reset_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    minutes = max(0, int((exc.reset_at - time.time()) // 60))
    return text + f"; try again after {when} (in {minutes // 60} h {minutes % 60} min)"
