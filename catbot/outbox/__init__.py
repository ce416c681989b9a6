"""The outbox: workers that turn stored jobs into replies at X, inside X's rate limits.

- `worker`: claim a job, let the brain decide, send, then ack, release or dead-letter.
- `xchat`: the X Chat side of a job (verify, decrypt, keep the encrypted reply for retries).
- `ratelimit`: one gate and send budget per endpoint family, shared by every worker.

`app` builds one `Outbox` from the settings, its `allowances_from` and, with X Chat on, an
`XChatSide`; the webhook only wakes it (`Outbox.notify`) after queueing a job.
"""

from __future__ import annotations

from catbot.outbox.ratelimit import allowances_from
from catbot.outbox.worker import Outbox, OutboxSettings
from catbot.outbox.xchat import XChatSide

__all__ = ["Outbox", "OutboxSettings", "XChatSide", "allowances_from"]
