"""Nothing acknowledged is lost: crashes, shutdowns, a full or read-only disk, dead letters.

Real processes on loopback. Each friend sends one DM, so "answered" is simply "that friend
got a reply", and a duplicate is a second reply to the same friend.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from testkit.processes import (
    BOT_ID,
    CREDENTIALS,
    Daemon,
    Emulator,
    clean_env,
    free_port,
    http,
    wait_for,
)

WORKERS = 4
FAST_ENV = {
    "CATBOT_WORKERS": str(WORKERS),
    "CATBOT_DM_BUDGET_15MIN": "100000",
    "CATBOT_DM_BUDGET_24H": "100000",
    "CATBOT_LEASE_SECONDS": "3",
}


class Bench:
    def __init__(self, tmp: Path, db: Path | None = None, **env: str) -> None:
        self.tmp = tmp
        self.db = db or tmp / "catbot.db"
        self.ports = (free_port(), free_port())
        self.emulator = Emulator(
            tmp, free_port(), f"http://127.0.0.1:{self.ports[0]}/webhook/twitter",
            extra_args=["--dm-rate-limit", "100000"],
        )
        self.env = {**FAST_ENV, **env}
        self.daemon = self.new_daemon()

    def new_daemon(self) -> Daemon:
        return Daemon(self.tmp, self.emulator.port, *self.ports, self.env, db=self.db)

    def restart(self) -> None:
        self.daemon = self.new_daemon()
        self.daemon.start()

    def replies(self) -> Counter[str]:
        return Counter(m["recipient_id"] for m in self.emulator.messages()
                       if m["sender_id"] == BOT_ID)

    def send_all(self, users: list[str], threads: int = 8) -> dict[str, int | None]:
        """Each user DMs the bot once; returns each delivery's HTTP status (None: refused)."""
        def send(user: str) -> tuple[str, int | None]:
            answer = self.emulator.dm(user, f"hello from {user}")
            statuses = [d["status"] for d in answer["deliveries"]]
            return user, statuses[0] if statuses else None

        with ThreadPoolExecutor(threads) as pool:
            return dict(pool.map(send, users))

    def stop(self) -> None:
        self.daemon.stop()
        self.emulator.stop()
        print(self.daemon.output()[-3000:], self.emulator.output()[-2000:])


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path)
    b.daemon.start()
    b.emulator.start()
    b.emulator.wait_webhook_valid()
    yield b
    b.stop()


def redeliver_unacknowledged(bench: Bench, statuses: dict[str, int | None],
                             event_ids: dict[str, str]) -> None:
    """What X does: deliveries that did not get a 2xx are sent again."""
    for user, status in statuses.items():
        if status != 200:
            answer = bench.emulator.control("POST", "redeliver", {"event_id": event_ids[user]})
            assert answer["deliveries"][0]["status"] == 200


def test_kill_9_at_random_moments_during_a_burst_loses_nothing(bench: Bench) -> None:
    users = [str(10_000 + i) for i in range(500)]
    rng = random.Random(4)
    statuses: dict[str, int | None] = {}
    event_ids: dict[str, str] = {}
    kills = 3

    def send(user: str) -> None:
        answer = bench.emulator.dm(user, f"hello from {user}")
        event_ids[user] = answer["event_id"]
        statuses[user] = answer["deliveries"][0]["status"] if answer["deliveries"] else None

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, user) for user in users]
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.2))
            bench.daemon.signal(signal.SIGKILL)
            bench.daemon.wait(5)
            bench.restart()
        for future in futures:
            future.result()

    acknowledged = [u for u in users if statuses[u] == 200]
    assert len(acknowledged) < len(users), "the kills should have refused some deliveries"
    redeliver_unacknowledged(bench, statuses, event_ids)

    replies = wait_for(lambda: (r := bench.replies()) and len(r) == len(users) and r,
                       timeout=60, what="a reply to every friend")
    duplicates = sum(n - 1 for n in replies.values())
    print(f"acknowledged before redelivery: {len(acknowledged)}/{len(users)}, "
          f"duplicates: {duplicates} after {kills} kills")
    # At-least-once window: only jobs in flight at a kill can be sent twice.
    assert duplicates <= kills * WORKERS


def test_sigterm_during_a_burst_exits_in_grace_and_the_next_start_finishes(
    tmp_path: Path,
) -> None:
    bench = Bench(tmp_path, CATBOT_SHUTDOWN_GRACE_SECONDS="2")
    bench.daemon.start()
    bench.emulator.start()
    bench.emulator.wait_webhook_valid()
    try:
        bench.emulator.faults(dm_delay_seconds=0.3)  # X is slow: a backlog builds up
        users = [str(20_000 + i) for i in range(60)]
        statuses = bench.send_all(users)
        assert set(statuses.values()) == {200}
        time.sleep(0.5)
        started = time.monotonic()
        bench.daemon.signal(signal.SIGTERM)
        assert bench.daemon.wait(15) == 0
        took = time.monotonic() - started
        assert took < 2 + 3, f"shutdown took {took:.1f}s with a 2s grace"
        answered = len(bench.replies())
        assert answered < len(users), "the backlog should outlive the first process"

        bench.emulator.control("DELETE", "faults")
        bench.restart()
        replies = wait_for(lambda: (r := bench.replies()) and len(r) == len(users) and r,
                           timeout=30, what="the rest of the backlog")
        # A clean shutdown hands jobs back only after X answered or the grace ran out:
        # at most the replies in flight at that moment are sent twice.
        assert sum(n - 1 for n in replies.values()) <= WORKERS
    finally:
        bench.stop()


def catbot_cli(bench: Bench, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env({**CREDENTIALS, "CATBOT_STORE_URL": f"sqlite:///{bench.db}"})
    return subprocess.run(
        [sys.executable, "-m", "catbot", *args, "--env-file", str(bench.tmp / "none.env")],
        env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )


def test_outbox_command_shows_dead_letters_and_retries_them(bench: Bench) -> None:
    bench.emulator.faults(forbidden_recipients=["31337"])
    bench.emulator.dm("31337", "you cannot write to me")
    wait_for(lambda: bench.daemon.metrics().get(
        'catbot_dms_sent_total{outcome="dead_letter"}') == 1, what="the dead letter")

    dead = catbot_cli(bench, "outbox", "dead", "--json")
    assert dead.returncode == 0, dead.stderr
    [letter] = json.loads(dead.stdout)["dead_letters"]
    assert letter["user_id"] == "31337" and "349" in letter["reason"]
    human = catbot_cli(bench, "outbox", "dead")
    assert "349" in human.stdout and "31337" in human.stdout

    # X slows down: the next DM waits in the outbox, and the command shows it.
    bench.emulator.faults(dm_delay_seconds=3)
    bench.emulator.dm("31338", "slow one")
    pending = wait_for(
        lambda: json.loads(catbot_cli(bench, "outbox", "list", "--json").stdout)["pending"],
        what="a pending job",
    )
    assert [job["user_id"] for job in pending] == ["31338"]

    bench.emulator.control("DELETE", "faults")
    retried = catbot_cli(bench, "outbox", "retry", "--all", "--json")
    assert json.loads(retried.stdout) == {"requeued": 1}
    wait_for(lambda: bench.replies()["31337"] == 1, what="the retried reply")
    assert json.loads(catbot_cli(bench, "outbox", "dead", "--json").stdout) == {
        "dead_letters": []
    }
    assert catbot_cli(bench, "outbox", "retry").returncode == 2


def _mount_tmpfs(path: Path, size: str) -> None:
    assert os.geteuid() == 0, "this test mounts a small tmpfs: run it as root (CI does)"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)


def _fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def _ready(daemon: Daemon) -> tuple[int, Any]:
    status, body, _ = http("GET", daemon.internal + "/readyz")
    return status, body


def test_a_full_disk_answers_503_fails_readiness_and_recovers(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    # Roomy enough for SQLite's WAL to grow (up to ~4 MB before a checkpoint) after recovery.
    _mount_tmpfs(disk, "16m")
    bench = Bench(tmp_path, db=disk / "catbot.db")
    try:
        bench.daemon.start()
        bench.emulator.start()
        bench.emulator.wait_webhook_valid()
        bench.emulator.dm("555", "before")
        wait_for(lambda: bench.replies()["555"] == 1, what="a first reply")

        filler = _fill(disk)
        statuses = [bench.emulator.dm(str(600 + i), "x" * 2000)["deliveries"][0]["status"]
                    for i in range(40)]
        # Not acknowledged, so X retries: never a 200 for an event that was not stored.
        assert 503 in statuses and set(statuses) <= {200, 503}
        wait_for(lambda: _ready(bench.daemon)[0] == 503, what="readiness to fail")
        assert "store" in _ready(bench.daemon)[1]["reason"]
        refused = [str(600 + i) for i, s in enumerate(statuses) if s == 503]

        filler.unlink()
        wait_for(lambda: _ready(bench.daemon)[0] == 200, what="readiness to recover")
        for user in refused:  # X's retries
            bench.emulator.dm(user, "again")
        wait_for(lambda: all(bench.replies()[u] >= 1 for u in refused), timeout=30,
                 what="replies to the retried DMs")
    finally:
        bench.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_read_only_store_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    # A mount cannot turn read-only under an open SQLite file, so the check is at start-up.
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "16m")
    bench = Bench(tmp_path, db=disk / "catbot.db")
    try:
        bench.daemon.start()
        bench.daemon.stop()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        bench.daemon = bench.new_daemon()
        bench.daemon.start_process_only()
        assert bench.daemon.wait(20) == 1
        output = bench.daemon.output()
        assert "catbot cannot start" in output and str(disk) in output
        assert "Traceback" not in output
    finally:
        bench.emulator.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)
