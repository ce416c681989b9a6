"""Soak test: a long mixed load with faults and crashes; reports losses, duplicates, memory.

Not part of the test suite. Run it for as long as you like:

    .venv/bin/python -m bench.soak --minutes 10

It starts the X emulator and the daemon as real processes on loopback, then every second a
few friends DM the bot while X misbehaves in turns (slow, failing, rate-limiting, fine) and,
now and then, the daemon is killed with SIGKILL and restarted. Deliveries the daemon did not
acknowledge are sent again, as X does. At the end it waits for the outbox to drain and
compares, per friend, DMs sent with replies received:

- lost: a DM the daemon acknowledged (HTTP 200) that never got a reply;
- duplicates: replies beyond one per DM (the at-least-once window of a crash).

Resident memory of the daemon is sampled every 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from testkit.processes import BOT_ID, Daemon, Emulator, free_port, http, wait_for

SOAK_ENV = {
    "CATBOT_WORKERS": "4",
    "CATBOT_COOLDOWN_SECONDS": "0",
    "CATBOT_DAILY_CAP": "1000000",
    "CATBOT_DM_BUDGET_15MIN": "1000000",
    "CATBOT_DM_BUDGET_24H": "1000000",
    "CATBOT_LEASE_SECONDS": "5",
    "CATBOT_LOG_LEVEL": "WARNING",
    "CATBOT_RATE_LIMIT_DEFAULT_WAIT_SECONDS": "2",
}

# X's moods, a phase each: the emulator's fault settings.
PHASES: list[tuple[str, dict[str, Any]]] = [
    ("healthy", {}),
    ("slow", {"dm_delay_seconds": 0.5}),
    ("5xx burst", {"dm_fail_next": 30, "dm_fail_status": 503}),
    ("rate limited", {"dm_rate_limit_next": 3, "dm_rate_limit_reset_in": 3}),
    ("429 without headers", {"dm_rate_limit_next": 2, "dm_rate_limit_reset_in": None}),
    ("healthy", {}),
]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=8, help="DMs per second")
    parser.add_argument("--phase-seconds", type=float, default=30.0)
    parser.add_argument("--kill-every", type=float, default=90.0,
                        help="mean seconds between SIGKILLs of the daemon (0: never)")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="catbot-soak-") as tmpdir:
        tmp = Path(tmpdir)
        daemon_port, metrics_port, emulator_port = free_port(), free_port(), free_port()
        emulator = Emulator(tmp, emulator_port,
                            f"http://127.0.0.1:{daemon_port}/webhook/twitter",
                            extra_args=["--dm-rate-limit", "1000000"])
        env = dict(SOAK_ENV)

        def new_daemon() -> Daemon:
            return Daemon(tmp, emulator_port, daemon_port, metrics_port, env)

        current = [new_daemon()]
        current[0].start()
        emulator.start()
        emulator.wait_webhook_valid()

        sent: Counter[str] = Counter()
        unacknowledged: list[tuple[str, str]] = []
        acknowledged = 0
        kills = 0
        memory: list[tuple[float, int]] = []
        started = time.monotonic()
        deadline = started + args.minutes * 60
        next_sample = started
        stop_killing = threading.Event()

        def killer() -> None:
            # Crashes come while DMs are in flight: sends go on during the restart.
            nonlocal kills
            while not stop_killing.wait(rng.expovariate(1 / args.kill_every)):
                current[0].signal(signal.SIGKILL)
                current[0].wait(5)
                kills += 1
                current[0] = new_daemon()
                current[0].start()

        killer_thread = threading.Thread(target=killer, daemon=True)
        if args.kill_every:
            killer_thread.start()
        phase_index = -1

        def send(user: str) -> tuple[str, str, int | None]:
            answer = emulator.dm(user, "soak " + user)
            statuses = [d["status"] for d in answer["deliveries"]]
            return user, answer["event_id"], statuses[0] if statuses else None

        with ThreadPoolExecutor(8) as pool:
            while (now := time.monotonic()) < deadline:
                phase = int((now - started) // args.phase_seconds) % len(PHASES)
                if phase != phase_index:
                    phase_index = phase
                    emulator.control("DELETE", "faults")
                    if PHASES[phase][1]:
                        emulator.faults(**PHASES[phase][1])
                proc = current[0].proc
                if now >= next_sample and proc is not None and proc.poll() is None:
                    memory.append((now - started, rss_kb(proc.pid)))
                    next_sample = now + 10
                users = [str(100_000 + rng.randrange(args.users)) for _ in range(args.rate)]
                for user, event_id, status in pool.map(send, users):
                    sent[user] += 1
                    if status == 200:
                        acknowledged += 1
                    else:
                        unacknowledged.append((user, event_id))
                time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))

        stop_killing.set()
        if args.kill_every:
            killer_thread.join()
        emulator.control("DELETE", "faults")
        for user, event_id in unacknowledged:  # X's redeliveries
            status, _, _ = http("POST", f"{emulator.base}/_emulator/redeliver",
                                {"event_id": event_id})
            if status == 404:
                # Never delivered (the webhook was marked invalid meanwhile): the friend
                # sends it again.
                emulator.dm(user, "soak " + user)
        total = sum(sent.values())

        def replies() -> Counter[str]:
            return Counter(m["recipient_id"] for m in emulator.messages()
                           if m["sender_id"] == BOT_ID)

        with contextlib.suppress(AssertionError):
            wait_for(lambda: sum(min(replies()[u], n) for u, n in sent.items()) == total,
                     timeout=120, interval=1, what="the outbox to drain")
        got = replies()
        lost = sum(max(0, n - got[u]) for u, n in sent.items())
        duplicates = sum(max(0, got[u] - n) for u, n in sent.items())
        current[0].stop()
        emulator.stop()

    figures = {
        "minutes": args.minutes,
        "dms_sent": total,
        "acknowledged_first_time": acknowledged,
        "redelivered": len(unacknowledged),
        "kills": kills,
        "replies": sum(got.values()),
        "lost": lost,
        "duplicates": duplicates,
        "rss_kb_first": memory[0][1] if memory else None,
        "rss_kb_max": max(m for _, m in memory) if memory else None,
        "rss_kb_last": memory[-1][1] if memory else None,
        "rss_samples": memory,
    }
    for key, value in figures.items():
        if key != "rss_samples":
            print(f"{key:>26}: {value}")
    print("memory over time (s, RSS kB):",
          ", ".join(f"{t:.0f}:{kb}" for t, kb in memory[:: max(1, len(memory) // 12)]))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
