"""What every room shares: X-like ids, X's timestamp forms and the feed of changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# Told about changes as they happen (the chat page's live updates): a topic ("message",
# "post", "delivery", "webhooks", "xchat", "reset") and its JSON data. Called in the event
# loop; must not block.
Listener = Callable[[str, dict[str, Any]], None]

# Twitter's snowflake epoch, so generated ids look and sort like X's.
_SNOWFLAKE_EPOCH_MS = 1288834974657


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_timestamp(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class IdGenerator:
    """Snowflake-like numeric ids, strictly increasing even within one millisecond.

    One generator serves every room, so that no two things the emulator names (DMs, posts,
    webhooks, subscriptions, X Chat events) ever share an id, as on X.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        candidate = (now_ms() - _SNOWFLAKE_EPOCH_MS) << 22
        self._last = max(self._last + 1, candidate)
        return str(self._last)


class ChangeFeed:
    """Whoever listens (each open chat page) hears about every change as it happens."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def stop_listening(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def notify(self, topic: str, data: dict[str, Any]) -> None:
        """Tell every listener about a change; a failing listener is dropped."""
        for listener in list(self._listeners):
            try:
                listener(topic, data)
            except Exception:
                self.stop_listening(listener)
