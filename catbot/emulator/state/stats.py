"""The counters `GET /_emulator/stats` shows: traffic, and every fault played."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Stats:
    dm_requests: int = 0
    dm_sent: int = 0
    dm_failed: int = 0
    dm_rate_limited: int = 0
    auth_failures: int = 0
    events_received: int = 0
    # Public posts: POST /2/tweets calls, posts created, refused ones; mentions played.
    post_requests: int = 0
    posts_created: int = 0
    post_failed: int = 0
    mentions_received: int = 0
    # X Chat: messages friends wrote to the bot (`/_emulator/xchat`); the bot's sends
    # (POST /2/chat/conversations/{id}/messages): calls, accepted, refused (429s apart),
    # answered 429, injected drops and permanent refusals.
    xchat_received: int = 0
    xchat_requests: int = 0
    xchat_sent: int = 0
    xchat_failed: int = 0
    xchat_rate_limited: int = 0
    xchat_dropped: int = 0
    xchat_forbidden: int = 0
    deliveries: int = 0
    delivery_failures: int = 0
    crc_checks: int = 0
    crc_failures: int = 0
    # Injected and emulated trouble.
    dm_dropped: int = 0
    dm_forbidden: int = 0
    latency_injected: int = 0
    delivery_timeouts: int = 0
    redeliveries: int = 0
    redeliveries_exhausted: int = 0
    duplicates_sent: int = 0
    deliveries_held: int = 0
    reorder_flushes: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    def clear(self) -> None:
        for name in self.to_json():
            setattr(self, name, 0)
