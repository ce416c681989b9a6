"""Redis down or restarting: the webhook answers 503 (X retries), readiness fails, nothing
acknowledged is lost, and the daemon recovers by itself when Redis is back.

Redis runs with `appendonly yes` and `appendfsync always`, the README's settings for
"nothing acknowledged is lost", and is killed with SIGKILL, then started again on the same
port with the same data directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from catbot.models import InboundDM
from catbot.store import StoreError
from catbot.store.redis import RedisStore
from testkit.processes import BOT_ID, BotAndX, Daemon, Emulator, free_port, http, wait_for
from testkit.redis_server import RedisServer
from tests.test_e2e import dm_payload, sign

T0 = time.time()


def event(event_id: str, user: str = "42") -> InboundDM:
    return InboundDM(event_id, user, BOT_ID, BOT_ID, "hi", T0)


async def test_store_fails_fast_while_redis_is_down_and_recovers_without_reopening(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    store = RedisStore(server.url)
    await store.open()
    try:
        assert await store.enqueue([event("before")], T0) == [True]
        server.kill()

        started = time.monotonic()
        with pytest.raises(StoreError):
            await store.enqueue([event("during")], T0)
        with pytest.raises(StoreError):
            await store.check_writable()
        with pytest.raises(StoreError):
            await store.claim(T0, 30)
        with pytest.raises(StoreError):
            await store.ping()
        assert time.monotonic() - started < 5, "a down Redis must fail fast, not hang"

        server.start()  # same port, same directory: the AOF brings the data back
        await store.check_writable()
        assert await store.enqueue([event("before"), event("during")], T0) == [False, True]
        job = await store.claim(T0, 30)
        assert job is not None and job.event.event_id == "before"
        assert await store.complete(job, None)
    finally:
        await store.close()
        server.stop()


class OutageWorld(BotAndX):
    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.redis = RedisServer(tmp / "redis", appendfsync="always")
        self.emulator_port, port, metrics_port = free_port(), free_port(), free_port()
        self.redis.start()
        self.daemon = Daemon(tmp, self.emulator_port, port, metrics_port, {
            "CATBOT_STORE_URL": self.redis.url,
            "CATBOT_LEASE_SECONDS": "3",
            "CATBOT_WORKERS": "2",
            **(env or {}),
        })
        self.emulator = Emulator(tmp, self.emulator_port, self.daemon.webhook)

    def stop(self) -> None:
        super().stop()
        self.redis.stop()

    def logs(self) -> str:
        return self.daemon.output()[-8000:] + "\n" + self.redis.output()[-2000:]


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[OutageWorld]:
    with OutageWorld(tmp_path) as world:
        yield world


def readyz(world: OutageWorld) -> tuple[int, object]:
    status, body, _ = http("GET", world.daemon.internal + "/readyz")
    return status, body


def test_redis_outage_503_then_recovery_without_restart(outage: OutageWorld) -> None:
    emulator, daemon = outage.emulator, outage.daemon
    emulator.dm("100", "hello")
    wait_for(lambda: len(emulator.replies_to("100")) == 1, what="the first reply")

    # X refuses every DM for now, so acknowledged jobs stay queued (sent never, lost never).
    emulator.faults(dm_fail_next=100_000, dm_fail_status=503)
    users = [str(u) for u in range(201, 206)]
    for user in users:
        answer = emulator.dm(user, "a fact please")
        assert [d["status"] for d in answer["deliveries"]] == [200]

    outage.redis.kill()
    started = time.monotonic()
    down = emulator.dm("301", "are you there?")
    assert [d["status"] for d in down["deliveries"]] == [503]
    body = dm_payload("9301", "302", "direct")
    raw = json.dumps(body).encode()
    status, answer, _ = http("POST", daemon.webhook, raw=raw, headers={
        "Content-Type": "application/json", "x-twitter-webhooks-signature": sign(raw)})
    assert status == 503, answer
    status, ready = readyz(outage)
    assert status == 503 and "store" in str(ready)
    assert time.monotonic() - started < 10
    assert daemon.alive

    pid = daemon.proc.pid if daemon.proc else None
    outage.redis.start()
    wait_for(lambda: readyz(outage)[0] == 200, timeout=20, what="readiness after Redis is back")
    emulator.control("DELETE", "faults")
    # X retries the delivery it got a 503 for; this time it is stored.
    again = emulator.control("POST", "redeliver", {"event_id": down["event_id"]})
    assert [d["status"] for d in again["deliveries"]] == [200]

    for user in [*users, "301"]:
        wait_for(lambda u=user: len(emulator.replies_to(u)) >= 1, timeout=45,
                 what=f"the reply to {user} after the outage")
    time.sleep(1.0)
    assert {u: len(emulator.replies_to(u)) for u in [*users, "301", "100"]} == {
        u: 1 for u in [*users, "301", "100"]
    }
    assert emulator.replies_to("302") == []  # its delivery was refused, X would retry it
    assert daemon.alive and daemon.proc is not None and daemon.proc.pid == pid


def test_a_stalled_store_gets_a_503_within_the_store_timeout(tmp_path: Path) -> None:
    with OutageWorld(tmp_path, {"CATBOT_STORE_TIMEOUT_SECONDS": "0.5"}) as world:
        emulator = world.emulator
        emulator.dm("100", "hello")
        wait_for(lambda: len(emulator.replies_to("100")) == 1, what="the first reply")

        # Redis is up but takes no writes: the webhook must not hold X's request beyond the
        # store timeout, and must not acknowledge what it could not store.
        admin = redis.Redis.from_url(world.redis.url)
        admin.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
        try:
            started = time.monotonic()
            stalled = emulator.dm("301", "anyone there?")
            waited = time.monotonic() - started
            assert [d["status"] for d in stalled["deliveries"]] == [503]
            assert 0.5 <= waited < 3.0, waited
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()

        again = emulator.control("POST", "redeliver", {"event_id": stalled["event_id"]})
        # The stalled write went on once Redis took writes again, so X's retry is a duplicate
        # (or, had it not gone on, a new event): acknowledged either way, answered once.
        assert [d["status"] for d in again["deliveries"]] == [200]
        wait_for(lambda: len(emulator.replies_to("301")) == 1, timeout=20,
                 what="the reply after the stall")
        time.sleep(1.0)
        assert len(emulator.replies_to("301")) == 1
        assert world.daemon.alive
