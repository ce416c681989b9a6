"""The webhook's request handlers: answer the CRC, verify, parse, store, acknowledge.

The POST handler only verifies and hands off: an event is acknowledged with 200 once it is
durably queued; replying happens in the outbox. Nothing slow runs inside the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from catbot.logs import get_logger
from catbot.models import InboundDM
from catbot.observability import Metrics
from catbot.signing import SIGNATURE_HEADER, crc_response_token
from catbot.store import Store
from catbot.webhook.events import parse_delivery
from catbot.webhook.signature import SignatureVerifier

log = get_logger("catbot.webhook")

# X's CRC tokens are short base64/url-safe strings. A JSON body can never match (it would
# start with "{"), which is what keeps the CRC from being a signing oracle for events.
CRC_TOKEN = re.compile(r"[A-Za-z0-9_+/=.~-]{1,256}")

# The acknowledgement body, encoded once (what web.json_response({"ok": True}) sends).
_OK_BODY = json.dumps({"ok": True}).encode()


@dataclass(frozen=True)
class WebhookPolicy:
    consumer_secret: str
    bot_user_id: str | None
    max_event_age_seconds: float
    max_body_bytes: int
    store_timeout_seconds: float = 5.0
    reply_to_mentions: bool = False
    body_timeout_seconds: float = 10.0
    # How far ahead of our clock an event's time may be: a time past it cannot be checked
    # for age (a stored "now + 1 year" would stay fresh all year), so it is refused.
    max_future_skew_seconds: float = 300.0
    # X Chat is on: `chat.received` is stored (as ciphertext) and answered.
    answer_xchat: bool = False


# Metric label of each kind of answerable event.
_KIND_LABEL = {"dm": "direct_message", "mention": "mention", "xchat": "chat"}


def classify(dm: InboundDM, policy: WebhookPolicy, now: float) -> str:
    """The fate of one parsed DM before storage: "accept", or why it is ignored."""
    own_ids = {dm.for_user_id}
    if policy.bot_user_id:
        own_ids.add(policy.bot_user_id)
    if dm.sender_id in own_ids:
        # The bot's own replies come back as events: answering them would loop forever.
        return "own"
    if policy.bot_user_id and dm.for_user_id != policy.bot_user_id:
        return "not_for_us"
    if now - dm.created_at > policy.max_event_age_seconds:
        return "stale"
    if dm.created_at - now > policy.max_future_skew_seconds:
        return "future"
    return "accept"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class WebhookHandler:
    def __init__(
        self,
        policy: WebhookPolicy,
        verifier: SignatureVerifier,
        store: Store,
        metrics: Metrics,
        on_enqueued: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.verifier = verifier
        self.store = store
        self.metrics = metrics
        self.on_enqueued = on_enqueued
        self.clock = clock
        self.accepting = True
        self.last_crc_at: float | None = None
        # Hot-path metric children, looked up once rather than per request.
        self._accepted = metrics.webhook_requests.labels("accepted")
        # Bound once: the per-event labels lookup shows in the ingest profile.
        self._stored = {
            (kind, is_new): metrics.events.labels(label, "enqueued" if is_new else "duplicate")
            for kind, label in _KIND_LABEL.items()
            for is_new in (True, False)
        }

    async def crc(self, request: web.Request) -> web.Response:
        token = request.query.get("crc_token")
        if not token:
            self.metrics.webhook_requests.labels("bad_request").inc()
            return _error(400, "missing crc_token query parameter")
        if not CRC_TOKEN.fullmatch(token):
            # The CRC answer is the same HMAC as a delivery signature: answering any token
            # would sign any body a stranger sends, so only X-shaped tokens get an answer.
            self.metrics.webhook_requests.labels("bad_request").inc()
            return _error(400, "crc_token is not a token X would send")
        self.metrics.webhook_requests.labels("crc").inc()
        self.metrics.crc_responses.inc()
        self.last_crc_at = self.clock()
        self.metrics.last_crc.set(self.last_crc_at)
        log.info("crc_answered")
        return web.json_response(
            {"response_token": crc_response_token(self.policy.consumer_secret, token)}
        )

    async def events(self, request: web.Request) -> web.Response:
        if not self.accepting:
            # Shutting down: X retries a 503, and our store stays consistent.
            self.metrics.webhook_requests.labels("unavailable").inc()
            return _error(503, "shutting down")
        length = request.content_length
        if length is not None and length > self.policy.max_body_bytes:
            self.metrics.webhook_requests.labels("too_large").inc()
            return _error(413, f"body larger than {self.policy.max_body_bytes} bytes")
        if hdrs.CONTENT_ENCODING in request.headers and not _identity(
            request.headers.getall(hdrs.CONTENT_ENCODING)
        ):
            # X signs and sends the raw JSON; a compressed body would have to be inflated
            # before anyone is authenticated. The listener does not decompress (app.py).
            self.metrics.webhook_requests.labels("unsupported_encoding").inc()
            return web.json_response(
                {"error": "Content-Encoding is not supported: send the body as is"},
                status=415, headers={hdrs.ACCEPT_ENCODING: "identity"},
            )
        try:
            if request.content.is_eof():
                # The whole body came in with the headers (the usual case): no timer to arm.
                body = await request.read()
            else:
                # A client trickling its body (slow-loris) must not hold the request forever.
                async with asyncio.timeout(self.policy.body_timeout_seconds):
                    body = await request.read()
        except TimeoutError:
            self.metrics.webhook_requests.labels("timeout").inc()
            return _error(408, "the request body took too long to arrive")
        except ConnectionError:
            # The client went away mid-body: nothing stored; the answer goes nowhere, but
            # returning one keeps aiohttp from logging a client's hang-up as our error.
            self.metrics.webhook_requests.labels("aborted").inc()
            return _error(400, "the client closed the connection mid-body")
        except web.HTTPRequestEntityTooLarge:
            self.metrics.webhook_requests.labels("too_large").inc()
            return _error(413, f"body larger than {self.policy.max_body_bytes} bytes")
        except (web.RequestPayloadError, HttpProcessingError):
            # A body that is not valid HTTP framing (a broken chunk): the client's fault.
            self.metrics.webhook_requests.labels("bad_body").inc()
            return _error(400, "the request body could not be read")

        verdict = self.verifier.verify(request.headers.get(SIGNATURE_HEADER), body)
        if not verdict.ok:
            self.metrics.signature_failures.labels(verdict.reason).inc()
            self.metrics.webhook_requests.labels("unauthorized").inc()
            log.warning("signature_rejected", reason=verdict.reason)
            return _error(401, "invalid or missing signature")

        try:
            # orjson: the body's parse was the largest single cost left in the ingest profile.
            delivery = parse_delivery(orjson.loads(body), xchat=self.policy.answer_xchat)
        except (ValueError, RecursionError):
            self.metrics.webhook_requests.labels("bad_json").inc()
            return _error(400, "body is not a JSON object")

        now = self.clock()
        accepted: list[InboundDM] = []
        for kind, fate in delivery.ignored:
            self.metrics.events.labels(kind, fate).inc()
        for dm in [*delivery.direct_messages, *delivery.mentions]:
            if dm.kind == "mention" and not self.policy.reply_to_mentions:
                fate = "mentions_off"
            else:
                fate = classify(dm, self.policy, now)
            if fate == "accept":
                accepted.append(dm)
            else:
                self.metrics.events.labels(_KIND_LABEL[dm.kind], fate).inc()
                log.info("event_ignored", event_id=dm.event_id, fate=fate)

        if accepted:
            try:
                # The store keeps the time limit: one timer for all waiting requests.
                fresh = await self.store.enqueue(
                    accepted, now, time_limit=self.policy.store_timeout_seconds
                )
            except Exception:
                # Not stored, so not acknowledged: X will deliver it again.
                log.exception("enqueue_failed", events=len(accepted))
                self.metrics.webhook_requests.labels("store_error").inc()
                return _error(503, "could not store the events, retry later")
            # Checked once: at WARNING the per-event line is not even built.
            logging_info = log.is_enabled_for(logging.INFO)
            for dm, is_new in zip(accepted, fresh, strict=True):
                self._stored[dm.kind, is_new].inc()
                if logging_info:
                    log.info("event_" + ("enqueued" if is_new else "duplicate"),
                             event_id=dm.event_id)
            if any(fresh):
                self.on_enqueued()

        self._accepted.inc()
        return web.Response(body=_OK_BODY, content_type="application/json", charset="utf-8")


def _identity(encodings: Sequence[str]) -> bool:
    """True when Content-Encoding (possibly repeated, comma-separated) names no coding."""
    codings = (c.strip().lower() for value in encodings for c in value.split(","))
    return all(c in ("", "identity") for c in codings)


def add_routes(app: web.Application, path: str, handler: WebhookHandler) -> None:
    app.router.add_get(path, handler.crc)
    app.router.add_post(path, handler.events)
