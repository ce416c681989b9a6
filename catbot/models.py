"""Plain domain records passed between the webhook, the store and the outbox."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InboundDM:
    """One direct message sent to the bot, as accepted by the webhook."""

    event_id: str
    sender_id: str
    recipient_id: str
    for_user_id: str
    text: str
    created_at: float  # epoch seconds, from X's created_timestamp


@dataclass(frozen=True)
class Job:
    """A claimed unit of outbox work: answer `event`. `claim_token` proves the lease."""

    job_id: int
    event: InboundDM
    attempts: int
    claim_token: str
    enqueued_at: float


@dataclass(frozen=True)
class DeadLetter:
    event_id: str
    user_id: str
    reason: str
    failed_at: float


@dataclass(frozen=True)
class PendingJob:
    """A queued job as an operator sees it (no message text)."""

    event_id: str
    user_id: str
    attempts: int
    enqueued_at: float
    available_at: float
    claimed: bool
    last_error: str | None
