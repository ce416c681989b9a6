"""Plain domain records passed between the webhook, the store and the outbox."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True)
class InboundDM:
    """One message to the bot, as accepted by the webhook: a direct message, (kind
    "mention") a public post mentioning the bot, answered with a public reply to `tweet_id`,
    or (kind "xchat") an end-to-end encrypted X Chat message.

    An X Chat message has no `text` here: `xchat` holds the `chat.received` delivery as X
    sent it (ciphertext, key change, signature, conversation token), decrypted only in the
    worker's memory. `reply` is the encrypted answer once made (with the user state the
    decision leaves), so a retry resends the very same signed message."""

    event_id: str
    sender_id: str
    recipient_id: str
    for_user_id: str
    text: str
    created_at: float  # epoch seconds, from X's timestamp
    kind: str = "dm"  # "dm" or "mention"
    tweet_id: str | None = None
    xchat: dict[str, Any] | None = None
    reply: dict[str, Any] | None = None

    def to_json(self) -> str:
        """The stored form (both stores keep the same JSON)."""
        # The instance dict holds exactly the fields, in order: what asdict() gives for
        # these flat fields, without its recursive copy (which showed in the ingest profile).
        return orjson.dumps(vars(self)).decode()

    @classmethod
    def from_json(cls, payload: str | bytes) -> InboundDM:
        data = orjson.loads(payload)
        tweet_id = data.get("tweet_id")
        xchat = data.get("xchat")
        reply = data.get("reply")
        return cls(
            event_id=str(data["event_id"]),
            sender_id=str(data["sender_id"]),
            recipient_id=str(data["recipient_id"]),
            for_user_id=str(data["for_user_id"]),
            text=str(data["text"]),
            created_at=float(data["created_at"]),
            # Jobs stored before mentions existed are DMs.
            kind=str(data.get("kind", "dm")),
            tweet_id=None if tweet_id is None else str(tweet_id),
            # Rows stored before X Chat have neither.
            xchat=xchat if isinstance(xchat, dict) else None,
            reply=reply if isinstance(reply, dict) else None,
        )


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


@dataclass(frozen=True)
class UserState:
    """What the bot remembers of one user: opt-out, cooldown, daily count, facts seen."""

    user_id: str
    opted_out: bool = False
    last_fact_at: float | None = None
    day: str = ""
    replies_today: int = 0
    seen_facts: frozenset[str] = field(default_factory=frozenset)
