"""Shared pieces of the emulator tests: credentials, a fake webhook receiver, fixtures, tweepy.

`tests/conftest.py` makes the fixtures visible to every test module: `serving`,
`make_receiver`/`receiver`, `make_emulator`, `http`, and the drivers of one emulator,
`make_control` (its control API and tweepy as the bot) and `make_api` (tweepy as the bot
and as the app, the way a management client talks to X).
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
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import tweepy
from aiohttp import web
from multidict import CIMultiDictProxy
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


# --- driving one emulator: its control API, tweepy as the bot, tweepy as the app -------


class Control:
    """The control API as a test calls it, beside tweepy signing as the bot (`tweepy`)."""

    def __init__(self, http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
        self.http = http
        self.emulator = emulator
        self.base = emulator.url + "/_emulator/"
        self.tweepy = tweepy_client(http, emulator)

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body) as resp:
            assert resp.content_type == "application/json"
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status == 200, (method, path, answer)
        return answer

    async def dm(self, sender: str = "42", text: str = "hi") -> Any:
        return await self.ok("POST", "dm", {"sender_id": sender, "text": text})

    async def stats(self) -> dict[str, int]:
        result: dict[str, int] = await self.ok("GET", "stats")
        return result

    async def register(self, *hooks: WebhookApp) -> list[str]:
        return [(await self.ok("POST", "webhooks", {"url": h.url}))["id"] for h in hooks]


ControlFactory = Callable[..., Awaitable[Control]]


@pytest.fixture
def make_control(make_emulator: EmulatorFactory, http: aiohttp.ClientSession) -> ControlFactory:
    """`await make_control(*webhook_urls, **settings)`: a fresh emulator, driven through
    `Control` (its `emulator` and `tweepy` beside the control routes)."""

    async def factory(*webhook_urls: str, **kw: Any) -> Control:
        return Control(http, await make_emulator(*webhook_urls, **kw))

    return factory


def basic(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(key, secret)}


@dataclass
class Answer:
    status: int
    raw: bytes
    headers: CIMultiDictProxy[str]
    error: tweepy.HTTPException | None

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def message(self) -> str:
        """The first error message, as tweepy's exception exposes it."""
        assert self.error is not None, f"expected an error, got {self.status} {self.body}"
        return str(self.error.api_messages[0])


class Api:
    """The two ways a management client talks to X: as the bot (OAuth 1.0a) or as the app."""

    def __init__(self, http: aiohttp.ClientSession, emulator: RunningEmulator, bearer: str):
        self.emulator = emulator
        self.user_client = tweepy_client(http, emulator)
        self.app_client = bearer_client(http, emulator, bearer)

    async def _call(
        self,
        client: AsyncClient,
        user: bool,
        method: str,
        route: str,
        params: dict[str, str] | None,
        body: Any,
    ) -> Answer:
        try:
            response = await client.request(
                method, route, params=params or {}, json=body, user_auth=user
            )
        except tweepy.HTTPException as exc:
            response, error = exc.response, exc
        else:
            error = None
        # tweepy read the body before releasing the response; text() serves it from memory.
        raw = (await response.text()).encode()
        return Answer(response.status, raw, response.headers, error)

    async def user(
        self, method: str, route: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> Answer:
        return await self._call(self.user_client, True, method, route, params, json)

    async def app(
        self, method: str, route: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> Answer:
        return await self._call(self.app_client, False, method, route, params, json)


async def fetch_bearer(http: aiohttp.ClientSession, emulator: RunningEmulator) -> str:
    async with http.post(
        emulator.url + "/oauth2/token",
        headers=basic(CONSUMER_KEY, SECRET),
        data={"grant_type": "client_credentials"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
def make_api(make_emulator: EmulatorFactory, http: aiohttp.ClientSession) -> ApiFactory:
    """`await make_api(*webhook_urls, **settings)`: a fresh emulator and an `Api` on it, its
    bearer token fetched from `/oauth2/token` as a management client would."""

    async def factory(*webhook_urls: str, **kw: Any) -> Api:
        emulator = await make_emulator(*webhook_urls, **kw)
        return Api(http, emulator, await fetch_bearer(http, emulator))

    return factory
