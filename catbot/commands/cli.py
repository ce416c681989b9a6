"""`catbot <command>`: the daemon, the offline demo and the X emulator."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from catbot import __version__
from catbot.config import ConfigError, load_settings
from catbot.logs import configure_logging
from catbot.store import StoreError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catbot",
        description="A webhook daemon that answers direct messages on X with cat facts.",
    )
    parser.add_argument("--version", action="version", version=f"catbot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the daemon (webhook, outbox workers, metrics)",
        description="Serve X's webhook and answer DMs. Configured by CATBOT_* variables "
        "and a .env file; see config/catbot.env.example.",
    )
    _add_env_file(run)

    demo = commands.add_parser(
        "demo", help="the whole bot offline: emulator + daemon + a scripted conversation",
        description="Start the X emulator and the daemon on free loopback ports, let a friend "
        "DM the bot (a message, help, stop, start) and print the conversation.",
    )
    demo.add_argument(
        "--once", action="store_true",
        help="exit after the scripted conversation: 0 if every expected reply came",
    )
    demo.add_argument("--timeout", type=float, default=15.0,
                      help="seconds to wait for each reply (default 15)")

    from catbot.emulator.cli import configure_parser

    emulator = commands.add_parser(
        "emulator", help="the local X API emulator alone",
        description="Play X on loopback: DM endpoints, signed webhook deliveries, the "
        "/_emulator/ control API. Credentials come from the CATBOT_X_* variables.",
    )
    configure_parser(emulator)

    from catbot.commands import admin, devmode, doctor

    dev = commands.add_parser(
        "dev", help="dev mode: ngrok tunnel + webhook registration + the daemon",
        description="Open an ngrok tunnel to a local daemon, register it as the webhook, "
        "subscribe the bot account, and remove what was made on exit (Ctrl-C).",
    )
    devmode.configure_parser(dev)
    webhooks = commands.add_parser(
        "webhooks", help="list, ensure, revalidate or delete the app's webhooks at X",
        description="Manage the app's webhooks at X (the flavour of CATBOT_X_API).",
    )
    admin.configure_webhooks_parser(webhooks)
    subscriptions = commands.add_parser(
        "subscriptions", help="list, add or remove webhook subscriptions at X",
        description="Manage which accounts' events X delivers to the webhook.",
    )
    admin.configure_subscriptions_parser(subscriptions)
    doctor_parser = commands.add_parser(
        "doctor", help="preflight checks with a fix for each failure",
        description="Check configuration, credentials, the webhook and subscription at X, "
        "and a CRC through the public URL. Exit 1 when anything fails.",
    )
    doctor.configure_parser(doctor_parser)

    from catbot.commands import outbox as outbox_admin

    outbox = commands.add_parser(
        "outbox", help="list queued and dead-lettered replies, retry dead letters",
        description="Inspect the outbox beside a running daemon, and queue dead-lettered "
        "replies again.",
    )
    outbox_admin.configure_parser(outbox)

    from catbot.commands import xchat as xchat_admin

    xchat = commands.add_parser(
        "xchat", help="the bot's X Chat identity: keygen, register",
        description="End-to-end encrypted X Chat messages (docs/xchat.md): make the bot's "
        "keys (keygen) and register their public half at X (register).",
    )
    xchat_admin.configure_parser(xchat)
    return parser


def _add_env_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file", default=".env", type=Path,
        help="read settings from this file too (default: .env, if present)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = {
        "run": _run,
        "demo": _demo,
        "emulator": _emulator,
        "dev": _dev,
        "webhooks": _webhooks,
        "subscriptions": _subscriptions,
        "doctor": _doctor,
        "outbox": _outbox,
        "xchat": _xchat,
    }[args.command]
    try:
        return command(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"catbot cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file)
    settings.require_credentials()
    configure_logging(settings.log_format, settings.log_level)

    from catbot.app import Daemon, ListenError

    daemon = Daemon(settings)
    try:
        return run_until_signalled(daemon.run, loop_factory=_fast_loop_factory())
    except ListenError as exc:
        print(f"catbot cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the daemon when it is installed (`pip install uvloop`): about a third more
    webhook requests per second (docs/performance.md). CATBOT_EVENT_LOOP=asyncio opts out."""
    if os.environ.get("CATBOT_EVENT_LOOP", "auto").strip().lower() == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _demo(args: argparse.Namespace) -> int:
    from catbot.commands.demo import run_demo

    return run_until_signalled(
        lambda stop: run_demo(stop, once=args.once, reply_seconds=args.timeout)
    )


def _emulator(args: argparse.Namespace) -> int:
    from catbot.emulator.cli import run_from_args

    return run_from_args(args)


def _dev(args: argparse.Namespace) -> int:
    from catbot.commands.devmode import run_from_args

    return run_from_args(args)


def _webhooks(args: argparse.Namespace) -> int:
    from catbot.commands.admin import run_webhooks

    return run_webhooks(args)


def _subscriptions(args: argparse.Namespace) -> int:
    from catbot.commands.admin import run_subscriptions

    return run_subscriptions(args)


def _doctor(args: argparse.Namespace) -> int:
    from catbot.commands.doctor import run_from_args

    return run_from_args(args)


def _outbox(args: argparse.Namespace) -> int:
    from catbot.commands.outbox import run_from_args

    return run_from_args(args)


def _xchat(args: argparse.Namespace) -> int:
    from catbot.commands.xchat import run_from_args

    return run_from_args(args)


def run_until_signalled(
    body: Callable[[asyncio.Event], Coroutine[Any, Any, Any]],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Run `body(stop)` with SIGTERM/SIGINT setting `stop`; its int result is the exit code."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        result = await body(stop)
        return result if isinstance(result, int) else EXIT_OK

    with asyncio.Runner(loop_factory=loop_factory) as loop_runner:
        return loop_runner.run(runner())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
