"""The webhook's request handlers: answer the CRC; for an event delivery, verify and hand off.

The POST handler deals with HTTP only: limits, the body's arrival, the signature. The verified
body goes to the ingest step (`catbot.webhook.ingest`), which queues it durably; the answer is
200 once it is stored, and replying happens in the outbox. Nothing slow runs in the request.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from catbot.logs import get_logger
from catbot.observability import Metrics
from catbot.signing import SIGNATURE_HEADER, crc_response_token
from catbot.webhook.ingest import Ingest, IngestResult
from catbot.webhook.signature import SignatureVerifier

if TYPE_CHECKING:
    from catbot.config import Settings

log = get_logger("catbot.webhook")

# X's CRC tokens are short base64/url-safe strings. A JSON body can never match (it would
# start with "{"), which is what keeps the CRC from being a signing oracle for events.
CRC_TOKEN = re.compile(r"[A-Za-z0-9_+/=.~-]{1,256}")

# The acknowledgement body, encoded once (what web.json_response({"ok": True}) sends).
_OK_BODY = json.dumps({"ok": True}).encode()


@dataclass(frozen=True)
class WebhookPolicy:
    """The HTTP side's limits, and the secret the CRC answer is computed with."""

    consumer_secret: str
    max_body_bytes: int
    body_timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        settings.require_credentials()
        assert settings.x_consumer_secret is not None  # require_credentials
        return cls(
            consumer_secret=settings.x_consumer_secret.get_secret_value(),
            max_body_bytes=settings.max_body_bytes,
            body_timeout_seconds=settings.body_timeout_seconds,
        )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class WebhookHandler:
    def __init__(
        self,
        policy: WebhookPolicy,
        verifier: SignatureVerifier,
        ingest: Ingest,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.verifier = verifier
        self.ingest = ingest
        self.metrics = metrics
        self.clock = clock
        self.accepting = True
        self.last_crc_at: float | None = None
        # Hot-path metric child, looked up once rather than per request.
        self._accepted = metrics.webhook_requests.labels(IngestResult.ACCEPTED.value)

    def stop_accepting(self) -> None:
        """Shutting down: from now on every delivery gets a 503, which X retries later."""
        self.accepting = False

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
        refused = self._refuse_headers(request)
        if refused is not None:
            return refused
        # Read here rather than in a helper: one coroutine less per delivery on the hot path.
        try:
            if request.content.is_eof():
                # The whole body came in with the headers (the usual case): no timer to arm.
                body = await request.read()
            else:
                # A client trickling its body (slow-loris) must not hold the request forever.
                async with asyncio.timeout(self.policy.body_timeout_seconds):
                    body = await request.read()
        except (TimeoutError, ConnectionError, web.HTTPRequestEntityTooLarge,
                web.RequestPayloadError, HttpProcessingError) as exc:
            return self._unreadable(exc)

        verdict = self.verifier.verify(request.headers.get(SIGNATURE_HEADER), body)
        if not verdict.ok:
            self.metrics.signature_failures.labels(verdict.reason).inc()
            self.metrics.webhook_requests.labels("unauthorized").inc()
            log.warning("signature_rejected", reason=verdict.reason)
            return _error(401, "invalid or missing signature")

        result = await self.ingest.accept(body, self.clock())
        if result is IngestResult.ACCEPTED:
            self._accepted.inc()
            return web.Response(body=_OK_BODY, content_type="application/json", charset="utf-8")
        self.metrics.webhook_requests.labels(result.value).inc()
        if result is IngestResult.MALFORMED:
            return _error(400, "body is not a JSON object")
        return _error(503, "could not store the events, retry later")

    def _refuse_headers(self, request: web.Request) -> web.Response | None:
        """The answer to a delivery its headers alone rule out, before any body is read."""
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
        return None

    def _unreadable(self, exc: Exception) -> web.Response:
        """The answer to a client that did not send its body in time or whole."""
        if isinstance(exc, TimeoutError):
            self.metrics.webhook_requests.labels("timeout").inc()
            return _error(408, "the request body took too long to arrive")
        if isinstance(exc, ConnectionError):
            # The client went away mid-body: nothing stored; the answer goes nowhere, but
            # returning one keeps aiohttp from logging a client's hang-up as our error.
            self.metrics.webhook_requests.labels("aborted").inc()
            return _error(400, "the client closed the connection mid-body")
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            self.metrics.webhook_requests.labels("too_large").inc()
            return _error(413, f"body larger than {self.policy.max_body_bytes} bytes")
        # A body that is not valid HTTP framing (a broken chunk): the client's fault.
        self.metrics.webhook_requests.labels("bad_body").inc()
        return _error(400, "the request body could not be read")


def _identity(encodings: Sequence[str]) -> bool:
    """True when Content-Encoding (possibly repeated, comma-separated) names no coding."""
    codings = (c.strip().lower() for value in encodings for c in value.split(","))
    return all(c in ("", "identity") for c in codings)


def add_routes(app: web.Application, path: str, handler: WebhookHandler) -> None:
    app.router.add_get(path, handler.crc)
    app.router.add_post(path, handler.events)
