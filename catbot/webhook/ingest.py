"""The ingest step: what one verified delivery becomes in the store, and how it is counted.

The request handler (`routes`) deals with HTTP (limits, the body's arrival, the signature) and
hands the verified body here. `Ingest.accept` parses it, gives each event its fate
(`classify`), queues the answerable ones in one store call (dedupe and enqueue in one
transaction), counts every event in `catbot_events_total{kind,fate}` and wakes the outbox.
Its answer is only what the handler has to tell X: acknowledge, refuse the body, or retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import orjson

from catbot.logs import get_logger
from catbot.models import InboundDM
from catbot.observability import Metrics
from catbot.store import Store
from catbot.webhook.events import parse_delivery

if TYPE_CHECKING:
    from catbot.config import Settings

log = get_logger("catbot.webhook")

# Metric label of each kind of answerable event.
_KIND_LABEL = {"dm": "direct_message", "mention": "mention", "xchat": "chat"}


@dataclass(frozen=True)
class IngestPolicy:
    """Which events are answered, and how long the store may take to queue them."""

    bot_user_id: str | None
    max_event_age_seconds: float
    # How far ahead of our clock an event's time may be: a time past it cannot be checked
    # for age (a stored "now + 1 year" would stay fresh all year), so it is refused.
    max_future_skew_seconds: float = 300.0
    reply_to_mentions: bool = False
    # X Chat is on: `chat.received` is stored (as ciphertext) and answered.
    answer_xchat: bool = False
    store_timeout_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestPolicy:
        # `xchat_enabled` is enough: a configured key that cannot be used stops start-up
        # (`Settings.xchat_identity`) before any event is taken.
        return cls(
            bot_user_id=settings.bot_user_id,
            max_event_age_seconds=settings.max_event_age_seconds,
            max_future_skew_seconds=settings.max_future_skew_seconds,
            reply_to_mentions=settings.reply_to_mentions,
            answer_xchat=settings.xchat_enabled,
            store_timeout_seconds=settings.store_timeout_seconds,
        )


def classify(dm: InboundDM, policy: IngestPolicy, now: float) -> str:
    """The fate of one parsed event before storage: "accept", or why it is ignored."""
    if dm.kind == "mention" and not policy.reply_to_mentions:
        return "mentions_off"
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


class IngestResult(Enum):
    """What the handler tells X; the value is the request's `catbot_webhook_requests` label."""

    # Every event queued, found a duplicate or ignored: acknowledge (X must not resend).
    ACCEPTED = "accepted"
    # Not a JSON object: no event can be read from it.
    MALFORMED = "bad_json"
    # The store did not take the events, so they are not acknowledged: X delivers them again.
    STORE_FAILED = "store_error"


class Ingest:
    def __init__(
        self,
        policy: IngestPolicy,
        store: Store,
        metrics: Metrics,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.metrics = metrics
        self.on_enqueued = on_enqueued
        # Bound once: the per-event labels lookup shows in the ingest profile.
        self._stored = {
            (kind, is_new): metrics.events.labels(label, "enqueued" if is_new else "duplicate")
            for kind, label in _KIND_LABEL.items()
            for is_new in (True, False)
        }

    async def accept(self, body: bytes, now: float) -> IngestResult:
        """Parse a verified body and queue what it holds to answer, as of `now`."""
        try:
            # orjson: the body's parse was the largest single cost left in the ingest profile.
            delivery = parse_delivery(orjson.loads(body), xchat=self.policy.answer_xchat)
        except (ValueError, RecursionError):
            return IngestResult.MALFORMED
        for kind, fate in delivery.ignored:
            self.metrics.events.labels(kind, fate).inc()
        accepted = self._answerable([*delivery.direct_messages, *delivery.mentions], now)
        if not accepted:
            return IngestResult.ACCEPTED
        try:
            # The store keeps the time limit: one timer for all waiting requests.
            fresh = await self.store.enqueue(
                accepted, now, time_limit=self.policy.store_timeout_seconds
            )
        except Exception:
            log.exception("enqueue_failed", events=len(accepted))
            return IngestResult.STORE_FAILED
        # Checked once: at WARNING the per-event line is not even built.
        logging_info = log.is_enabled_for(logging.INFO)
        for dm, is_new in zip(accepted, fresh, strict=True):
            self._stored[dm.kind, is_new].inc()
            if logging_info:
                log.info("event_" + ("enqueued" if is_new else "duplicate"), event_id=dm.event_id)
        if any(fresh):
            self.on_enqueued()
        return IngestResult.ACCEPTED

    def _answerable(self, events: list[InboundDM], now: float) -> list[InboundDM]:
        """The events to queue; every other one counted and logged with its fate."""
        accepted: list[InboundDM] = []
        for dm in events:
            fate = classify(dm, self.policy, now)
            if fate == "accept":
                accepted.append(dm)
            else:
                self.metrics.events.labels(_KIND_LABEL[dm.kind], fate).inc()
                log.info("event_ignored", event_id=dm.event_id, fate=fate)
        return accepted
