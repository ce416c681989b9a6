"""The outbox: workers that turn stored jobs into replies at X, inside X's rate limits.

- `worker`: claim a job, let the brain decide, send, then ack, release or dead-letter.
- `xchat`: the X Chat side of a job (verify, decrypt, keep the encrypted reply for retries).
- `ratelimit`: one gate and send budget per endpoint family, shared by every worker.
"""

from __future__ import annotations

from catbot.outbox.worker import Outbox, OutboxSettings

__all__ = ["Outbox", "OutboxSettings"]
