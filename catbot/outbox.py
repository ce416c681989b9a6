"""Outbox workers: claim a job, decide the reply, send it, then ack, release or dead-letter.

At-least-once: a job is acked only after X accepted the DM. A worker that dies mid-job
leaves the claim to expire (or to be handed back at the next start-up), and another worker
answers it. While a worker holds a job it keeps extending the lease, so a long rate-limit
wait never lets a second worker send the same reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from catbot.brain import Action, Decision, Policy, decide, fact_length_budget, render
from catbot.facts import FactSource
from catbot.logs import get_logger
from catbot.models import InboundDM, Job
from catbot.observability import Metrics
from catbot.ratelimit import RateGate, SendBudget
from catbot.store import Store
from catbot.x.dm import (
    AppSendError,
    DMSender,
    PermanentSendError,
    RateLimited,
    SentDM,
    TransientSendError,
)

log = get_logger("catbot.outbox")


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


class Outbox:
    def __init__(
        self,
        store: Store,
        sender: DMSender,
        facts: FactSource,
        policy: Policy,
        metrics: Metrics,
        settings: OutboxSettings,
        gate: RateGate,
        budget: SendBudget,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sender = sender
        self.facts = facts
        self.policy = policy
        self.metrics = metrics
        self.settings = settings
        self.gate = gate
        self.budget = budget
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeups: list[asyncio.Event] = []
        self._stopping = asyncio.Event()
        self._busy = 0
        # Nothing is known yet of what X still allows (a restart may come mid-window): the
        # first send probes, and its headers size the rest.
        self.gate.require_probe()

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
        state = await self.store.get_user(event.sender_id)
        text = strip_mentions(event.text) if event.kind == "mention" else event.text
        decision = decide(text, state, self.clock(), self.policy)
        self.metrics.decisions.labels(decision.reason).inc()
        log.info("decided", event_id=event.event_id, reason=decision.reason)

        if not decision.replies:
            await self.store.complete(job, decision.state)
            return

        decision, fact_text = await self._with_fact(decision)
        text = render(decision, fact_text, self.policy)

        try:
            sent = await self.deliver(event, text)
        except PermanentSendError as exc:
            await self._dead_letter(job, decision, str(exc))
        except (TransientSendError, AppSendError) as exc:
            await self._requeue(job, exc)
        else:
            await self._complete(job, decision, sent)

    async def _with_fact(self, decision: Decision) -> tuple[Decision, str | None]:
        if decision.action is not Action.FACT:
            return decision, None
        fact, seen = await self.facts.fact_for(
            decision.state.seen_facts, fact_length_budget(self.policy),
            language=decision.language,
        )
        return replace(decision, state=replace(decision.state, seen_facts=seen)), fact.text

    async def _complete(self, job: Job, decision: Decision, sent: SentDM) -> None:
        if await self.store.complete(job, decision.state):
            self.metrics.dms_sent.labels("sent").inc()
            self.metrics.event_to_reply.observe(max(0.0, self.clock() - job.event.created_at))
            log.info("replied", event_id=job.event.event_id, dm_event_id=sent.dm_event_id,
                     action=decision.action.value)
        else:
            # Another worker took over after our lease lapsed; it will answer too.
            self.metrics.dms_sent.labels("lease_lost").inc()
            log.warning("ack_lost_lease", event_id=job.event.event_id)

    async def _dead_letter(self, job: Job, decision: Decision, reason: str) -> None:
        # Keep the new state even so: a STOP must stick although its confirmation failed.
        await self.store.dead_letter(job, reason, self.clock(), decision.state)
        self.metrics.dms_sent.labels("dead_letter").inc()
        self.metrics.dead_letters.labels(_reason_label(reason)).inc()
        log.warning("dead_lettered", event_id=job.event.event_id, reason=reason)

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
        """Send one DM: retry transient failures, wait out rate limits without counting."""
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
                        return await self._attempt(event, text)
            except RateLimited:
                # The gate is already closed; the loop waits at it, attempts start afresh.
                self.metrics.rate_limit_waits.labels("x_429").inc()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, event: InboundDM, text: str) -> SentDM:
        # The gate holds a slot for this request until it comes back: requests in flight
        # never outnumber what X said remains.
        is_probe, waited = await self.gate.acquire()
        passed = False
        reply_to = event.tweet_id if event.kind == "mention" and event.tweet_id else None
        spent = False
        sent: SentDM | None = None
        try:
            budget_wait = await self.budget.reserve()
            if budget_wait > 0:
                self.metrics.rate_limit_waits.labels("budget").inc()
            self.metrics.rate_limit_wait_seconds.inc(waited + budget_wait)
            started = time.perf_counter()
            # A public reply spends X's posting allowance, not the DM one the gate sizes.
            spent = reply_to is None
            try:
                if reply_to is not None:
                    sent = await self.sender.reply_to_post(reply_to, text)
                else:
                    sent = await self.sender.send(event.sender_id, text)
            except RateLimited as exc:
                # Close before reporting the probe, so no waiter slips through meanwhile.
                reset_at = exc.reset_at or (
                    self.clock() + self.settings.rate_limit_default_wait_seconds
                )
                self.gate.close(reset_at)
                log.warning("rate_limited", reset_in=round(reset_at - self.clock(), 1))
                raise
            finally:
                self.metrics.send_seconds.observe(time.perf_counter() - started)
            passed = True
        finally:
            dm_answer = sent if reply_to is None else None
            self.gate.release(
                is_probe,
                passed,
                remaining=dm_answer.remaining if dm_answer else None,
                reset_at=dm_answer.reset_at if dm_answer else None,
                spent=spent,
            )
        if sent.remaining == 0 and sent.reset_at is not None:
            # X says the window is used up: pause before it has to answer 429.
            self.gate.close(sent.reset_at)
            self.metrics.rate_limit_waits.labels("x_remaining").inc()
        return sent

    def _count_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        self.metrics.retries.labels(getattr(exc, "cause", "error")).inc()
        log.info("send_retry", attempt=state.attempt_number, error=str(exc))


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
