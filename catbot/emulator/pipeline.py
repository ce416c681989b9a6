"""From signed bodies to webhook POSTs: spreading, injected duplicates, reordering, redelivery.

Every delivery the emulator makes (DM events, the bot's echoed replies, `redeliver`,
`deliver_raw`) goes through `DeliveryPipeline.deliver`:

1. Spreading (`/_emulator/delivery_mode`). "all" sends each body to its webhook, which is X's
   behaviour: every subscribed webhook gets the event. "round_robin" sends each audience's
   delivery (one subscriber's copy of the event) to ONE valid webhook, in turn, like a load
   balancer in front of replicas; with `duplicate_every` N, every Nth delivery also goes to
   the next webhook in turn.
2. Duplicates (`deliver_duplicates_ratio` fault): a delivery is sent twice, concurrently.
3. Reordering (`reorder_window` fault): deliveries are held back, then sent one after the
   other in a shuffled order `reorder_window` seconds after the first was held. The control
   API answers at once with `"held": true` and no status.
4. Redelivery, as X retries on paid tiers: a delivery that got no answer within the delivery
   timeout, no answer at all or a non-2xx one is posted again after each of the redelivery
   delays (`--redelivery-delays`, or the `redelivery_delays` fault) until one succeeds, in
   the background. In round-robin mode a retry goes to the next webhook in turn, as a load
   balancer would send it. The control API reports the first attempt only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from catbot.emulator.delivery import Deliverer, DeliveryOutcome
from catbot.emulator.state import EmulatorState
from catbot.emulator.state.traffic import SignedBody
from catbot.emulator.tasks import BackgroundTasks

log = logging.getLogger("catbot.emulator.delivery")


@dataclass(frozen=True)
class Target:
    body: SignedBody
    # The same audience's bodies for every webhook: where a round-robin retry may go.
    alternatives: tuple[SignedBody, ...]
    event_ids: tuple[str, ...]
    duplicate: bool = False


class DeliveryPipeline:
    def __init__(
        self,
        state: EmulatorState,
        deliverer: Deliverer,
        tasks: BackgroundTasks,
        redelivery_delays: Sequence[float] = (),
    ) -> None:
        self._state = state
        self._deliverer = deliverer
        self._tasks = tasks
        self._redelivery_delays = tuple(redelivery_delays)
        self._held: list[Target] = []
        self._flush_pending = False

    @property
    def redelivery_delays(self) -> tuple[float, ...]:
        override = self._state.faults.redelivery_delays
        return self._redelivery_delays if override is None else override

    async def deliver(
        self, bodies: Sequence[SignedBody], event_ids: Sequence[str] = ()
    ) -> list[DeliveryOutcome]:
        """Deliver as the mode and faults say; the first attempts' outcomes, in order."""
        targets = self._with_duplicates(await self._spread(bodies, tuple(event_ids)))
        window = self._state.faults.reorder_window
        if window > 0:
            return self._hold(targets, window)
        return list(await asyncio.gather(*(self._send(t) for t in targets)))

    # --- spreading ---------------------------------------------------------------------

    async def _spread(
        self, bodies: Sequence[SignedBody], event_ids: tuple[str, ...]
    ) -> list[Target]:
        spreading = self._state.spreading
        if spreading.mode == "all":
            return [Target(b, (b,), b.event_ids or event_ids) for b in bodies]
        audiences: dict[str, list[SignedBody]] = {}
        for body in bodies:
            audiences.setdefault(body.audience, []).append(body)
        targets: list[Target] = []
        for group in audiences.values():
            alternatives = tuple(group)
            primary = await self._next_in_turn(alternatives, spreading.last_webhook_id)
            if primary is None:
                continue
            spreading.last_webhook_id = primary.webhook_id
            spreading.planned += 1
            carried = primary.event_ids or event_ids
            targets.append(Target(primary, alternatives, carried))
            every = spreading.duplicate_every
            if every and spreading.planned % every == 0:
                second = await self._next_in_turn(
                    alternatives, primary.webhook_id, exclude=primary.webhook_id
                )
                if second is not None:
                    self._state.stats.duplicates_sent += 1
                    targets.append(Target(second, alternatives, carried, duplicate=True))
        return targets

    async def _next_in_turn(
        self, group: Sequence[SignedBody], after: str | None, exclude: str | None = None
    ) -> SignedBody | None:
        """The body for the first deliverable webhook after `after`, in registration order.

        With none deliverable: the first in turn (its send reports why), or None when
        looking for a second webhook (`exclude` set).
        """
        webhooks = self._state.webhooks
        order = webhooks.ids()
        known = [b for b in group if b.webhook_id in webhooks and b.webhook_id != exclude]
        if not known:
            return None if exclude is not None or not group else group[0]
        known.sort(key=lambda b: order.index(b.webhook_id))
        start = order.index(after) + 1 if after in order else 0
        rotated = [b for b in known if order.index(b.webhook_id) >= start] + [
            b for b in known if order.index(b.webhook_id) < start
        ]
        for body in rotated:
            webhook = webhooks.get(body.webhook_id)
            if webhook is not None and await self._deliverer.deliverable(webhook):
                return body
        return None if exclude is not None else rotated[0]

    # --- injected duplicates and reordering --------------------------------------------

    def _with_duplicates(self, targets: list[Target]) -> list[Target]:
        faults = self._state.faults
        if faults.deliver_duplicates_ratio <= 0:
            return targets
        result: list[Target] = []
        for target in targets:
            result.append(target)
            if faults.chance(faults.deliver_duplicates_ratio):
                self._state.stats.duplicates_sent += 1
                result.append(replace(target, duplicate=True))
        return result

    def _hold(self, targets: list[Target], window: float) -> list[DeliveryOutcome]:
        self._state.stats.deliveries_held += len(targets)
        self._held.extend(targets)
        if not self._flush_pending:
            self._flush_pending = True
            self._tasks.spawn(self._flush_after(window), name="reorder-flush")
        outcomes = []
        for target in targets:
            webhook = self._state.webhooks.get(target.body.webhook_id)
            url = webhook.url if webhook is not None else None
            outcomes.append(DeliveryOutcome(url, None, None, held=True, duplicate=target.duplicate))
        return outcomes

    def discard_held(self) -> int:
        """Forget deliveries held for reordering (`/_emulator/reset`); how many there were."""
        count, self._held = len(self._held), []
        return count

    async def _flush_after(self, window: float) -> None:
        await asyncio.sleep(window)
        batch, self._held = self._held, []
        self._flush_pending = False
        if not batch:
            return
        shuffled = list(batch)
        self._state.faults.rng.shuffle(shuffled)
        if len(shuffled) > 1 and shuffled == batch:
            shuffled = shuffled[1:] + shuffled[:1]  # reordered for sure
        self._state.stats.reorder_flushes += 1
        log.info("sending %d held deliveries, reordered", len(shuffled))
        for target in shuffled:
            await self._send(target)

    # --- sending and redelivery --------------------------------------------------------

    async def _send(self, target: Target) -> DeliveryOutcome:
        outcome = await self._deliverer.send_one(
            target.body, target.event_ids, duplicate=target.duplicate
        )
        delays = self.redelivery_delays
        if not outcome.ok and outcome.posted and delays:
            name = f"redeliver-{','.join(target.event_ids) or 'raw'}"
            self._tasks.spawn(self._redeliver(target, delays), name=name)
        return outcome

    async def _redeliver(self, target: Target, delays: tuple[float, ...]) -> None:
        spreading = self._state.spreading
        for attempt, delay in enumerate(delays, start=1):
            await asyncio.sleep(delay)
            body = target.body
            if spreading.mode == "round_robin" and len(target.alternatives) > 1:
                body = (
                    await self._next_in_turn(target.alternatives, spreading.last_webhook_id) or body
                )
                spreading.last_webhook_id = body.webhook_id
            self._state.stats.redeliveries += 1
            outcome = await self._deliverer.send_one(
                body, target.event_ids, attempt=attempt, duplicate=target.duplicate
            )
            if outcome.ok:
                return
        self._state.stats.redeliveries_exhausted += 1
        log.warning(
            "delivery of events=%s given up after %d redeliveries",
            ",".join(target.event_ids) or "-",
            len(delays),
        )
