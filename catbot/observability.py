"""Prometheus metrics and the internal HTTP listener (`/metrics`, `/livez`, `/readyz`).

Every metric is `catbot_*` and every label takes values from a small fixed set: never a user
id, an event id or message text. Each daemon owns its own registry, so tests can run several
in one process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)
from prometheus_client.openmetrics.exposition import (
    generate_latest as generate_openmetrics,
)

from catbot.xchat.errors import DECRYPT_FAILURE_REASONS

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_REPLY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """Every catbot metric, grouped by the part that counts it. Registered in this order,
    which is the order `/metrics` lists them in."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._webhook(self.registry)
        self._outbox(self.registry)
        self._health(self.registry)
        self._xchat(self.registry)

    def _webhook(self, r: CollectorRegistry) -> None:
        self.webhook_requests = Counter(
            "catbot_webhook_requests", "Webhook HTTP requests by outcome", ["outcome"], registry=r
        )
        self.crc_responses = Counter(
            "catbot_crc_responses", "CRC challenges answered", registry=r
        )
        # Anyone can send a CRC-shaped GET, so this tells when one was answered, not that X
        # checked us: alerts use catbot_webhook_valid and catbot_webhook_checked_*.
        self.last_crc = Gauge(
            "catbot_last_crc_timestamp_seconds",
            "Unix time of the last CRC challenge answered (from anyone: not proof that X "
            "checked the webhook)", registry=r,
        )
        self.signature_failures = Counter(
            "catbot_signature_failures", "Rejected webhook signatures by reason", ["reason"],
            registry=r,
        )
        self.events = Counter(
            "catbot_events", "Webhook events by kind and fate", ["kind", "fate"], registry=r
        )

    def _outbox(self, r: CollectorRegistry) -> None:
        self.decisions = Counter(
            "catbot_decisions", "What the bot decided for each DM", ["reason"], registry=r
        )
        self.dms_sent = Counter(
            "catbot_dms_sent",
            "Replies (DMs, and public replies to mentions) that ended, by outcome",
            ["outcome"], registry=r,
        )
        self.send_seconds = Histogram(
            "catbot_dm_send_seconds", "Latency of one DM send request to X",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.retries = Counter(
            "catbot_send_retries", "DM send retries by cause", ["cause"], registry=r
        )
        self.rate_limit_waits = Counter(
            "catbot_rate_limit_waits", "Times sending paused for a rate limit", ["source"],
            registry=r,
        )
        self.rate_limit_wait_seconds = Counter(
            "catbot_rate_limit_wait_seconds", "Seconds sending was paused by rate limits",
            registry=r,
        )
        # The same pauses by endpoint family (dm, post): X counts each family apart. New
        # names rather than a new label, so queries on the two above keep their meaning.
        self.rate_limit_family_waits = Counter(
            "catbot_rate_limit_family_waits",
            "Times sending paused for a rate limit, by endpoint family and source",
            ["family", "source"], registry=r,
        )
        self.parked_jobs = Counter(
            "catbot_parked_jobs",
            "Jobs handed back until their endpoint family's rate limit leaves room",
            ["family"], registry=r,
        )
        self.outbox_depth = Gauge(
            "catbot_outbox_depth", "Jobs waiting or in progress in the outbox", registry=r
        )
        self.dead_letters = Counter(
            "catbot_dead_letters", "Jobs given up as permanently failed", ["reason"], registry=r
        )
        self.event_to_reply = Histogram(
            "catbot_event_to_reply_seconds", "From the DM's creation at X to our reply accepted",
            buckets=_REPLY_BUCKETS, registry=r,
        )
        self.facts_served = Counter(
            "catbot_facts_served", "Facts served by source", ["source"], registry=r
        )
        self.workers_busy = Gauge(
            "catbot_workers_busy", "Outbox workers currently handling a job", registry=r
        )

    def _health(self, r: CollectorRegistry) -> None:
        self.ready = Gauge("catbot_ready", "1 when the daemon reports ready", registry=r)
        self.webhook_valid = Gauge(
            "catbot_webhook_valid",
            "1 when X last reported the webhook at CATBOT_PUBLIC_URL valid, 0 when not; "
            "NaN while unknown or not watched",
            registry=r,
        )
        # Unknown is not invalid: an alert on `== 0` must not fire before anyone looked.
        self.webhook_valid.set(float("nan"))
        self.webhook_checks = Counter(
            "catbot_webhook_checks",
            "Times the daemon asked X about the webhook at CATBOT_PUBLIC_URL, by outcome "
            "(valid, invalid, unregistered, error)", ["outcome"], registry=r,
        )
        # 0 until X first answered: an alert on its age also fires when nobody is watching.
        self.webhook_checked = Gauge(
            "catbot_webhook_checked_timestamp_seconds",
            "Unix time X's management API last told the daemon whether its webhook is valid",
            registry=r,
        )
        self.http_parse_errors = Counter(
            "catbot_http_parse_errors",
            "Requests that were not valid HTTP (refused with 400 before any handler), "
            "by listener (public, internal) and kind", ["listener", "kind"], registry=r,
        )

    def _xchat(self, r: CollectorRegistry) -> None:
        # Bounded: the reasons of catbot.xchat.errors, each shown from the start (0), so
        # an alert on a rate has a series to work on before the first failure.
        self.xchat_decrypt_failures = Counter(
            "catbot_xchat_decrypt_failures",
            "X Chat messages that could not be read, by reason (unverified: never answered)",
            ["reason"], registry=r,
        )
        for reason in DECRYPT_FAILURE_REASONS:
            self.xchat_decrypt_failures.labels(reason)
        self.xchat_key_recoveries = Counter(
            "catbot_xchat_key_recoveries",
            "Conversation keys looked for after a message arrived without a usable one, by "
            "where they were found (store, x) or not (missing)", ["source"], registry=r,
        )


@dataclass
class Health:
    """What `/readyz` reports: `check` returns a reason when not ready; `details` are
    informational facts shown either way (the last CRC, the webhook's validity)."""

    check: Callable[[], Awaitable[str | None]]
    details: Callable[[], dict[str, object]] = dict


def internal_app(metrics: Metrics, health: Health) -> web.Application:
    """The internal listener's app; never mounted on the public port."""

    async def metrics_view(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "application/openmetrics-text" in accept:
            body = generate_openmetrics(metrics.registry)  # type: ignore[no-untyped-call]
            content_type = OPENMETRICS_CONTENT_TYPE
        else:
            body = generate_latest(metrics.registry)
            content_type = TEXT_CONTENT_TYPE
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        try:
            problem = await health.check()
        except Exception as exc:  # the check itself failing means not ready
            problem = f"health check failed: {type(exc).__name__}"
        metrics.ready.set(0 if problem else 1)
        details = health.details()
        if problem:
            return web.json_response(
                {"status": "not ready", "reason": problem, **details}, status=503
            )
        return web.json_response({"status": "ready", **details})

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    return app
