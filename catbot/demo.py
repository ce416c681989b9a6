"""`catbot demo`: the whole loop offline, in one process, in a minute.

The X emulator and the daemon start on free loopback ports (SQLite in a temporary folder);
a friend DMs the bot through the emulator's control API, and the conversation is printed
as the emulator recorded it. The checks are strict, so `catbot demo --once` doubles as a
smoke test: it exits non-zero when an expected reply is missing or wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from catbot.app import Daemon
from catbot.brain import HELP_TEXT, START_TEXT, STOP_TEXT
from catbot.config import Settings
from catbot.emulator.app import build_app
from catbot.emulator.chat import CHAT_PATH
from catbot.emulator.config import config_from_env
from catbot.facts import load_corpus
from catbot.logs import configure_logging
from catbot.ports import free_port

FRIEND_ID = "2244994945"
FRIEND_NAME = "Ada"
BOT_USER_ID = "1000"
SUFFIX = " Nya~"
# Throwaway credentials shared by the emulator and the daemon: nothing here is real.
DEMO_CREDENTIALS = {
    "CATBOT_X_CONSUMER_KEY": "demo-consumer-key",
    "CATBOT_X_CONSUMER_SECRET": "demo-consumer-secret",
    "CATBOT_X_ACCESS_TOKEN": f"{BOT_USER_ID}-demo-access-token",
    "CATBOT_X_ACCESS_TOKEN_SECRET": "demo-access-token-secret",
}


@dataclass(frozen=True)
class Step:
    text: str
    # Checks the bot's reply; None means the bot must stay silent.
    expect: Callable[[str], bool] | None
    describe: str


def _is_fact(reply: str) -> bool:
    facts = {fact.text for fact in load_corpus()}
    return reply.endswith(SUFFIX) and reply.removesuffix(SUFFIX) in facts


SCRIPT = (
    Step("hi catbot! got any cat facts?", _is_fact, "a cat fact"),
    Step("help", lambda r: r == HELP_TEXT + SUFFIX, "the help text"),
    Step("stop", lambda r: r == STOP_TEXT + SUFFIX, "the opt-out confirmation"),
    Step("are you still there?", None, "silence (opted out)"),
    Step("start", lambda r: r == START_TEXT + SUFFIX, "the welcome back"),
    Step("send me cat facts", _is_fact, "another cat fact"),
)


@dataclass(frozen=True)
class Ports:
    emulator: int
    webhook: int
    metrics: int


@asynccontextmanager
async def demo_world(workdir: Path) -> AsyncIterator[Ports]:
    """Emulator and daemon, wired to each other, running until the block exits."""
    ports = Ports(free_port(), free_port(), free_port())
    webhook_url = f"http://127.0.0.1:{ports.webhook}/webhook/twitter"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        x_consumer_key=SecretStr(DEMO_CREDENTIALS["CATBOT_X_CONSUMER_KEY"]),
        x_consumer_secret=SecretStr(DEMO_CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]),
        x_access_token=SecretStr(DEMO_CREDENTIALS["CATBOT_X_ACCESS_TOKEN"]),
        x_access_token_secret=SecretStr(DEMO_CREDENTIALS["CATBOT_X_ACCESS_TOKEN_SECRET"]),
        x_consumer_secret_previous=None,
        x_api="v2",
        x_api_base=f"http://127.0.0.1:{ports.emulator}",
        host="127.0.0.1",
        port=ports.webhook,
        webhook_path="/webhook/twitter",
        metrics_host="127.0.0.1",
        metrics_port=ports.metrics,
        store_url=f"sqlite:///{workdir / 'catbot.db'}",
        cooldown_seconds=0,
        reply_to_mentions=True,  # so "Post publicly" on the chat page gets answered too
        trigger=None,
        reply_suffix=SUFFIX,
        facts_url=None,
        log_format="text",
        log_level="WARNING",
    )
    daemon = Daemon(settings)
    emulator_config = config_from_env(
        {**os.environ, **DEMO_CREDENTIALS},
        host="127.0.0.1", port=ports.emulator, api="v2", webhook_urls=(webhook_url,),
    )
    async with daemon.running():
        runner = web.AppRunner(build_app(emulator_config), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", ports.emulator).start()
        try:
            yield ports
        finally:
            await runner.cleanup()


class Conversation:
    """Talks to the emulator's control API as the friend, and reads the bot's replies."""

    def __init__(self, session: aiohttp.ClientSession, emulator_port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{emulator_port}/_emulator"
        self.seen = 0

    async def send(self, text: str) -> dict[str, Any]:
        async with self.session.post(
            f"{self.base}/dm",
            json={"sender_id": FRIEND_ID, "sender_name": FRIEND_NAME, "text": text},
        ) as response:
            response.raise_for_status()
            result: dict[str, Any] = await response.json()
            return result

    async def new_messages(self) -> list[dict[str, Any]]:
        async with self.session.get(
            f"{self.base}/messages", params={"user_id": FRIEND_ID}
        ) as response:
            response.raise_for_status()
            messages: list[dict[str, Any]] = (await response.json())["messages"]
        fresh = messages[self.seen:]
        self.seen = len(messages)
        return fresh

    async def reply_within(self, seconds: float) -> str | None:
        """The bot's next DM to the friend, or None if none came within `seconds`."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            for message in await self.new_messages():
                if message["sender_id"] == BOT_USER_ID:
                    return str(message["text"])
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.05)


def _say(who: str, text: str) -> None:
    print(f"  {who:>7} │ {text}", flush=True)


async def run_script(conversation: Conversation, reply_seconds: float) -> list[str]:
    """Play the script; returns the failures (empty when every reply was as expected)."""
    failures = []
    for step in SCRIPT:
        await conversation.new_messages()
        await conversation.send(step.text)
        _say(FRIEND_NAME, step.text)
        # Silence is proven by waiting a while; a reply is usually there in milliseconds.
        reply = await conversation.reply_within(
            reply_seconds if step.expect else min(reply_seconds, 1.5)
        )
        if reply is None:
            _say("catbot", "(no reply)")
            if step.expect is not None:
                failures.append(f"{step.text!r}: expected {step.describe}, got no reply")
        else:
            _say("catbot", reply)
            if step.expect is None or not step.expect(reply):
                failures.append(f"{step.text!r}: expected {step.describe}, got {reply!r}")
    return failures


async def run_demo(stop: asyncio.Event, once: bool = False, reply_seconds: float = 15.0) -> int:
    configure_logging("text", "WARNING")
    with tempfile.TemporaryDirectory(prefix="catbot-demo-") as workdir:
        async with demo_world(Path(workdir)) as ports, aiohttp.ClientSession() as session:
            chat_url = f"http://127.0.0.1:{ports.emulator}{CHAT_PATH}"
            print(
                f"catbot demo: X emulator on http://127.0.0.1:{ports.emulator}, "
                f"bot webhook on http://127.0.0.1:{ports.webhook}/webhook/twitter, "
                f"metrics on http://127.0.0.1:{ports.metrics}/metrics\n"
                f"Chat with the bot in a browser: {chat_url}\n",
                flush=True,
            )
            conversation = Conversation(session, ports.emulator)
            failures = await run_script(conversation, reply_seconds)
            print()
            if failures:
                print("demo FAILED:", *failures, sep="\n  ", flush=True)
                return 1
            print("demo OK: every DM got the expected answer.", flush=True)
            if once:
                return 0
            print(
                f"\nThe bot keeps running. Chat with it in a browser at {chat_url}\n"
                "or send it another DM from a terminal:\n"
                f"  curl -s -X POST http://127.0.0.1:{ports.emulator}/_emulator/dm "
                f"-H 'Content-Type: application/json' "
                f"-d '{{\"sender_id\": \"{FRIEND_ID}\", \"text\": \"meow?\"}}'\n"
                "Press Ctrl-C to stop.\n",
                flush=True,
            )
            await _follow(conversation, stop)
    return 0


async def _follow(conversation: Conversation, stop: asyncio.Event) -> None:
    """Print the conversation as it goes on, until Ctrl-C."""
    while not stop.is_set():
        for message in await conversation.new_messages():
            who = "catbot" if message["sender_id"] == BOT_USER_ID else FRIEND_NAME
            _say(who, str(message["text"]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)
