"""`catbot demo`: the whole loop offline, in one process, in a minute.

The X emulator and the daemon start on free loopback ports (SQLite in a temporary folder),
set up as a real deployment is: the bot's X Chat keys are made (`catbot xchat keygen`'s
call) and registered at X (`catbot xchat register`'s), the daemon starts with them, and the
webhook is registered and subscribed the way `catbot webhooks ensure` does it, in the X
Activity API flavour (dm.received, chat.received, post.mention.create, post.reply.create).
A friend DMs the bot through the emulator's control API, then writes once more on X Chat
(end-to-end encrypted: the emulator's friend encrypts, the daemon decrypts and answers
encrypted, the friend decrypts), and the conversation is printed as the emulator recorded
it. The checks are strict, so `catbot demo --once` doubles as a smoke test: it exits
non-zero when an expected reply is missing or wrong, the X Chat one included.
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
from pydantic import SecretStr

from catbot.app import Daemon
from catbot.brain import HELP_TEXT, START_TEXT, STOP_TEXT
from catbot.commands.ports import free_port
from catbot.config import Settings, credentials_from
from catbot.emulator.app import start_emulator
from catbot.emulator.chat import CHAT_PATH
from catbot.emulator.config import config_from_env
from catbot.facts import load_corpus
from catbot.logs import configure_logging
from catbot.x.dm import Credentials, SendError
from catbot.x.management import XApiError, management_for
from catbot.x.registration import RegistrationError, ensure_webhook
from catbot.xchat.client import XChatClient
from catbot.xchat.errors import XChatError
from catbot.xchat.identity import generate_identity, load_identity

_FRIEND_ID = "2244994945"
FRIEND_NAME = "Ada"
BOT_USER_ID = "1000"
SUFFIX = " Nya~"
WEBHOOK_PATH = "/webhook/twitter"
# The X Activity API subscriptions the demo's bot needs, one per answered event type
# (`answered_event_types`: dm.received, chat.received, post.mention.create,
# post.reply.create): one more than the emulator's default tier (pay-per-use: 3).
DEMO_MAX_SUBSCRIPTIONS = 4
# Throwaway credentials shared by the emulator and the daemon: nothing here is real.
DEMO_CREDENTIALS = {
    "CATBOT_X_CONSUMER_KEY": "demo-consumer-key",
    "CATBOT_X_CONSUMER_SECRET": "demo-consumer-secret-for-offline-use-only",
    "CATBOT_X_ACCESS_TOKEN": f"{BOT_USER_ID}-demo-access-token",
    "CATBOT_X_ACCESS_TOKEN_SECRET": "demo-access-token-secret",
}


@dataclass(frozen=True)
class Step:
    text: str
    # Checks the bot's reply; None means the bot must stay silent.
    expect: Callable[[str], bool] | None
    describe: str
    # "dm" (a legacy DM) or "xchat" (end-to-end encrypted); the reply must come the same way.
    channel: str = "dm"


def _is_fact(reply: str) -> bool:
    facts = {fact.text for fact in load_corpus()}
    return reply.endswith(SUFFIX) and reply.removesuffix(SUFFIX) in facts


_SCRIPT = (
    Step("hi catbot! got any cat facts?", _is_fact, "a cat fact"),
    Step("help", lambda r: r == HELP_TEXT + SUFFIX, "the help text"),
    Step("stop", lambda r: r == STOP_TEXT + SUFFIX, "the opt-out confirmation"),
    Step("are you still there?", None, "silence (opted out)"),
    Step("start", lambda r: r == START_TEXT + SUFFIX, "the welcome back"),
    Step("send me cat facts", _is_fact, "another cat fact"),
    Step("psst, over X Chat now: one more?", _is_fact, "a cat fact, end-to-end encrypted",
         channel="xchat"),
)


@dataclass(frozen=True)
class Ports:
    emulator: int
    webhook: int
    metrics: int


def _credentials() -> Credentials:
    return Credentials(
        DEMO_CREDENTIALS["CATBOT_X_CONSUMER_KEY"],
        DEMO_CREDENTIALS["CATBOT_X_CONSUMER_SECRET"],
        DEMO_CREDENTIALS["CATBOT_X_ACCESS_TOKEN"],
        DEMO_CREDENTIALS["CATBOT_X_ACCESS_TOKEN_SECRET"],
    )


def demo_settings(ports: Ports, workdir: Path, private_key: str, key_version: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        x_consumer_key=SecretStr(DEMO_CREDENTIALS["CATBOT_X_CONSUMER_KEY"]),
        x_consumer_secret=SecretStr(DEMO_CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]),
        x_access_token=SecretStr(DEMO_CREDENTIALS["CATBOT_X_ACCESS_TOKEN"]),
        x_access_token_secret=SecretStr(DEMO_CREDENTIALS["CATBOT_X_ACCESS_TOKEN_SECRET"]),
        x_consumer_secret_previous=None,
        # The X Activity API: the one flavour that delivers X Chat (chat.received).
        x_api="activity",
        x_api_base=f"http://127.0.0.1:{ports.emulator}",
        host="127.0.0.1",
        port=ports.webhook,
        webhook_path=WEBHOOK_PATH,
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
        xchat_private_key=SecretStr(private_key),
        xchat_key_version=key_version,
    )


async def register_xchat_keys(api_base: str) -> tuple[str, str]:
    """`catbot xchat keygen` then `catbot xchat register`, as calls: a new identity, its
    public half registered at X for the bot. The private key blob (base64) and X's version."""
    new = generate_identity()
    identity = load_identity(new.private_key, user_id=BOT_USER_ID, key_version=None)
    async with aiohttp.ClientSession() as session:
        registration = await XChatClient(_credentials(), session, api_base).ensure_registered(
            identity
        )
    return new.private_key, registration.version


async def subscribe_webhook(settings: Settings, url: str) -> list[str]:
    """`catbot webhooks ensure URL`: register the webhook (X checks it with a CRC) and
    subscribe the bot to each event type it answers; what was done."""
    async with aiohttp.ClientSession() as session:
        manager = management_for(settings, credentials_from(settings), session)
        result = await ensure_webhook(manager, url)
    return result.actions


class DemoSetupError(Exception):
    """The demo's world could not be set up; the message says which step failed."""


@asynccontextmanager
async def _demo_world(workdir: Path) -> AsyncIterator[Ports]:
    """Emulator and daemon, wired to each other as a deployment is, until the block exits."""
    ports = Ports(free_port(), free_port(), free_port())
    api_base = f"http://127.0.0.1:{ports.emulator}"
    emulator_config = config_from_env(
        {**os.environ, **DEMO_CREDENTIALS},
        host="127.0.0.1", port=ports.emulator, api="activity",
        max_subscriptions=DEMO_MAX_SUBSCRIPTIONS,
    )
    emulator = await start_emulator(emulator_config)
    try:
        try:
            private_key, version = await register_xchat_keys(api_base)
        except (SendError, XChatError) as exc:
            raise DemoSetupError(f"registering the bot's X Chat keys failed: {exc}") from exc
        settings = demo_settings(ports, workdir, private_key, version)
        async with Daemon(settings).running():
            webhook_url = f"http://127.0.0.1:{ports.webhook}{WEBHOOK_PATH}"
            try:
                await subscribe_webhook(settings, webhook_url)
            except (RegistrationError, XApiError) as exc:
                raise DemoSetupError(f"registering the webhook failed: {exc}") from exc
            yield ports
    finally:
        await emulator.stop()


class _Conversation:
    """Talks to the emulator's control API as the friend, and reads the bot's replies."""

    def __init__(self, session: aiohttp.ClientSession, emulator_port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{emulator_port}/_emulator"
        self.seen = 0

    async def send(self, text: str, channel: str = "dm") -> dict[str, Any]:
        """The friend writes: `/_emulator/dm`, or `/_emulator/xchat` for X Chat."""
        async with self.session.post(
            f"{self.base}/{channel}",
            json={"sender_id": _FRIEND_ID, "sender_name": FRIEND_NAME, "text": text},
        ) as response:
            response.raise_for_status()
            result: dict[str, Any] = await response.json()
            return result

    async def new_messages(self) -> list[dict[str, Any]]:
        async with self.session.get(
            f"{self.base}/messages", params={"user_id": _FRIEND_ID}
        ) as response:
            response.raise_for_status()
            messages: list[dict[str, Any]] = (await response.json())["messages"]
        fresh = messages[self.seen:]
        self.seen = len(messages)
        return fresh

    async def reply_within(self, seconds: float, channel: str = "dm") -> str | None:
        """The bot's next message to the friend on `channel` (X Chat: as the friend's app
        decrypts it), or None if none came within `seconds`."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            for message in await self.new_messages():
                if message["sender_id"] == BOT_USER_ID and message.get("channel") == channel:
                    return str(message["text"])
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.05)


# X Chat turns are marked: end-to-end encrypted on the way, shown as each side reads them.
_XCHAT_MARK = "[X Chat] "


def _say(who: str, text: str, channel: str = "dm") -> None:
    mark = _XCHAT_MARK if channel == "xchat" else ""
    print(f"  {who:>7} │ {mark}{text}", flush=True)


async def _run_script(conversation: _Conversation, reply_seconds: float) -> list[str]:
    """Play the script; returns the failures (empty when every reply was as expected)."""
    failures = []
    for step in _SCRIPT:
        await conversation.new_messages()
        await conversation.send(step.text, step.channel)
        _say(FRIEND_NAME, step.text, step.channel)
        # Silence is proven by waiting a while; a reply is usually there in milliseconds.
        reply = await conversation.reply_within(
            reply_seconds if step.expect else min(reply_seconds, 1.5), step.channel
        )
        if reply is None:
            _say("catbot", "(no reply)", step.channel)
            if step.expect is not None:
                failures.append(f"{step.text!r}: expected {step.describe}, got no reply")
        else:
            _say("catbot", reply, step.channel)
            if step.expect is None or not step.expect(reply):
                failures.append(f"{step.text!r}: expected {step.describe}, got {reply!r}")
    return failures


async def run_demo(stop: asyncio.Event, once: bool = False, reply_seconds: float = 15.0) -> int:
    configure_logging("text", "WARNING")
    with tempfile.TemporaryDirectory(prefix="catbot-demo-") as workdir:
        try:
            async with _demo_world(Path(workdir)) as ports, \
                    aiohttp.ClientSession() as session:
                return await _play(ports, session, stop, once, reply_seconds)
        except DemoSetupError as exc:
            print(f"demo FAILED: {exc}", flush=True)
            return 1


async def _play(
    ports: Ports, session: aiohttp.ClientSession, stop: asyncio.Event, once: bool,
    reply_seconds: float,
) -> int:
    chat_url = f"http://127.0.0.1:{ports.emulator}{CHAT_PATH}"
    print(
        f"catbot demo: X emulator on http://127.0.0.1:{ports.emulator}, "
        f"bot webhook on http://127.0.0.1:{ports.webhook}{WEBHOOK_PATH} (X Activity API), "
        f"metrics on http://127.0.0.1:{ports.metrics}/metrics\n"
        "X Chat keys made and registered for the bot.\n"
        f"Chat with the bot in a browser: {chat_url}\n",
        flush=True,
    )
    conversation = _Conversation(session, ports.emulator)
    failures = await _run_script(conversation, reply_seconds)
    print()
    if failures:
        print("demo FAILED:", *failures, sep="\n  ", flush=True)
        return 1
    print("demo OK: every DM and the X Chat message got the expected answer.", flush=True)
    if once:
        return 0
    base = f"http://127.0.0.1:{ports.emulator}/_emulator"
    body = f"-d '{{\"sender_id\": \"{_FRIEND_ID}\", \"text\": \"meow?\"}}'"
    print(
        f"\nThe bot keeps running. Chat with it in a browser at {chat_url}\n"
        "(switch a friend to X Chat there), or write to it from a terminal, by DM:\n"
        f"  curl -s -X POST {base}/dm -H 'Content-Type: application/json' {body}\n"
        "or on X Chat, end-to-end encrypted:\n"
        f"  curl -s -X POST {base}/xchat -H 'Content-Type: application/json' {body}\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
    await _follow(conversation, stop)
    return 0


async def _follow(conversation: _Conversation, stop: asyncio.Event) -> None:
    """Print the conversation as it goes on, until Ctrl-C."""
    while not stop.is_set():
        for message in await conversation.new_messages():
            who = "catbot" if message["sender_id"] == BOT_USER_ID else FRIEND_NAME
            _say(who, str(message["text"]), str(message.get("channel", "dm")))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)
