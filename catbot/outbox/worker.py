"""Outbox workers: claim a job, decide the reply, send it, then ack, release or dead-letter.

At-least-once: a job is acked only after X accepted the DM. A worker that dies mid-job
leaves the claim to expire (or to be handed back at the next start-up), and another worker
answers it. While a worker holds a job it keeps extending the lease, so a long rate-limit
wait never lets a second worker send the same reply.

Each reply goes out on an endpoint family (`family_of`: a DM, or a public post for a
mention) with its own allowance (`catbot.outbox.ratelimit`). A job whose family cannot send for
longer than `park_after_seconds` is handed back until it can ("parked") rather than held:
a worker waiting out a 15-minute posting limit would be a worker no DM can use.

X Chat jobs (kind "xchat") are read first (`catbot.outbox.xchat`: verify, decrypt, in memory
only), decided by the same brain on the decrypted text, and answered with an encrypted reply
on their own family. The reply is stored with the job before its first send, so every retry,
after a requeue, a park or a crash, resends the very same signed message and X sees one
`message_id`. A message that cannot be read is never answered: it is dead-lettered with the
reason (`xchat_unverified`, ...) and counted in `catbot_xchat_decrypt_failures_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from catbot.brain import (
    Action,
    Decision,
    Policy,
    decide,
    fact_length_budget,
    render,
)
from catbot.facts import FactSource
from catbot.logs import get_logger
from catbot.models import InboundDM, Job, UserState
from catbot.observability import Metrics
from catbot.outbox.ratelimit import DM, POST, XCHAT, Allowance, WaitTooLong
from catbot.outbox.xchat import PreparedReply, XChatSide
from catbot.store import Store
from catbot.textfit import Channel
from catbot.x.dm import (
    AppSendError,
    DMSender,
    PermanentSendError,
    RateLimited,
    SentDM,
    TransientSendError,
)
from catbot.xchat.errors import XChatError

if TYPE_CHECKING:
    from catbot.config import Settings

log = get_logger("catbot.outbox")


class _Accepted(Protocol):
    """What any send answers with: X's view of the family's window after it."""

    @property
    def remaining(self) -> int | None: ...

    @property
    def reset_at(self) -> float | None: ...


_Sent = TypeVar("_Sent", bound=_Accepted)


@dataclass(frozen=True)
class OutboxSettings:
    workers: int = 4
    lease_seconds: float = 30.0
    max_attempts: int = 5
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    rate_limit_default_wait_seconds: float = 60.0
    idle_poll_seconds: float = 1.0
    store_timeout_seconds: float = 5.0
    # A job whose retries ran out waits this long (times 2**attempts, capped) before its next try.
    requeue_base_seconds: float = 5.0
    requeue_max_seconds: float = 300.0
    # A job whose family has no room for longer than this is handed back until it has.
    park_after_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboxSettings:
        return cls(
            workers=settings.workers,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.send_max_attempts,
            retry_initial_seconds=settings.retry_initial_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            rate_limit_default_wait_seconds=settings.rate_limit_default_wait_seconds,
            store_timeout_seconds=settings.store_timeout_seconds,
        )


class Outbox:
    def __init__(
        self,
        store: Store,
        sender: DMSender,
        facts: FactSource,
        policy: Policy,
        metrics: Metrics,
        settings: OutboxSettings,
        allowances: Mapping[str, Allowance],
        clock: Callable[[], float] = time.time,
        xchat: XChatSide | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.facts = facts
        self.policy = policy
        self.metrics = metrics
        self.settings = settings
        # One per endpoint family the bot sends on; a job's family must be among them.
        self.allowances = dict(allowances)
        self.clock = clock
        # None while X Chat is off: its jobs (queued while it was on) are dead-lettered.
        self.xchat = xchat
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeups: list[asyncio.Event] = []
        self._stopping = asyncio.Event()
        self._busy = 0
        # Nothing is known yet of what X still allows (a restart may come mid-window): the
        # first send of each family probes, and its headers size the rest.
        for allowance in self.allowances.values():
            allowance.gate.require_probe()

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        for index in range(self.settings.workers):
            wakeup = asyncio.Event()
            self._wakeups.append(wakeup)
            self._tasks.append(asyncio.create_task(self._worker(index, wakeup)))

    @property
    def running(self) -> bool:
        return bool(self._tasks) and all(not task.done() for task in self._tasks)

    def notify(self) -> None:
        """New jobs are in the store: wake idle workers now rather than at the next poll."""
        for wakeup in self._wakeups:
            wakeup.set()

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming; let jobs in hand finish within the grace period, then hand back."""
        self._stopping.set()
        self.notify()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # Work loop ----------------------------------------------------------------------------

    async def _worker(self, index: int, wakeup: asyncio.Event) -> None:
        while not self._stopping.is_set():
            wakeup.clear()
            try:
                # Bounded: a hung store must not freeze the worker (a claim that lands late
                # is only a lease, which expires).
                job = await asyncio.wait_for(
                    self.store.claim(self.clock(), self.settings.lease_seconds),
                    self.settings.store_timeout_seconds,
                )
            except Exception:
                log.exception("claim_failed", worker=index)
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self.settings.idle_poll_seconds)
                continue
            self._busy += 1
            self.metrics.workers_busy.set(self._busy)
            try:
                await self.handle(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never let one bad job kill the worker; its lease expiry brings it back.
                log.exception("job_crashed", event_id=job.event.event_id)
            finally:
                self._busy -= 1
                self.metrics.workers_busy.set(self._busy)

    async def handle(self, job: Job) -> None:
        keeper = asyncio.create_task(self._keep_lease(job))
        try:
            await self._handle(job)
        except asyncio.CancelledError:
            # Shutdown past the grace period: give the job back for the next run.
            await asyncio.shield(self.store.release(job, self.clock(), "shutdown"))
            log.info("job_handed_back", event_id=job.event.event_id)
            raise
        finally:
            keeper.cancel()

    async def _keep_lease(self, job: Job) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                extended = await self.store.extend(job, self.clock(), self.settings.lease_seconds)
            except Exception:
                # The store hiccuped: try again next round, the lease has slack for that.
                log.exception("lease_extend_failed", event_id=job.event.event_id)
                continue
            if not extended:
                log.warning("lease_lost", event_id=job.event.event_id)
                return

    async def _handle(self, job: Job) -> None:
        event = job.event
        if event.kind == "xchat":
            await self._handle_xchat(job)
            return
        state = await self.store.get_user(event.sender_id)
        text = strip_mentions(event.text) if event.kind == "mention" else event.text
        decision = self._decide(event, text, state)

        if not decision.replies:
            await self.store.complete(job, decision.state)
            return

        channel = family_of(event)
        decision, fact_text = await self._with_fact(decision, channel)
        text = render(decision, fact_text, self.policy, channel)

        try:
            sent = await self.deliver(event, text)
        except WaitTooLong as exc:
            # Nothing is saved: the job comes back as it was and is decided afresh then.
            await self._park(job, channel, exc.until)
        except PermanentSendError as exc:
            await self._dead_letter(job, decision.state, str(exc))
        except (TransientSendError, AppSendError) as exc:
            await self._requeue(job, exc)
        else:
            await self._complete(job, decision.state, decision.action, sent.dm_event_id)

    def _decide(self, event: InboundDM, text: str, state: UserState) -> Decision:
        decision = decide(text, state, self.clock(), self.policy)
        self.metrics.decisions.labels(decision.reason).inc()
        log.info("decided", event_id=event.event_id, reason=decision.reason)
        return decision

    # X Chat -------------------------------------------------------------------------------

    async def _handle_xchat(self, job: Job) -> None:
        side = self.xchat
        if side is None:
            await self._dead_letter(
                job, None, "xchat_off: X Chat is not configured (CATBOT_XCHAT_PRIVATE_KEY, "
                "CATBOT_XCHAT_KEY_VERSION); `catbot outbox retry` once it is")
            return
        try:
            prepared = (PreparedReply.from_json(job.event.reply) if job.event.reply
                        else await self._prepare_xchat(job, side))
        except XChatError as exc:
            await self._unreadable(job, exc)
            return
        except RateLimited as exc:
            # Looking up keys is not a send: no gate to close, the job waits for the reset.
            until = exc.reset_at or self.clock() + self.settings.rate_limit_default_wait_seconds
            await self.store.release(job, until, f"X Chat key lookup rate limited: {exc}")
            log.warning("xchat_keys_rate_limited", event_id=job.event.event_id,
                        retry_in=round(until - self.clock(), 1))
            return
        except PermanentSendError as exc:
            await self._dead_letter(job, None, f"xchat_keys: {exc}")
            return
        except (TransientSendError, AppSendError) as exc:
            await self._requeue(job, exc)
            return
        if prepared is None:
            return  # decided without a reply: already completed
        if job.event.reply is None:
            stored = replace(job.event, reply=prepared.to_json())
            if not await self.store.save_reply(job, stored):
                # Another worker has the job now: it reads and answers it itself.
                self.metrics.dms_sent.labels("lease_lost").inc()
                log.warning("reply_save_lost_lease", event_id=job.event.event_id)
                return
            job = replace(job, event=stored)
            log.info("xchat_reply_prepared", event_id=job.event.event_id,
                     message_id=prepared.payload.message_id)

        client = side.client
        try:
            await self._deliver(XCHAT, lambda: client.send_message(prepared.payload))
        except WaitTooLong as exc:
            # The encrypted reply stays with the job: the same message goes out later.
            await self._park(job, XCHAT, exc.until)
        except PermanentSendError as exc:
            # X refused this very message: a retry from the dead letters decides afresh.
            await self._dead_letter(replace(job, event=replace(job.event, reply=None)),
                                    prepared.state, f"xchat_refused: {exc}")
        except (TransientSendError, AppSendError) as exc:
            await self._requeue(job, exc)
        else:
            await self._complete(job, prepared.state, prepared.action,
                                 prepared.payload.message_id)

    async def _prepare_xchat(self, job: Job, side: XChatSide) -> PreparedReply | None:
        """Read, decide, encrypt. None when the decision sends nothing (the job is done)."""
        delivery = side.delivery_of(job.event)
        message = await side.read(delivery)
        state = await self.store.get_user(job.event.sender_id)
        # The brain sees what the friend wrote, as it sees a DM's text; it lives only here.
        decision = self._decide(job.event, message.text, state)
        if not decision.replies:
            await self.store.complete(job, decision.state)
            return None
        # X Chat has no length of its own on X's pages: the DM channel's limits.
        decision, fact_text = await self._with_fact(decision, DM)
        text = render(decision, fact_text, self.policy, DM)
        payload = side.crypto.encrypt_reply(
            message.conversation_id, text, conversation_token=delivery.conversation_token
        )
        return PreparedReply(payload, decision.state, decision.action)

    async def _unreadable(self, job: Job, exc: XChatError) -> None:
        self.metrics.xchat_decrypt_failures.labels(exc.reason).inc()
        if exc.reason == "not_a_message":
            # A verified reaction, edit or key change: nothing to answer, nothing wrong.
            await self.store.complete(job, None)
            log.info("xchat_not_a_message", event_id=job.event.event_id)
            return
        # Never answered: a message that does not verify is not provably the sender's.
        await self._dead_letter(job, None, f"xchat_{exc.reason}: {exc}")

    async def _with_fact(
        self, decision: Decision, channel: Channel
    ) -> tuple[Decision, str | None]:
        if decision.action is not Action.FACT:
            return decision, None
        fact, seen = await self.facts.fact_for(
            decision.state.seen_facts, fact_length_budget(self.policy, channel),
            language=decision.language,
        )
        return replace(decision, state=replace(decision.state, seen_facts=seen)), fact.text

    async def _complete(
        self, job: Job, state: UserState, action: Action, sent_id: str | None
    ) -> None:
        if await self.store.complete(job, state):
            self.metrics.dms_sent.labels("sent").inc()
            self.metrics.event_to_reply.observe(max(0.0, self.clock() - job.event.created_at))
            log.info("replied", event_id=job.event.event_id, dm_event_id=sent_id,
                     action=action.value)
        else:
            # Another worker took over after our lease lapsed; it will answer too.
            self.metrics.dms_sent.labels("lease_lost").inc()
            log.warning("ack_lost_lease", event_id=job.event.event_id)

    async def _dead_letter(self, job: Job, state: UserState | None, reason: str) -> None:
        # Keep the new state even so: a STOP must stick although its confirmation failed.
        await self.store.dead_letter(job, reason, self.clock(), state)
        self.metrics.dms_sent.labels("dead_letter").inc()
        self.metrics.dead_letters.labels(_reason_label(reason)).inc()
        log.warning("dead_lettered", event_id=job.event.event_id, reason=reason)

    async def _park(self, job: Job, family: str, until: float) -> None:
        now = self.clock()
        await self.store.release(job, until, f"{family} rate limit: waiting for room")
        self.metrics.parked_jobs.labels(family).inc()
        # Still a pause for a rate limit, counted when it starts since no worker sits it out.
        self.metrics.rate_limit_wait_seconds.inc(max(0.0, until - now))
        log.info("parked", event_id=job.event.event_id, family=family,
                 retry_in=round(until - now, 1))

    async def _requeue(self, job: Job, exc: Exception) -> None:
        delay = min(
            self.settings.requeue_max_seconds,
            self.settings.requeue_base_seconds * 2 ** max(0, job.attempts - 1),
        )
        await self.store.release(job, self.clock() + delay, str(exc))
        self.metrics.dms_sent.labels("requeued").inc()
        log.warning("requeued", event_id=job.event.event_id, error=str(exc), retry_in=delay)

    # Sending ------------------------------------------------------------------------------

    async def deliver(self, event: InboundDM, text: str) -> SentDM:
        """Send one reply: retry transient failures, wait out short rate limits without
        counting; `WaitTooLong` when its family has no room for `park_after_seconds`."""
        family = family_of(event)
        tweet_id = event.tweet_id
        if family == POST and tweet_id is not None:
            return await self._deliver(family, lambda: self.sender.reply_to_post(tweet_id, text))
        return await self._deliver(family, lambda: self.sender.send(event.sender_id, text))

    async def _deliver(self, family: str, send: Callable[[], Awaitable[_Sent]]) -> _Sent:
        """`send` on `family`'s allowance, with the retries and waits of `deliver`. `send`
        makes the same request each time (an X Chat resend is the same signed message)."""
        allowance = self.allowances[family]
        while True:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.settings.max_attempts),
                wait=wait_random_exponential(
                    multiplier=self.settings.retry_initial_seconds,
                    max=self.settings.retry_max_seconds,
                ),
                retry=retry_if_exception_type(TransientSendError),
                before_sleep=self._count_retry,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        return await self._attempt(family, allowance, send)
            except RateLimited:
                # The gate is already closed; the loop waits at it (or parks the job),
                # attempts start afresh.
                self._count_wait(family, "x_429")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, family: str, allowance: Allowance, send: Callable[[], Awaitable[_Sent]]
    ) -> _Sent:
        gate = allowance.gate
        max_wait = self.settings.park_after_seconds
        # The gate holds a slot for this request until it comes back: requests in flight
        # never outnumber what X said remains.
        is_probe, waited = await gate.acquire(max_wait)
        passed = False
        spent = False
        sent: _Sent | None = None
        try:
            try:
                budget_wait = await allowance.budget.reserve(max_wait)
            except WaitTooLong:
                self._count_wait(family, "budget")
                raise
            if budget_wait > 0:
                self._count_wait(family, "budget")
            self.metrics.rate_limit_wait_seconds.inc(waited + budget_wait)
            started = time.perf_counter()
            spent = True
            try:
                sent = await send()
            except RateLimited as exc:
                # Close before reporting the probe, so no waiter slips through meanwhile.
                reset_at = exc.reset_at or (
                    self.clock() + self.settings.rate_limit_default_wait_seconds
                )
                gate.close(reset_at)
                log.warning("rate_limited", family=family,
                            reset_in=round(reset_at - self.clock(), 1))
                raise
            finally:
                self.metrics.send_seconds.observe(time.perf_counter() - started)
            passed = True
        finally:
            # The answer's x-rate-limit-* headers are about this family's route alone.
            gate.release(
                is_probe,
                passed,
                remaining=sent.remaining if sent else None,
                reset_at=sent.reset_at if sent else None,
                spent=spent,
            )
        if sent.remaining == 0 and sent.reset_at is not None:
            # X says the window is used up: pause before it has to answer 429.
            gate.close(sent.reset_at)
            self._count_wait(family, "x_remaining")
        return sent

    def _count_wait(self, family: str, source: str) -> None:
        self.metrics.rate_limit_waits.labels(source).inc()
        self.metrics.rate_limit_family_waits.labels(family, source).inc()

    def _count_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        self.metrics.retries.labels(getattr(exc, "cause", "error")).inc()
        log.info("send_retry", attempt=state.attempt_number, error=str(exc))


def family_of(event: InboundDM) -> Channel:
    """The endpoint family a reply to `event` goes out on: a post for a mention (a public
    reply), a DM otherwise."""
    return POST if event.kind == "mention" and event.tweet_id else DM


def strip_mentions(text: str) -> str:
    """A post's words without the @handles in front ("@catbot stop" is the command stop)."""
    return _LEADING_MENTIONS.sub("", text)


_LEADING_MENTIONS = re.compile(r"^(?:\s*@\w+)+\s*")


def _reason_label(reason: str) -> str:
    """A bounded metric label from a dead-letter reason ("HTTP 403: code 349: ...")."""
    parts = reason.split(": ")
    label = parts[0].lower().replace(" ", "_")
    if len(parts) > 1 and parts[1].startswith("code "):
        label += "_code_" + parts[1].removeprefix("code ").split(",")[0]
    return label[:40]
