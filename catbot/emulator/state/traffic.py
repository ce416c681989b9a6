"""What went over the wire: X requests answered, deliveries made, and the signed bodies kept
so that a redelivery repeats the very bytes."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from catbot.emulator.state.common import ChangeFeed

# Bounded, so that a long soak cannot grow the emulator without end.
_DELIVERY_LOG_SIZE = 1_000
_REQUEST_LOG_SIZE = 5_000
_REMEMBERED_BODIES = 10_000


class TrafficLog:
    """X API requests (not the control API) and outgoing deliveries, oldest first."""

    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed
        self._requests: deque[dict[str, Any]] = deque(maxlen=_REQUEST_LOG_SIZE)
        self._deliveries: deque[dict[str, Any]] = deque(maxlen=_DELIVERY_LOG_SIZE)

    def log_request(self, entry: dict[str, Any]) -> None:
        self._requests.append(entry)

    def requests(
        self, route: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """The logged requests of one route class, arrived at or after `since` (None: any)."""
        return [
            entry
            for entry in self._requests
            if (route is None or entry["route"] == route)
            and (since is None or entry["at"] >= since)
        ]

    def log_delivery(self, entry: dict[str, Any]) -> None:
        self._deliveries.append(entry)
        self._feed.notify("delivery", entry)

    def deliveries(self, last: int | None = None) -> list[dict[str, Any]]:
        """Every logged delivery, or the `last` few."""
        entries = list(self._deliveries)
        return entries if last is None else entries[-last:]

    def clear(self) -> None:
        self._requests.clear()
        self._deliveries.clear()


@dataclass(frozen=True)
class SignedBody:
    """One delivery exactly as it went out, kept so that redelivery repeats the same bytes."""

    webhook_id: str
    body: bytes
    signature: str | None
    # Which subscriber this delivery is for (kind, event type, user): round-robin spreading
    # sends one delivery per audience, where "all" sends one per subscribed webhook.
    audience: str = ""
    # The events (DM ids, post ids) this body carries: what `redeliver` looks them up by.
    event_ids: tuple[str, ...] = ()


class SentBodies:
    """The bodies that carried each event, the newest events' only."""

    def __init__(self) -> None:
        self._by_event: OrderedDict[str, tuple[SignedBody, ...]] = OrderedDict()

    def remember(self, bodies: Iterable[SignedBody]) -> None:
        """Keep each body under every event it carries, so a redelivery repeats only those."""
        carried: dict[str, list[SignedBody]] = {}
        for body in bodies:
            for event_id in body.event_ids:
                carried.setdefault(event_id, []).append(body)
        for event_id, held in carried.items():
            self._by_event[event_id] = tuple(held)
        while len(self._by_event) > _REMEMBERED_BODIES:
            self._by_event.popitem(last=False)

    def carrying(self, event_id: str) -> tuple[SignedBody, ...] | None:
        return self._by_event.get(event_id)

    def clear(self) -> None:
        self._by_event.clear()
