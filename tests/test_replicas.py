"""Several daemon replicas on one Redis, as real processes on loopback.

The emulator plays X with three webhooks, one per replica, and spreads its deliveries over
them in turn (`round_robin`, like a load balancer in front of a Kubernetes Deployment); every
Nth delivery also goes to the next replica, so the same event reaches two replicas.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from testkit.processes import BOT_ID, Daemon, Emulator, free_port, wait_for
from testkit.redis_server import RedisServer

FAST_ENV = {
    "CATBOT_LOG_LEVEL": "INFO",
    "CATBOT_WORKERS": "4",
    "CATBOT_DAILY_CAP": "1000",
    "CATBOT_DM_BUDGET_15MIN": "100000",
    "CATBOT_DM_BUDGET_24H": "100000",
}


class Replicas:
    def __init__(self, tmp: Path, env: Mapping[str, str], emulator_args: list[str],
                 count: int = 3) -> None:
        self.redis = RedisServer(tmp / "redis").start()
        self.emulator_port = free_port()
        self.daemons = [
            Daemon(tmp, self.emulator_port, free_port(), free_port(),
                   {**FAST_ENV, "CATBOT_STORE_URL": self.redis.url, **env})
            for _ in range(count)
        ]
        hooks = [arg for d in self.daemons[1:] for arg in ("--webhook-url", d.webhook)]
        self.emulator = Emulator(
            tmp, self.emulator_port, self.daemons[0].webhook,
            extra_args=[*hooks, "--delivery-mode", "round_robin", "--dm-rate-limit", "100000",
                        *emulator_args],
        )

    def start(self) -> Replicas:
        with ThreadPoolExecutor(len(self.daemons)) as pool:
            list(pool.map(lambda d: d.start(), self.daemons))
        self.emulator.start()
        self.emulator.wait_webhook_valid()
        mode = self.emulator.control("GET", "delivery_mode")
        assert mode["mode"] == "round_robin" and len(mode["rotation"]) == len(self.daemons)
        return self

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.daemons)) as pool:
            list(pool.map(lambda d: d.stop(), self.daemons))
        self.emulator.stop()
        self.redis.stop()

    def output(self) -> str:
        return "\n".join(d.output()[-3000:] for d in self.daemons)

    def total(self, name: str, daemons: list[Daemon] | None = None) -> float:
        return sum(d.metrics().get(name, 0.0) for d in daemons or self.daemons)

    def replies(self) -> Counter[str]:
        return Counter(m["recipient_id"] for m in self.emulator.messages()
                       if m["sender_id"] == BOT_ID)

    def send_burst(self, messages: list[dict[str, str]], batch: int = 20,
                   threads: int = 4) -> None:
        batches = [messages[i:i + batch] for i in range(0, len(messages), batch)]

        def post(chunk: list[dict[str, str]]) -> None:
            self.emulator.control("POST", "dm_batch", {"messages": chunk})

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(post, batches))

    def pending_owners(self) -> list[str]:
        client = self.redis.client()
        try:
            rows = client.xpending_range("catbot:turns", "workers", "-", "+", 1000)
            return [str(row["consumer"]) for row in rows]
        finally:
            client.close()


def replica_world(tmp: Path, env: Mapping[str, str], emulator_args: list[str]
                  ) -> Iterator[Replicas]:
    world = Replicas(tmp, env, emulator_args).start()
    try:
        yield world
    finally:
        world.stop()
        print(world.output(), world.emulator.output()[-3000:])


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    yield from replica_world(tmp_path, {}, ["--duplicate-every", "7"])


def burst(users: int, per_user: int, first_user: int = 10_000) -> list[dict[str, str]]:
    """Messages interleaved user by user, so every batch mixes users."""
    return [{"sender_id": str(first_user + u), "text": f"fact {n} please"}
            for n in range(per_user) for u in range(users)]


def test_thousand_dms_from_fifty_users_get_exactly_a_thousand_replies(
    replicas: Replicas,
) -> None:
    messages = burst(users=50, per_user=20)
    started = time.monotonic()
    replicas.send_burst(messages)
    wait_for(lambda: sum(replicas.replies().values()) >= 1000, timeout=120, interval=0.5,
             what="1,000 replies")
    elapsed = time.monotonic() - started
    time.sleep(1.5)  # anything sent twice would show up now

    replies = replicas.replies()
    assert sum(replies.values()) == 1000
    assert set(replies.values()) == {20}
    # Per-user serialisation across replicas: each user's state (the facts already sent)
    # went from one reply to the next, so nobody got the same fact twice.
    for user in replies:
        texts = replicas.emulator.replies_to(user)
        assert len(set(texts)) == len(texts) == 20, user

    per_replica = [d.metrics() for d in replicas.daemons]
    enqueued = [m.get('catbot_events_total{fate="enqueued",kind="direct_message"}', 0)
                for m in per_replica]
    sent = [m.get('catbot_dms_sent_total{outcome="sent"}', 0) for m in per_replica]
    duplicates = sum(m.get('catbot_events_total{fate="duplicate",kind="direct_message"}', 0)
                     for m in per_replica)
    assert sum(enqueued) == 1000 and all(n > 0 for n in enqueued), enqueued
    assert sum(sent) == 1000 and all(n > 0 for n in sent), sent
    # Every 7th delivery also went to a second replica: those events were stored once.
    assert duplicates > 0
    print(f"1000 DMs answered by 3 replicas in {elapsed:.1f}s; enqueued {enqueued}, "
          f"sent {sent}, cross-replica duplicates dropped {duplicates:.0f}")


@pytest.fixture
def slow_x_replicas(tmp_path: Path) -> Iterator[Replicas]:
    yield from replica_world(
        tmp_path, {"CATBOT_LEASE_SECONDS": "3"},
        ["--duplicate-every", "5", "--redelivery-delays", "0.2,0.5,1,2"],
    )


def test_kill_9_replica_mid_burst_its_jobs_are_finished_by_the_others(
    slow_x_replicas: Replicas,
) -> None:
    world = slow_x_replicas
    world.emulator.faults(dm_delay_seconds=0.2)
    victim, survivors = world.daemons[0], world.daemons[1:]
    assert victim.proc is not None
    victim_consumer = re.compile(rf":{victim.proc.pid}:")
    messages = burst(users=30, per_user=8, first_user=20_000)

    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(world.send_burst, messages, 10, 2)
        # Mid-burst, while the victim holds claims, kill it without a chance to clean up.
        wait_for(lambda: sum(1 for c in world.pending_owners() if victim_consumer.search(c))
                 >= 2, timeout=30, interval=0.02, what="the victim to hold claims")
        victim.signal(signal.SIGKILL)
        victim.wait(5)
        killed_at = time.monotonic()
        orphaned = sum(1 for c in world.pending_owners() if victim_consumer.search(c))
        # The load balancer drops the dead endpoint; deliveries that failed meanwhile are
        # retried by X (the redelivery delays) and reach the other replicas.
        [hook] = [h for h in world.emulator.control("GET", "webhooks")["webhooks"]
                  if h["url"] == victim.webhook]
        world.emulator.control("DELETE", f"webhooks/{hook['id']}")
        sending.result(timeout=120)

    assert orphaned >= 1
    # The others take the orphaned turns over once the 3 s lease ran out, not before.
    wait_for(lambda: not any(victim_consumer.search(c) for c in world.pending_owners()),
             timeout=30, interval=0.1, what="the victim's claims to be taken over")
    taken_over_after = time.monotonic() - killed_at
    assert taken_over_after >= 1.5
    wait_for(lambda: all(world.replies()[str(20_000 + u)] >= 8 for u in range(30)),
             timeout=90, interval=0.5, what="every DM answered")
    time.sleep(1.0)
    replies = world.replies()
    total = sum(replies.values())
    # At least once: a reply X accepted just before the kill, but not yet acked, is sent
    # again by the replica that takes the job over; at most one per victim worker.
    assert 240 <= total <= 240 + 4, replies
    assert all(d.alive for d in survivors)
    print(f"victim held {orphaned} claims at kill -9; taken over after "
          f"{taken_over_after:.1f}s; {total} replies to 240 DMs")


@pytest.fixture
def limited_replicas(tmp_path: Path) -> Iterator[Replicas]:
    yield from replica_world(
        tmp_path,
        {"CATBOT_COOLDOWN_SECONDS": "60", "CATBOT_DM_BUDGET_15MIN": "6",
         "CATBOT_DM_BUDGET_24H": "100", "CATBOT_SHUTDOWN_GRACE_SECONDS": "1"},
        [],
    )


def test_cooldown_and_global_budget_hold_across_replicas(limited_replicas: Replicas) -> None:
    world = limited_replicas
    # One user writes three times; round robin hands each DM to another replica.
    for n in range(3):
        answer: Any = world.emulator.dm("30001", f"fact {n}?")
        assert [d["status"] for d in answer["deliveries"]] == [200]
    wait_for(lambda: world.total('catbot_decisions_total{reason="cooldown"}') == 2,
             what="two DMs held back by the cooldown")
    assert world.replies()["30001"] == 1

    # Ten more users: the budget of 6 DMs per 15 minutes is for the bot account, all
    # replicas together: 5 more replies, then everybody waits.
    for user in range(30010, 30020):
        world.emulator.dm(str(user), "hello")
    wait_for(lambda: sum(world.replies().values()) >= 6, what="six replies")
    wait_for(lambda: world.total('catbot_rate_limit_waits_total{source="budget"}') >= 1,
             what="a replica to wait for the shared budget")
    time.sleep(2.0)
    assert sum(world.replies().values()) == 6
    # All replicas together sent 6, not up to 6 each: the budget is shared.
    sent = [d.metrics().get('catbot_dms_sent_total{outcome="sent"}', 0)
            for d in world.daemons]
    assert sum(sent) == 6
