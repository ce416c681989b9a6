"""Turn events into signed deliveries, remember them for redelivery, and send them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from catbot.emulator.delivery import DeliveryOutcome
from catbot.emulator.payloads import Envelope, encode, envelopes_for
from catbot.emulator.runtime import Runtime
from catbot.emulator.state.messages import Message
from catbot.emulator.state.traffic import SignedBody
from catbot.signing import sign_body


def sign(runtime: Runtime, envelopes: Iterable[Envelope]) -> tuple[SignedBody, ...]:
    """Serialize and sign each envelope once: retries repeat these very bytes."""
    secret = runtime.config.consumer_secret
    signed = []
    for envelope in envelopes:
        body = encode(envelope.payload)
        signed.append(
            SignedBody(
                envelope.webhook_id,
                body,
                sign_body(secret, body),
                envelope.audience,
                envelope.event_ids,
            )
        )
    return tuple(signed)


async def deliver_envelopes(
    runtime: Runtime, envelopes: Iterable[Envelope], event_ids: Sequence[str]
) -> list[DeliveryOutcome]:
    """Sign, remember for `redeliver`, and deliver through the pipeline."""
    bodies = sign(runtime, envelopes)
    runtime.state.sent.remember(bodies)
    return await runtime.pipeline.deliver(bodies, event_ids)


async def dispatch(runtime: Runtime, messages: Sequence[Message]) -> list[DeliveryOutcome]:
    """Deliver a batch the way X does: an Account Activity subscriber gets one body with all
    its events, an X Activity API subscriber one body per event."""
    state = runtime.state
    envelopes = envelopes_for(messages, state.subscriptions.all(), state.users, runtime.app_info)
    return await deliver_envelopes(runtime, envelopes, [m.id for m in messages])


async def redeliver(runtime: Runtime, event_id: str) -> list[DeliveryOutcome] | None:
    """Send the very bytes that carried an event again, as X's retries do; None if unknown.

    Like any delivery it follows the delivery mode: in round-robin mode it goes to the next
    webhook in turn, which may be another replica than the one that got it first.
    """
    bodies = runtime.state.sent.carrying(event_id)
    if bodies is None:
        return None
    return await runtime.pipeline.deliver(bodies, [event_id])
