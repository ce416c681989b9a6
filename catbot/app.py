"""The daemon: wires settings into the store, the webhook, the outbox and the listeners.

Start-up order: store (a single-owner store, SQLite, also hands back the claims of a previous
run; replicas sharing Redis never do) → HTTP session → listeners → workers. Shutdown
(SIGTERM/SIGINT) runs it backwards: readiness turns false, the public listener stops taking
events, workers finish or hand back their jobs within the grace period, then everything
closes. Pending jobs simply stay in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from catbot.brain import Policy
from catbot.config import Settings, redact_url
from catbot.facts import CorpusSource, FactSource, RemoteSource
from catbot.logs import AccessLog, ServerErrorLog, get_logger
from catbot.observability import Health, Metrics, internal_app
from catbot.outbox import Outbox, OutboxSettings
from catbot.outbox.ratelimit import (
    DM,
    POST,
    XCHAT,
    Allowance,
    RateGate,
    SendBudget,
    SharedSendBudget,
)
from catbot.outbox.xchat import XChatSide
from catbot.store import Store, create_store
from catbot.webhook.routes import WebhookHandler, WebhookPolicy, add_routes
from catbot.webhook.signature import SignatureVerifier
from catbot.x.dm import Credentials, DMSender
from catbot.x.management import XApiError, management_for
from catbot.xchat.client import XChatClient
from catbot.xchat.crypto import XChatCrypto

log = get_logger("catbot.app")

DEPTH_INTERVAL_SECONDS = 2.0
PRUNE_INTERVAL_SECONDS = 600.0

# The settings that choose each listener's address, for a message when it cannot bind.
_LISTENER_SETTINGS = {"public": "CATBOT_HOST, CATBOT_PORT",
                      "internal": "CATBOT_METRICS_HOST, CATBOT_METRICS_PORT"}


class ListenError(OSError):
    """A listener could not bind; the message names the address and the settings."""


def credentials_from(settings: Settings) -> Credentials:
    settings.require_credentials()

    def value(secret: object) -> str:
        return secret.get_secret_value()  # type: ignore[attr-defined,no-any-return]

    return Credentials(
        consumer_key=value(settings.x_consumer_key),
        consumer_secret=value(settings.x_consumer_secret),
        access_token=value(settings.x_access_token),
        access_token_secret=value(settings.x_access_token_secret),
        bearer_token=value(settings.x_bearer_token) if settings.x_bearer_token else None,
    )


class Daemon:
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
        self.outbox: Outbox | None = None
        self.handler: WebhookHandler | None = None
        # X's view of our webhook, as last seen (None: not watched or not yet known).
        self.webhook_valid: bool | None = None

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        async with self.running():
            if on_ready is not None:
                on_ready()
            await stop.wait()
            log.info("shutdown_started")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Daemon]:
        s = self.settings
        async with AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            if self.store.single_owner:
                # Only the owner of all the data may hand back every claim; replicas sharing
                # a store (Redis) wait for the leases instead.
                handed_back = await self.store.release_all_claims()
                if handed_back:
                    log.info("claims_handed_back", jobs=handed_back)

            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=s.send_timeout_seconds)
            )
            stack.push_async_callback(session.close)
            facts = self._facts(session)
            stack.push_async_callback(facts.aclose)
            xchat = await self._xchat(session)

            policy = Policy.build(s.cooldown_seconds, s.daily_cap, s.trigger, s.reply_suffix,
                                  language=s.language)
            self.outbox = outbox = Outbox(
                store=self.store,
                sender=DMSender(self.credentials, session, s.x_api, s.x_api_base),
                facts=facts,
                policy=policy,
                metrics=self.metrics,
                settings=OutboxSettings(
                    workers=s.workers,
                    lease_seconds=s.lease_seconds,
                    max_attempts=s.send_max_attempts,
                    retry_initial_seconds=s.retry_initial_seconds,
                    retry_max_seconds=s.retry_max_seconds,
                    rate_limit_default_wait_seconds=s.rate_limit_default_wait_seconds,
                    store_timeout_seconds=s.store_timeout_seconds,
                ),
                allowances=self._allowances(),
                xchat=xchat,
            )
            self.handler = handler = WebhookHandler(
                WebhookPolicy(
                    consumer_secret=self.credentials.consumer_secret,
                    bot_user_id=s.bot_user_id,
                    max_event_age_seconds=s.max_event_age_seconds,
                    max_future_skew_seconds=s.max_future_skew_seconds,
                    max_body_bytes=s.max_body_bytes,
                    store_timeout_seconds=s.store_timeout_seconds,
                    body_timeout_seconds=s.body_timeout_seconds,
                    reply_to_mentions=s.reply_to_mentions,
                    answer_xchat=xchat is not None,
                ),
                SignatureVerifier(s.signing_secrets()),
                self.store,
                self.metrics,
                on_enqueued=outbox.notify,
            )

            internal = await self._serve(
                internal_app(self.metrics, Health(self.readiness, self.health_details)),
                s.metrics_host,
                s.metrics_port, access_log=False, listener="internal",
            )
            stack.push_async_callback(internal.cleanup)

            public_app = web.Application(client_max_size=s.max_body_bytes)
            add_routes(public_app, s.webhook_path, handler)
            public = await self._serve(public_app, s.host, s.port, access_log=True,
                                       keepalive_timeout=s.idle_timeout_seconds,
                                       listener="public")
            stack.push_async_callback(self._stop_public, public)

            outbox.start()
            stack.push_async_callback(outbox.stop, s.shutdown_grace_seconds)
            tasks = [self._every(DEPTH_INTERVAL_SECONDS, self._update_depth),
                     self._every(PRUNE_INTERVAL_SECONDS, self._prune)]
            if s.public_url:
                tasks.append(self._every(s.webhook_check_seconds,
                                         lambda: self.check_webhook(session)))
            else:
                log.info("webhook_validity_not_watched",
                         fix="set CATBOT_PUBLIC_URL to have X asked whether it is valid")
            for task in tasks:
                background = asyncio.create_task(task)
                stack.push_async_callback(_cancel, background)
            # Last in, first out: readiness flips before anything else stops.
            stack.callback(self._mark_stopping)

            log.info(
                "started", port=s.port, path=s.webhook_path, metrics_port=s.metrics_port,
                api=s.x_api, api_base=redact_url(s.api_base), workers=s.workers,
                store=s.store_url.split(":", 1)[0], xchat=xchat is not None,
            )
            yield self
        log.info("stopped")

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

    async def _serve(self, app: web.Application, host: str, port: int, access_log: bool,
                     keepalive_timeout: float = 75.0, listener: str = "public") -> web.AppRunner:
        parse_errors = self.metrics.http_parse_errors
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
        runner = web.AppRunner(app, handle_signals=False, **options)
        await runner.setup()
        site = web.TCPSite(runner, host, port, shutdown_timeout=5.0)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(
                f"cannot listen on {host}:{port} (set by {_LISTENER_SETTINGS[listener]}): "
                f"{reason}"
            ) from exc
        return runner

    def _mark_stopping(self) -> None:
        self.stopping = True
        self.metrics.ready.set(0)
        if self.handler is not None:
            self.handler.accepting = False

    async def _stop_public(self, runner: web.AppRunner) -> None:
        # Requests in flight finish (their events get stored); new connections are refused.
        await runner.cleanup()

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

    def _allowances(self) -> dict[str, Allowance]:
        """A gate and a budget for each endpoint family: X counts DMs, posts and X Chat
        sends apart."""
        s = self.settings
        windows = {
            DM: {900.0: s.dm_budget_15min, 86400.0: s.dm_budget_24h},
            POST: {900.0: s.post_budget_15min, 86400.0: s.post_budget_24h},
            XCHAT: {900.0: s.xchat_budget_15min, 86400.0: s.xchat_budget_24h},
        }
        return {family: Allowance(RateGate(), self._budget(family, family_windows))
                for family, family_windows in windows.items()}

    def _budget(self, family: str, windows: dict[float, int]) -> SendBudget:
        """Our budget for a family: in-process for one daemon, in Redis when replicas share
        a store."""
        from catbot.store.redis import RedisStore

        if isinstance(self.store, RedisStore):
            return SharedSendBudget(windows, functools.partial(self.store.take_send_slot,
                                                               family=family))
        return SendBudget(windows)

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


def dedupe_window(settings: Settings) -> float:
    """How long event ids are remembered: well past the oldest event still answered."""
    return max(2 * settings.max_event_age_seconds, 86400.0)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
