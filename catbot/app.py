"""The daemon: settings turned into its parts, started in order and stopped in reverse.

The parts (`Daemon.lifecycle`, in the manner of aiohttp's `cleanup_ctx`): the store (a
single-owner store, SQLite, also hands back the claims of a previous run; replicas sharing
Redis never do) → the HTTP clients, and the outbox and webhook handler built on them → the
internal listener → the public listener → the outbox workers → housekeeping.

Shutdown (SIGTERM/SIGINT) first runs the `on_shutdown` hook: readiness turns false and the
webhook answers 503 (X retries). Then the parts stop backwards: workers finish or hand back
their jobs within the grace period, the listeners close, the store last. Pending jobs simply
stay in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import Counter

from catbot.brain import Policy
from catbot.config import Settings, credentials_from, redact_url
from catbot.facts import CorpusSource, FactSource, RemoteSource
from catbot.logs import AccessLog, ServerErrorLog, get_logger
from catbot.observability import Health, Metrics, internal_app
from catbot.outbox import Outbox, OutboxSettings
from catbot.outbox.ratelimit import allowances_from
from catbot.outbox.xchat import XChatSide
from catbot.store import Store, create_store
from catbot.webhook.ingest import Ingest, IngestPolicy
from catbot.webhook.routes import WebhookHandler, WebhookPolicy, add_routes
from catbot.webhook.signature import SignatureVerifier
from catbot.x.dm import DMSender
from catbot.x.management import XApiError, management_for
from catbot.xchat.client import XChatClient
from catbot.xchat.crypto import XChatCrypto

log = get_logger("catbot.app")

DEPTH_INTERVAL_SECONDS = 2.0
PRUNE_INTERVAL_SECONDS = 600.0

# The settings that choose each listener's address, for a message when it cannot bind.
_LISTENER_SETTINGS = {"public": "CATBOT_HOST, CATBOT_PORT",
                      "internal": "CATBOT_METRICS_HOST, CATBOT_METRICS_PORT"}

# One part of a lifecycle: started when entered, stopped when left.
CleanupContext = Callable[[], AbstractAsyncContextManager[None]]


class ListenError(OSError):
    """A listener could not bind; the message names the address and the settings."""


class Lifecycle:
    """Start-up and shutdown as an aiohttp `Application` has them, for parts that are not
    one web app's (two listeners, workers, the store).

    Each `cleanup_ctx` part starts when entered and stops when left; they start in order and
    stop in reverse, so a part may use every part before it for as long as it runs. Stopping
    begins with the `on_shutdown` hooks, before any part stops (an app's `on_shutdown`).
    """

    def __init__(
        self, cleanup_ctx: Sequence[CleanupContext], on_shutdown: Sequence[Callable[[], None]]
    ) -> None:
        self.cleanup_ctx = list(cleanup_ctx)
        self.on_shutdown = list(on_shutdown)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for part in self.cleanup_ctx:
                await stack.enter_async_context(part())
            try:
                yield
            finally:
                for hook in self.on_shutdown:
                    hook()


class Daemon:
    """catbot's daemon: `run` until told to stop, or `running()` around other work."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.credentials = credentials_from(settings)
        # Checked before anything starts: a half-set or unusable key is a ConfigError
        # naming the variable. None: X Chat is off.
        self.xchat_identity = settings.xchat_identity()
        self.metrics = metrics or Metrics()
        self.store: Store = create_store(
            settings.store_url, dedupe_seconds=dedupe_window(settings)
        )
        self.stopping = False
        # Built by `_clients` on the HTTP session, which only exists while running.
        self.outbox: Outbox | None = None
        self.handler: WebhookHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        # X's view of our webhook, as last seen (None: not watched or not yet known).
        self.webhook_valid: bool | None = None
        self.lifecycle = Lifecycle(
            [self._store_opened, self._clients, self._internal_listener,
             self._public_listener, self._workers, self._housekeeping],
            on_shutdown=[self._shutting_down],
        )

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        async with self.running():
            if on_ready is not None:
                on_ready()
            await stop.wait()
            log.info("shutdown_started")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Daemon]:
        async with self.lifecycle.running():
            s = self.settings
            log.info(
                "started", port=s.port, path=s.webhook_path, metrics_port=s.metrics_port,
                api=s.x_api, api_base=redact_url(s.api_base), workers=s.workers,
                store=s.store_url.split(":", 1)[0], xchat=self.xchat_identity is not None,
            )
            yield self
        log.info("stopped")

    # The parts, in start-up order ---------------------------------------------------------

    @asynccontextmanager
    async def _store_opened(self) -> AsyncIterator[None]:
        await self.store.open()
        try:
            if self.store.single_owner:
                # Only the owner of all the data may hand back every claim; replicas sharing
                # a store (Redis) wait for the leases instead.
                handed_back = await self.store.release_all_claims()
                if handed_back:
                    log.info("claims_handed_back", jobs=handed_back)
            yield
        finally:
            await self.store.close()

    @asynccontextmanager
    async def _clients(self) -> AsyncIterator[None]:
        """The HTTP session every client shares, and what is built on it: the fact source,
        X Chat's side, the outbox (its workers start later) and the webhook handler."""
        timeout = aiohttp.ClientTimeout(total=self.settings.send_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            facts = self._facts(session)
            try:
                xchat = await self._xchat(session)
                self.outbox = self._outbox(session, facts, xchat)
                self.handler = self._handler(self.outbox)
                self._session = session
                yield
            finally:
                await facts.aclose()

    def _internal_listener(self) -> AbstractAsyncContextManager[None]:
        s = self.settings
        health = Health(self.readiness, self.health_details)
        return listening(internal_app(self.metrics, health), s.metrics_host, s.metrics_port,
                         "internal", self.metrics.http_parse_errors, access_log=False)

    def _public_listener(self) -> AbstractAsyncContextManager[None]:
        s = self.settings
        assert self.handler is not None  # built by _clients
        app = web.Application(client_max_size=s.max_body_bytes)
        add_routes(app, s.webhook_path, self.handler)
        # When it stops, requests in flight finish (their events get stored); new
        # connections are refused.
        return listening(app, s.host, s.port, "public", self.metrics.http_parse_errors,
                         access_log=True, keepalive_timeout=s.idle_timeout_seconds)

    @asynccontextmanager
    async def _workers(self) -> AsyncIterator[None]:
        assert self.outbox is not None  # built by _clients
        self.outbox.start()
        try:
            yield
        finally:
            await self.outbox.stop(self.settings.shutdown_grace_seconds)

    @asynccontextmanager
    async def _housekeeping(self) -> AsyncIterator[None]:
        s = self.settings
        chores = [self._every(DEPTH_INTERVAL_SECONDS, self._update_depth),
                  self._every(PRUNE_INTERVAL_SECONDS, self._prune)]
        if s.public_url:
            session = self._session
            assert session is not None  # opened by _clients
            chores.append(self._every(s.webhook_check_seconds,
                                      lambda: self.check_webhook(session)))
        else:
            log.info("webhook_validity_not_watched",
                     fix="set CATBOT_PUBLIC_URL to have X asked whether it is valid")
        tasks = [asyncio.create_task(chore) for chore in chores]
        try:
            yield
        finally:
            for task in reversed(tasks):
                await _cancel(task)

    def _shutting_down(self) -> None:
        self.stopping = True
        self.metrics.ready.set(0)
        assert self.handler is not None  # hooks run once every part started
        self.handler.stop_accepting()

    # What the parts are made of -----------------------------------------------------------

    def _outbox(
        self, session: aiohttp.ClientSession, facts: FactSource, xchat: XChatSide | None
    ) -> Outbox:
        s = self.settings
        return Outbox(
            store=self.store,
            sender=DMSender(self.credentials, session, s.x_api, s.x_api_base),
            facts=facts,
            policy=Policy.from_settings(s),
            metrics=self.metrics,
            settings=OutboxSettings.from_settings(s),
            allowances=allowances_from(s, self.store),
            xchat=xchat,
        )

    def _handler(self, outbox: Outbox) -> WebhookHandler:
        s = self.settings
        ingest = Ingest(IngestPolicy.from_settings(s), self.store, self.metrics,
                        on_enqueued=outbox.notify)
        return WebhookHandler(WebhookPolicy.from_settings(s),
                              SignatureVerifier(s.signing_secrets()), ingest, self.metrics)

    async def _xchat(self, session: aiohttp.ClientSession) -> XChatSide | None:
        """X Chat's parts on the daemon's session and API base, with every conversation
        key the store kept (a job queued before a restart may need one)."""
        if self.xchat_identity is None:
            return None
        client = XChatClient(self.credentials, session, self.settings.x_api_base)
        side = XChatSide(XChatCrypto(self.xchat_identity), client, client.signing_key_cache(),
                         self.store, self.metrics)
        await side.load_all()
        return side

    def _facts(self, session: aiohttp.ClientSession) -> FactSource:
        corpus = CorpusSource()
        if not self.settings.facts_url:
            return corpus

        def count(source: str) -> None:
            self.metrics.facts_served.labels(source).inc()

        return RemoteSource(
            self.settings.facts_url, session, corpus,
            timeout=self.settings.facts_timeout_seconds,
            cache_seconds=self.settings.facts_cache_seconds,
            on_outcome=count,
        )

    # Health -------------------------------------------------------------------------------

    async def readiness(self) -> str | None:
        if self.stopping:
            return "shutting down"
        if self.outbox is None or not self.outbox.running:
            return "outbox workers are not running"
        try:
            await asyncio.wait_for(
                self.store.check_writable(), min(2.0, self.settings.store_timeout_seconds)
            )
        except Exception as exc:
            return f"store cannot take writes: {type(exc).__name__}: {exc}"[:200]
        return None

    def health_details(self) -> dict[str, object]:
        last_crc = self.handler.last_crc_at if self.handler else None
        return {
            "last_crc_at": None if last_crc is None else _iso(last_crc),
            "webhook_valid": self.webhook_valid,
        }

    # Housekeeping -------------------------------------------------------------------------

    async def check_webhook(self, session: aiohttp.ClientSession) -> None:
        """Ask X whether the webhook at CATBOT_PUBLIC_URL is valid; remember the answer."""
        s = self.settings
        manager = management_for(s, self.credentials, session)
        try:
            hooks = [h for h in await manager.list_webhooks() if h.url == s.public_url]
        except Exception as exc:
            # X's view is unknown: the last answer stands, and the age of
            # catbot_webhook_checked_timestamp_seconds is what the alert watches.
            self.metrics.webhook_checks.labels("error").inc()
            # Only X's own words: a client error's text may carry the API base's userinfo.
            detail = str(exc) if isinstance(exc, XApiError) else type(exc).__name__
            log.warning("webhook_check_failed", error=detail[:300])
            return
        self.webhook_valid = bool(hooks) and all(h.valid for h in hooks)
        self.metrics.webhook_valid.set(1 if self.webhook_valid else 0)
        self.metrics.webhook_checked.set(time.time())
        outcome = "valid" if self.webhook_valid else "invalid" if hooks else "unregistered"
        self.metrics.webhook_checks.labels(outcome).inc()
        if not self.webhook_valid:
            log.warning("webhook_not_valid_at_x", registered=bool(hooks))

    async def _update_depth(self) -> None:
        self.metrics.outbox_depth.set(await self.store.depth())

    async def _prune(self) -> None:
        await self.store.prune(time.time() - dedupe_window(self.settings))

    @staticmethod
    async def _every(interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await action()
            except Exception:
                log.exception("housekeeping_failed")
            await asyncio.sleep(interval)


@asynccontextmanager
async def listening(
    app: web.Application, host: str, port: int, listener: str, parse_errors: Counter,
    *, access_log: bool, keepalive_timeout: float = 75.0,
) -> AsyncIterator[None]:
    """`app` served on host:port until left; `listener` ("public" or "internal") labels
    `parse_errors` and names the settings in the `ListenError` when the port cannot bind."""
    options: dict[str, Any] = {
        "keepalive_timeout": keepalive_timeout,
        # Strangers' malformed requests: counted, summarised, never logged with their bytes.
        "logger": ServerErrorLog(
            listener, lambda kind: parse_errors.labels(listener, kind).inc()),
        # Bodies are taken as sent: nothing is decompressed before the signature is
        # checked, and the webhook refuses any Content-Encoding (webhook/routes.py).
        "auto_decompress": False,
    }
    if access_log:
        options["access_log_class"] = AccessLog
    else:
        options["access_log"] = None
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, **options)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(
            f"cannot listen on {host}:{port} (set by {_LISTENER_SETTINGS[listener]}): "
            f"{reason}"
        ) from exc
    try:
        yield
    finally:
        await runner.cleanup()


def dedupe_window(settings: Settings) -> float:
    """How long event ids are remembered: well past the oldest event still answered."""
    return max(2 * settings.max_event_age_seconds, 86400.0)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
