"""`catbot <command>`: one parser for every command, `catbot run` (the daemon) and `catbot
demo` here, every other command handed to its own module."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catbot import __version__
from catbot.config import ConfigError, load_settings
from catbot.logs import configure_logging
from catbot.store import StoreError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _commands() -> list[_Command]:
    """Every `catbot <command>`, in the order `--help` lists them. Longer than a function
    should be, but a table, not logic: `--help`'s wording and order read in one place."""
    # Imported when the parser is built, not with this module: `catbot.commands` re-exports
    # `main`, and importing one command's module (a test, `ports`) must not load them all.
    from catbot.commands import admin, devmode, doctor, outbox, xchat
    from catbot.emulator import cli as emulator

    return [
        _Command(
            "run", "run the daemon (webhook, outbox workers, metrics)",
            "Serve X's webhook and answer DMs. Configured by CATBOT_* variables "
            "and a .env file; see config/catbot.env.example.",
            _add_env_file, _run,
        ),
        _Command(
            "demo", "the whole bot offline: emulator + daemon + a scripted conversation",
            "Start the X emulator and the daemon on free loopback ports, let a friend "
            "DM the bot (a message, help, stop, start) and print the conversation.",
            _configure_demo, _demo,
        ),
        _Command(
            "emulator", "the local X API emulator alone",
            "Play X on loopback: DM endpoints, signed webhook deliveries, the "
            "/_emulator/ control API. Credentials come from the CATBOT_X_* variables.",
            emulator.configure_parser, emulator.run_from_args,
        ),
        _Command(
            "dev", "dev mode: ngrok tunnel + webhook registration + the daemon",
            "Open an ngrok tunnel to a local daemon, register it as the webhook, "
            "subscribe the bot account, and remove what was made on exit (Ctrl-C).",
            devmode.configure_parser, devmode.run_from_args,
        ),
        _Command(
            "webhooks", "list, ensure, revalidate or delete the app's webhooks at X",
            "Manage the app's webhooks at X (the flavour of CATBOT_X_API).",
            admin.configure_webhooks_parser, admin.run_webhooks,
        ),
        _Command(
            "subscriptions", "list, add or remove webhook subscriptions at X",
            "Manage which accounts' events X delivers to the webhook.",
            admin.configure_subscriptions_parser, admin.run_subscriptions,
        ),
        _Command(
            "doctor", "preflight checks with a fix for each failure",
            "Check configuration, credentials, the webhook and subscription at X, "
            "and a CRC through the public URL. Exit 1 when anything fails.",
            doctor.configure_parser, doctor.run_from_args,
        ),
        _Command(
            "outbox", "list queued and dead-lettered replies, retry dead letters",
            "Inspect the outbox beside a running daemon, and queue dead-lettered "
            "replies again.",
            outbox.configure_parser, outbox.run_from_args,
        ),
        _Command(
            "xchat", "the bot's X Chat identity: keygen, register",
            "End-to-end encrypted X Chat messages (docs/xchat.md): make the bot's "
            "keys (keygen) and register their public half at X (register).",
            xchat.configure_parser, xchat.run_from_args,
        ),
    ]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catbot",
        description="A webhook daemon that answers direct messages on X with cat facts.",
    )
    parser.add_argument("--version", action="version", version=f"catbot {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _commands():
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description
        )
        command.configure(sub)
        sub.set_defaults(run_command=command.run)
    return parser


def _add_env_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file", default=".env", type=Path,
        help="read settings from this file too (default: .env, if present)",
    )


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once", action="store_true",
        help="exit after the scripted conversation: 0 if every expected reply came",
    )
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds to wait for each reply (default 15)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run_command
    try:
        return run(args)
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
