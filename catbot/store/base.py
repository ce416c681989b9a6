"""The `Store` protocol: durable dedupe, the outbox queue and per-user state.

Every implementation gives the same guarantees (checked by one shared contract suite):
- `enqueue` dedupes by event id and queues a job in one atomic step;
- a job is claimed under a lease, at most one job per user at a time, oldest first, so a
  user's messages are answered in order and their state is never updated concurrently;
- `complete`/`release`/`dead_letter`/`save_reply` succeed only for the current claim (the
  token), and `complete` persists the user's new state in the same step as the ack;
- X Chat conversation keys are kept as the opaque sealed blobs they are given, one per
  conversation (secrets: no implementation logs them or puts them anywhere else);
- `shared_send_budget` says where each endpoint family's send budget is counted: in the
  store when several daemons send for the one bot account (X counts the account's sends),
  else nowhere (None): the one daemon counts its own sends in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol

from catbot.models import DeadLetter, InboundDM, Job, PendingJob, UserState


class StoreError(Exception):
    """The store cannot be opened or used."""


class SendSlots(Protocol):
    """Takes one send from a family's budget kept in a store that every replica shares."""

    def __call__(self, windows: Mapping[float, int]) -> Awaitable[float]:
        """`windows` maps a window length in seconds to the sends allowed in it. 0.0 when
        a send was taken, else the seconds until room may open (nothing taken)."""
        ...


class Store(Protocol):
    # True when one process owns the data (SQLite): it may hand back every claim at start-up.
    # False when several daemons share it (Redis): a replica must never take back the others'
    # claims; those return to the queue when their lease runs out.
    single_owner: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise when the store is unreachable."""

    async def check_writable(self) -> None:
        """Raise when the store cannot take writes (disk full, read-only, replica down)."""

    async def enqueue(
        self, events: Sequence[InboundDM], now: float, time_limit: float | None = None
    ) -> list[bool]:
        """Remember and queue each event; True for new ones, False for duplicates.

        With a `time_limit` (seconds), raises TimeoutError when the write has not completed
        within it (the events may still be stored: a retry then sees them as duplicates).
        """

    async def claim(self, now: float, lease_seconds: float) -> Job | None: ...

    async def extend(self, job: Job, now: float, lease_seconds: float) -> bool: ...

    async def complete(self, job: Job, state: UserState | None) -> bool:
        """Ack the job and save the user's state atomically; False if the lease was lost."""

    async def save_reply(self, job: Job, event: InboundDM) -> bool:
        """Store `event` (the job's event with its prepared reply) as the claimed job's event,
        so a later claim of this job gets it back; False if the lease was lost."""

    async def release(self, job: Job, not_before: float, error: str) -> bool:
        """Hand the job back, claimable again from `not_before`."""

    async def dead_letter(
        self, job: Job, reason: str, now: float, state: UserState | None
    ) -> bool: ...

    async def release_all_claims(self) -> int:
        """Hand back every claimed job; only for a store with a single owning process."""

    async def get_user(self, user_id: str) -> UserState: ...

    async def depth(self) -> int:
        """Jobs waiting or in progress."""

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""

    async def pending(self, limit: int = 100) -> list[PendingJob]:
        """Queued jobs, oldest first."""

    async def retry_dead_letters(self, event_ids: Sequence[str] | None, now: float) -> int:
        """Queue dead-lettered events again (all when `event_ids` is None); returns how many."""

    async def prune(self, seen_before: float) -> int:
        """Forget event ids seen before `seen_before` (dedupe window housekeeping)."""

    async def save_conversation_keys(self, sealed: Mapping[str, bytes]) -> None:
        """Keep each conversation's sealed X Chat key blob, replacing the one stored before."""

    async def load_conversation_keys(
        self, conversation_ids: Sequence[str] | None = None
    ) -> dict[str, bytes]:
        """The sealed blobs of the named conversations (all when None); unknown ids are
        left out."""

    def shared_send_budget(self, family: str) -> SendSlots | None:
        """Where the send budget of the endpoint `family` ("dm", "post", "xchat") is
        counted: a `SendSlots` on this store when replicas share it, None when this process
        is the store's only sender and counts its sends itself."""
