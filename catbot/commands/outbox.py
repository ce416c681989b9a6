"""`catbot outbox`: see what is queued or dead-lettered, and queue dead letters again.

It opens the store beside a running daemon (SQLite in WAL mode allows that; it takes no
ownership lock and never claims a job), so an operator can look while the bot works. A
retried dead letter is an ordinary job again: the next free worker answers it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catbot.config import load_settings
from catbot.store import Store, StoreError, create_store

EXIT_OK, EXIT_FAILED = 0, 1


def configure_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("list", "jobs waiting or in progress, oldest first"),
                       ("dead", "dead-lettered replies, newest first, with the reason")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("--limit", type=int, default=100)
        _common(sub)
    retry = actions.add_parser("retry", help="queue dead-lettered replies again")
    retry.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    retry.add_argument("--all", action="store_true", help="every dead letter")
    _common(retry)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-file", type=Path, default=Path(".env"),
                        help="read settings from this file too (default: .env, if present)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def run_from_args(args: argparse.Namespace) -> int:
    if args.action == "retry" and not args.event_ids and not args.all:
        print("error: name the EVENT_IDs to retry, or pass --all", file=sys.stderr)
        return 2
    settings = load_settings(args.env_file)
    try:
        result = asyncio.run(_run(args, create_store(settings.store_url, owner=False)))
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result, indent=2))
    return EXIT_OK


async def _run(args: argparse.Namespace, store: Store) -> dict[str, Any]:
    await store.open()
    try:
        if args.action == "list":
            jobs = await store.pending(args.limit)
            if not args.json:
                print(f"{len(jobs)} job(s) queued")
                for job in jobs:
                    state = "in progress" if job.claimed else f"due {_when(job.available_at)}"
                    error = f"  last error: {job.last_error}" if job.last_error else ""
                    print(f"- event {job.event_id} for user {job.user_id}: {state}, "
                          f"{job.attempts} attempt(s){error}")
            return {"pending": [asdict(job) for job in jobs]}
        if args.action == "dead":
            dead = await store.dead_letters(args.limit)
            if not args.json:
                print(f"{len(dead)} dead letter(s)")
                for letter in dead:
                    print(f"- event {letter.event_id} for user {letter.user_id} at "
                          f"{_when(letter.failed_at)}: {letter.reason}")
            return {"dead_letters": [asdict(letter) for letter in dead]}
        ids = None if args.all else list(args.event_ids)
        count = await store.retry_dead_letters(ids, time.time())
        if not args.json:
            print(f"{count} dead letter(s) queued again")
        return {"requeued": count}
    finally:
        await store.close()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
