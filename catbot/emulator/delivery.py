"""The emulator's outgoing HTTP: CRC challenges and signed event POSTs to webhooks.

One `aiohttp.ClientSession` serves all of it; the app's cleanup context opens and closes it.
Redirects are never followed: X treats a 3xx answer to a CRC as a failure.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import aiohttp
from yarl import URL

from catbot.emulator.state import EmulatorState
from catbot.emulator.state.registry import Webhook
from catbot.emulator.state.traffic import SignedBody
from catbot.signing import SIGNATURE_HEADER, crc_response_token

log = logging.getLogger("catbot.emulator.delivery")

_MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class DeliveryOutcome:
    url: str | None
    status: int | None
    error: str | None
    # False when nothing was POSTed (webhook deleted or invalid): not worth a redelivery.
    posted: bool = True
    # Held back to be sent later, shuffled (the `reorder_window` fault): no status yet.
    held: bool = False
    # A copy of a delivery sent as well (duplicate fault, round-robin `duplicate_every`).
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"url": self.url, "status": self.status, "error": self.error}
        if self.held:
            data["held"] = True
        if self.duplicate:
            data["duplicate"] = True
        return data


class CrcFailure(Enum):
    """Why a CRC failed, in the categories X's v1.1 error messages distinguish."""

    TIMEOUT = "timeout"  # "High latency on CRC GET request"
    STATUS = "status"  # "Non-200 response code during CRC GET request"
    RESPONSE = "response"  # "Invalid CRC token or json response format"
    CONNECTION = "connection"  # no HTTP answer at all


@dataclass(frozen=True)
class CrcOutcome:
    ok: bool
    status: int | None
    error: str | None
    failure: CrcFailure | None = None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Deliverer:
    def __init__(
        self,
        state: EmulatorState,
        consumer_secret: str,
        *,
        crc_timeout: float,
        delivery_timeout: float,
    ) -> None:
        self._state = state
        self._secret = consumer_secret
        self._crc_timeout = crc_timeout
        self._delivery_timeout = delivery_timeout
        self._session: aiohttp.ClientSession | None = None
        # One CRC at a time per webhook: a delivery waiting on a running CRC reuses its result.
        self._crc_locks: dict[str, asyncio.Lock] = {}

    async def open(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def crc_timeout(self) -> float:
        """The CRC answer deadline: the `crc_timeout` fault, else the configured one."""
        return self._state.faults.crc_timeout or self._crc_timeout

    @property
    def delivery_timeout(self) -> float:
        """How long a delivery may take before X gives up on it (and may redeliver)."""
        return self._state.faults.delivery_timeout or self._delivery_timeout

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the emulator's HTTP client is not open (app not started)")
        return self._session

    # --- CRC ---------------------------------------------------------------------------

    async def _challenge(self, url: str) -> CrcOutcome:
        token = secrets.token_urlsafe(24)
        expected = crc_response_token(self._secret, token)
        target = URL(url).update_query(crc_token=token)
        deadline = self.crc_timeout
        timeout = aiohttp.ClientTimeout(total=deadline)
        try:
            async with self.session.get(target, timeout=timeout, allow_redirects=False) as resp:
                raw = await resp.content.read(_MAX_ANSWER_BYTES)
                status, content_type = resp.status, resp.content_type
        except TimeoutError:
            return CrcOutcome(
                False,
                None,
                f"CRC got no answer within {deadline:g} s",
                CrcFailure.TIMEOUT,
            )
        except aiohttp.ClientError as exc:
            return CrcOutcome(
                False, None, f"CRC request failed: {_describe(exc)}", CrcFailure.CONNECTION
            )
        if status != 200:
            return CrcOutcome(
                False, status, f"CRC answered HTTP {status}, expected 200", CrcFailure.STATUS
            )
        bad = CrcFailure.RESPONSE
        if content_type != "application/json":
            return CrcOutcome(False, status, f"CRC answer has content type {content_type!r}", bad)
        try:
            answer = json.loads(raw)
        except ValueError:
            return CrcOutcome(False, status, "CRC answer is not JSON", bad)
        token_answer = answer.get("response_token") if isinstance(answer, dict) else None
        if not isinstance(token_answer, str):
            return CrcOutcome(False, status, "CRC answer has no response_token", bad)
        if not hmac.compare_digest(token_answer.encode(), expected.encode()):
            return CrcOutcome(False, status, "CRC response_token does not match", bad)
        return CrcOutcome(True, status, None)

    async def _counted_challenge(self, url: str) -> CrcOutcome:
        outcome = await self._challenge(url)
        self._state.stats.crc_checks += 1
        if not outcome.ok:
            self._state.stats.crc_failures += 1
        return outcome

    async def _run_crc(self, webhook: Webhook) -> CrcOutcome:
        outcome = await self._counted_challenge(webhook.url)
        # Start-up retries repeat the same failure every half second: log changes only.
        changed = (outcome.ok, outcome.error) != (webhook.valid, webhook.last_crc_error)
        self._state.webhooks.crc_checked(webhook, outcome.ok, outcome.status, outcome.error)
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "CRC webhook=%s ok=%s status=%s%s",
            webhook.id,
            outcome.ok,
            outcome.status,
            f" error={outcome.error}" if outcome.error else "",
        )
        return outcome

    async def crc(self, webhook: Webhook) -> CrcOutcome:
        """Challenge now (registration, re-validation); the result sets `valid`."""
        async with self._lock(webhook.id):
            return await self._run_crc(webhook)

    async def check_url(self, url: str) -> CrcOutcome:
        """Challenge a URL that is not registered yet (X validates before it registers)."""
        return await self._counted_challenge(url)

    async def ensure_valid(self, webhook: Webhook) -> bool:
        """One fresh CRC attempt for a webhook that is not valid; no-op when it is."""
        async with self._lock(webhook.id):
            if not webhook.valid:
                await self._run_crc(webhook)
            return webhook.valid

    async def deliverable(self, webhook: Webhook) -> bool:
        """Whether events may go to this webhook now.

        X's rule: an invalid webhook gets nothing until `PUT` revalidates it. The one
        exception is a start-up webhook that never passed a CRC (the daemon may start after
        the emulator): delivery gives it one more chance, so the first DM is not lost.
        """
        if webhook.valid:
            return True
        if not webhook.startup_pending:
            return False
        return await self.ensure_valid(webhook)

    async def validate_until_valid(self, webhook_id: str, interval: float, total: float) -> None:
        """Keep challenging a start-up webhook: the daemon may come up after the emulator."""
        deadline = time.monotonic() + total
        while True:
            webhook = self._state.webhooks.get(webhook_id)
            # Done once it passed: from then on only X's rules (periodic check, PUT) apply.
            if webhook is None or not webhook.startup_pending:
                return
            if await self.ensure_valid(webhook):
                return
            if time.monotonic() + interval > deadline:
                log.warning(
                    "webhook %s still invalid after %g s: %s",
                    webhook_id,
                    total,
                    webhook.invalid_reason,
                )
                return
            await asyncio.sleep(interval)

    def _lock(self, webhook_id: str) -> asyncio.Lock:
        return self._crc_locks.setdefault(webhook_id, asyncio.Lock())

    # --- deliveries --------------------------------------------------------------------

    async def post(self, url: str, body: bytes, signature: str | None) -> DeliveryOutcome:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        deadline = self.delivery_timeout
        timeout = aiohttp.ClientTimeout(total=deadline)
        self._state.stats.deliveries += 1
        try:
            async with self.session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.content.read(_MAX_ANSWER_BYTES)
                outcome = DeliveryOutcome(url, resp.status, None)
        except TimeoutError:
            self._state.stats.delivery_timeouts += 1
            outcome = DeliveryOutcome(url, None, f"no answer within {deadline:g} s")
        except aiohttp.ClientError as exc:
            outcome = DeliveryOutcome(url, None, _describe(exc))
        if not outcome.ok:
            self._state.stats.delivery_failures += 1
        return outcome

    async def send_one(
        self,
        signed: SignedBody,
        event_ids: Sequence[str],
        *,
        attempt: int = 0,
        duplicate: bool = False,
    ) -> DeliveryOutcome:
        """POST one body to its webhook if it may get events now; log the outcome."""
        webhook = self._state.webhooks.get(signed.webhook_id)
        latency_ms: float | None = None
        if webhook is None:
            outcome = DeliveryOutcome(
                None, None, f"webhook {signed.webhook_id} was deleted", posted=False
            )
        elif not await self.deliverable(webhook):
            outcome = DeliveryOutcome(
                webhook.url, None, f"webhook invalid: {webhook.invalid_reason}", posted=False
            )
        else:
            started = time.monotonic()
            outcome = await self.post(webhook.url, signed.body, signed.signature)
            latency_ms = round((time.monotonic() - started) * 1000, 1)
        if duplicate:
            outcome = replace(outcome, duplicate=True)
        self._state.traffic.log_delivery(
            {
                "at": time.time(),
                "event_ids": list(event_ids),
                **outcome.to_json(),
                "webhook_id": signed.webhook_id,
                "attempt": attempt,
                # How long the webhook took to answer (None: nothing was POSTed).
                "latency_ms": latency_ms,
            }
        )
        log.info(
            "delivery events=%s webhook=%s attempt=%d%s status=%s%s",
            ",".join(event_ids) or "-",
            signed.webhook_id,
            attempt,
            " (duplicate)" if duplicate else "",
            outcome.status,
            f" error={outcome.error}" if outcome.error else "",
        )
        return outcome
