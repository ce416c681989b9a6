"""Command-line wiring: `catbot emulator` options and the run-until-signalled loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from catbot.emulator.app import start_emulator
from catbot.emulator.config import (
    API_FLAVOURS,
    CREDENTIAL_VARIABLES,
    DEFAULT_BOT_USER_ID,
    DEFAULT_HOST,
    DEFAULT_PORT,
    ConfigError,
    EmulatorConfig,
    config_from_env,
    read_env_file,
)
from catbot.emulator.state.spreading import DELIVERY_MODES
from catbot.emulator.urls import is_loopback_host

log = logging.getLogger("catbot.emulator")

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_CONFIG_ERROR = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options. Defaults are None so the environment can fill gaps."""
    # In the order `--help` lists them.
    _where_and_who(parser)
    _budgets_and_crc(parser)
    _delivery(parser)
    _tier(parser)
    _environment_and_logs(parser)


def _where_and_who(parser: argparse.ArgumentParser) -> None:
    """Where it listens, which flavour it plays, for which webhooks and bot."""
    parser.add_argument(
        "--host",
        help=f"address to listen on (default {DEFAULT_HOST}); anything but loopback needs "
        "--allow-remote",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="allow a --host beyond loopback: anyone who reaches the port can then drive the "
        "control API, which has no authentication and signs deliveries with the consumer secret",
    )
    parser.add_argument("--port", type=int, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument(
        "--api",
        choices=API_FLAVOURS,
        help="delivery envelope: v2 and v1.1 = Account Activity, activity = X Activity API "
        "(default: CATBOT_X_API, else v2)",
    )
    parser.add_argument(
        "--webhook-url",
        dest="webhook_urls",
        action="append",
        metavar="URL",
        help="webhook registered and subscribed for the bot once its CRC passes (repeatable)",
    )
    parser.add_argument(
        "--bot-user-id",
        help="bot account id when CATBOT_X_ACCESS_TOKEN is not '<id>-...' "
        f"(default {DEFAULT_BOT_USER_ID})",
    )


def _budgets_and_crc(parser: argparse.ArgumentParser) -> None:
    """The DM budget and X's CRC checks."""
    parser.add_argument(
        "--dm-rate-limit", type=int, help="DM sends allowed per window (default 200)"
    )
    parser.add_argument(
        "--dm-rate-window", type=float, metavar="SECONDS", help="rate window (default 900)"
    )
    parser.add_argument(
        "--crc-timeout", type=float, metavar="SECONDS", help="CRC answer deadline (default 3)"
    )
    parser.add_argument(
        "--crc-interval",
        type=float,
        metavar="SECONDS",
        help="re-check every valid webhook's CRC this often; a failure invalidates it until "
        "a PUT revalidates it (default 3600)",
    )


def _delivery(parser: argparse.ArgumentParser) -> None:
    """How deliveries spread, and when X gives up on and retries them."""
    parser.add_argument(
        "--delivery-mode",
        choices=DELIVERY_MODES,
        help="all: each event to every valid subscribed webhook (X's behaviour); round_robin: "
        "each delivery to one of them in turn, like a load balancer in front of replicas "
        "(several --webhook-url then count as one webhook for the tier limits) (default all)",
    )
    parser.add_argument(
        "--duplicate-every",
        type=int,
        metavar="N",
        help="round_robin: every Nth delivery also goes to the next webhook (default 0, never)",
    )
    parser.add_argument(
        "--delivery-timeout",
        type=float,
        metavar="SECONDS",
        help="a delivery not answered within this long failed, and may be redelivered (default 10)",
    )
    parser.add_argument(
        "--redelivery-delays",
        metavar="S1,S2,...",
        help="redeliver a failed delivery (timeout, no answer, non-2xx) after each of these "
        "delays, as X does on paid tiers, e.g. 0.2,0.5,1 (default: no redelivery)",
    )


def _tier(parser: argparse.ArgumentParser) -> None:
    """The app's tier: webhooks, subscriptions, v1.1 environments."""
    parser.add_argument(
        "--max-webhooks",
        type=int,
        metavar="N",
        help="webhooks the app's tier allows, all flavours together (default 1)",
    )
    parser.add_argument(
        "--max-subscriptions",
        type=int,
        metavar="N",
        help="subscriptions the tier allows, per kind: Account Activity users, X Activity "
        "API subscriptions (default 3)",
    )
    parser.add_argument(
        "--env-name",
        dest="env_names",
        action="append",
        metavar="LABEL",
        help="a v1.1 premium environment the app has (repeatable; default: any "
        "[A-Za-z0-9_-]+ label; CATBOT_X_ENV_NAME is always allowed)",
    )


def _environment_and_logs(parser: argparse.ArgumentParser) -> None:
    """Where the credentials come from, and the log level."""
    parser.add_argument(
        "--env-file",
        type=Path,
        help="read CATBOT_X_* from this file too; the environment wins. Never implicit: "
        "./.env often holds production credentials (default: none; with no CATBOT_X_* at "
        "all, built-in demo credentials)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level (default INFO)",
    )


def _environment(env_file: Path | None) -> tuple[dict[str, str], str]:
    """The variables to read (the file's, then the environment's over them) and a
    description of where the credentials among them come from."""
    from_file: dict[str, str] = {}
    if env_file is not None:
        try:
            from_file = read_env_file(env_file)
        except OSError as exc:
            raise ConfigError(f"cannot read env file {env_file}: {exc.strerror}") from None
    names = [name for group in CREDENTIAL_VARIABLES.values() for name in group]
    in_environment = any(os.environ.get(name) for name in names)
    in_file = any(from_file.get(name) and not os.environ.get(name) for name in names)
    sources = ["the environment"] * in_environment + [f"{env_file} (--env-file)"] * in_file
    return {**from_file, **os.environ}, " and ".join(sources) or "the settings given"


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    env_file = getattr(args, "env_file", None)
    variables, source = _environment(env_file)
    if env_file is None and Path(".env").is_file():
        log.info(
            "./.env is not read (it may hold production credentials): pass --env-file .env "
            "to use it"
        )
    return config_from_env(
        variables,
        credentials_source=source,
        allow_remote=getattr(args, "allow_remote", None),
        host=args.host,
        port=args.port,
        api=args.api,
        webhook_urls=args.webhook_urls,
        bot_user_id=args.bot_user_id,
        dm_rate_limit=args.dm_rate_limit,
        dm_rate_window=args.dm_rate_window,
        crc_timeout=args.crc_timeout,
        crc_interval=getattr(args, "crc_interval", None),
        max_webhooks=getattr(args, "max_webhooks", None),
        max_subscriptions=getattr(args, "max_subscriptions", None),
        env_names=getattr(args, "env_names", None),
        delivery_mode=getattr(args, "delivery_mode", None),
        duplicate_every=getattr(args, "duplicate_every", None),
        delivery_timeout=getattr(args, "delivery_timeout", None),
        redelivery_delays=getattr(args, "redelivery_delays", None),
    )


async def _serve(config: EmulatorConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available on every platform, nor outside the main thread.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        running = await start_emulator(config)
    except OSError as exc:
        print(
            f"catbot emulator: cannot listen on {config.host}:{config.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_RUNTIME_ERROR
    try:
        print(
            f"catbot emulator listening on {running.url} "
            f"(api={config.api}, bot user {config.bot_user_id})\n"
            f"catbot emulator credentials: {config.credentials_summary()}",
            flush=True,
        )
        if not is_loopback_host(config.host.strip("[]")):
            log.warning(
                "listening on %s, beyond loopback (--allow-remote): anyone who can reach this "
                "port can drive the control API, which has no authentication, and have "
                "deliveries signed with the consumer secret",
                config.host,
            )
        if not (config.consumer_key and config.access_token and config.access_token_secret):
            log.warning(
                "CATBOT_X_CONSUMER_KEY, CATBOT_X_ACCESS_TOKEN or CATBOT_X_ACCESS_TOKEN_SECRET "
                "unset: OAuth checks accept any key or token and sign with an empty token secret"
            )
        await stop.wait()
        log.info("stopping")
    finally:
        await running.stop()
    return EXIT_OK


def run_from_args(args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM; 0 on a clean stop, 2 on bad configuration."""
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"catbot emulator: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return asyncio.run(_serve(config))
