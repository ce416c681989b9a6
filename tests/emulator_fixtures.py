"""Shared pieces of the emulator tests: credentials, a fake webhook receiver, fixtures, tweepy.

Import the fixtures a test module uses explicitly, e.g.
`from tests.emulator_fixtures import http, make_emulator  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from oauthlib.oauth1 import Client as OAuthClient
from tweepy.asynchronous import AsyncClient

from catbot.emulator import RunningEmulator, config_from_env, start_emulator
from catbot.x.session import RebasedSession

SECRET = "test-consumer-secret"
CONSUMER_KEY = "test-consumer-key"
BOT = "7000"
ACCESS_TOKEN = f"{BOT}-test-access-token"
TOKEN_SECRET = "test-token-secret"
ENV = {
    "CATBOT_X_CONSUMER_KEY": CONSUMER_KEY,
    "CATBOT_X_CONSUMER_SECRET": SECRET,
    "CATBOT_X_ACCESS_TOKEN": ACCESS_TOKEN,
    "CATBOT_X_ACCESS_TOKEN_SECRET": TOKEN_SECRET,
}
SIGNATURE_HEADER = "x-twitter-webhooks-signature"


def hmac_b64(secret: str, message: bytes) -> str:
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def oauth_signer(token_secret: str = TOKEN_SECRET, **kw: Any) -> OAuthClient:
    """An OAuth 1.0a signer holding the bot's credentials (our own, not the emulator's)."""
    return OAuthClient(CONSUMER_KEY, SECRET, ACCESS_TOKEN, token_secret, **kw)


# --- serving aiohttp apps on loopback ---------------------------------------------------


async def serve(app: web.Application, **runner_kw: Any) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, **runner_kw)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


Serving = Callable[..., Awaitable[str]]


@pytest.fixture
async def serving() -> AsyncIterator[Serving]:
    """Serves apps on loopback (`await serving(app, **runner_kw)` gives the base URL) and
    cleans every one of them up after the test."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, **runner_kw: Any) -> str:
        runner, base = await serve(app, **runner_kw)
        runners.append(runner)
        return base

    yield start
    for runner in runners:
        await runner.cleanup()


# --- a fake webhook receiver -----------------------------------------------------------


class WebhookApp:
    """The skeleton of a fake webhook receiver: `GET /webhook` (CRC) goes to `_crc`,
    `POST /webhook` (a delivery) to `_event`; subclasses record deliveries in `posts`."""

    posts: list[Any]

    def __init__(self) -> None:
        self.crc_tokens: list[str] = []
        self.url = ""
        self._changed = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/webhook", self._crc)
        self.app.router.add_post("/webhook", self._event)

    async def _crc(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def _event(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    def _shortfall(self, count: int) -> str:
        return f"expected {count} deliveries, got {len(self.posts)}"

    async def wait_posts(self, count: int, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while len(self.posts) < count:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, self._shortfall(count)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class Receiver(WebhookApp):
    """Answers CRCs with its own secret and records every delivery."""

    def __init__(self, secret: str, *, post_delay: float = 0.0) -> None:
        self.secret = secret
        self.post_delay = post_delay
        self.posts: list[tuple[dict[str, str], bytes]] = []
        super().__init__()

    async def _crc(self, request: web.Request) -> web.Response:
        token = request.query["crc_token"]
        self.crc_tokens.append(token)
        return web.json_response({"response_token": hmac_b64(self.secret, token.encode())})

    async def _event(self, request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(self.post_delay)
        self.posts.append(({k.lower(): v for k, v in request.headers.items()}, body))
        self._changed.set()
        return web.Response(status=200)

    def payload(self, index: int = -1) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.posts[index][1])
        return result


ReceiverFactory = Callable[..., Awaitable[Receiver]]
EmulatorFactory = Callable[..., Awaitable[RunningEmulator]]


@pytest.fixture
def make_receiver(serving: Serving) -> ReceiverFactory:
    async def factory(secret: str = SECRET, **kwargs: Any) -> Receiver:
        receiver = Receiver(secret, **kwargs)
        receiver.url = await serving(receiver.app) + "/webhook"
        return receiver

    return factory


@pytest.fixture
async def receiver(make_receiver: ReceiverFactory) -> Receiver:
    return await make_receiver()


# --- the emulator and a client session -------------------------------------------------


@pytest.fixture
async def make_emulator() -> AsyncIterator[EmulatorFactory]:
    running: list[RunningEmulator] = []

    async def factory(
        *webhook_urls: str, env: dict[str, str] | None = None, **kw: Any
    ) -> RunningEmulator:
        kw.setdefault("crc_retry_interval", 0.05)
        kw.setdefault("crc_retry_total", 2.0)
        config = config_from_env(
            env or ENV, host="127.0.0.1", port=0, webhook_urls=webhook_urls, **kw
        )
        emulator = await start_emulator(config)
        running.append(emulator)
        return emulator

    yield factory
    for emulator in running:
        await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_valid(http: aiohttp.ClientSession, emulator: RunningEmulator) -> dict[str, Any]:
    """Wait until every webhook the emulator knows has passed its CRC; the first of them."""
    deadline = time.monotonic() + 5
    while True:
        async with http.get(emulator.url + "/_emulator/webhooks") as resp:
            hooks = (await resp.json())["webhooks"]
        if hooks and all(h["valid"] for h in hooks):
            result: dict[str, Any] = hooks[0]
            return result
        assert time.monotonic() < deadline, hooks
        await asyncio.sleep(0.02)


# --- tweepy, unchanged, aimed at the emulator ------------------------------------------


def tweepy_client(
    http: aiohttp.ClientSession, emulator: RunningEmulator, consumer_secret: str = SECRET
) -> AsyncClient:
    """tweepy signing as the bot; its hard-coded https://api.twitter.com goes to the emulator."""
    client = AsyncClient(
        consumer_key=CONSUMER_KEY,
        consumer_secret=consumer_secret,
        access_token=ACCESS_TOKEN,
        access_token_secret=TOKEN_SECRET,
    )
    client.session = RebasedSession(http, emulator.url)
    return client


def bearer_client(
    http: aiohttp.ClientSession, emulator: RunningEmulator, bearer_token: str
) -> AsyncClient:
    """tweepy with app-only (bearer) auth, aimed at the emulator."""
    client = AsyncClient(bearer_token=bearer_token)
    client.session = RebasedSession(http, emulator.url)
    return client
