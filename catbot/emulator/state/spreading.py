"""How each delivery spreads over several webhooks, and whose turn it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

# "all": every event to every valid subscribed webhook (X's behaviour). "round_robin": each
# delivery to one of them in turn, as a load balancer in front of replicas would.
DeliveryMode = Literal["all", "round_robin"]
DELIVERY_MODES: tuple[str, ...] = get_args(DeliveryMode)


@dataclass
class DeliverySpreading:
    mode: DeliveryMode = "all"
    duplicate_every: int = 0
    # Round-robin bookkeeping: the webhook that got the last delivery, deliveries planned.
    last_webhook_id: str | None = None
    planned: int = 0

    def configure(self, mode: DeliveryMode, duplicate_every: int) -> None:
        """A new setting counts its `duplicate_every` afresh; the turn goes on."""
        self.mode, self.duplicate_every = mode, duplicate_every
        self.planned = 0

    def forget_turn(self) -> None:
        self.last_webhook_id = None
        self.planned = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "duplicate_every": self.duplicate_every,
            "last_webhook_id": self.last_webhook_id,
            "planned": self.planned,
        }
