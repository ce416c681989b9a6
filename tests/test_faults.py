"""The daemon under X's failures, played by the emulator: real processes on loopback.

Each friend sends one DM, so "answered exactly once" is "that friend got one reply". What X
saw is read from the emulator's request log (`/_emulator/requests`: arrival and answer times,
statuses, outcomes) and its delivery log; what the daemon did, from its `/metrics`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import signal
import statistics
import threading
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
    WEBHOOK_PATH,
    BotAndX,
    Daemon,
    Emulator,
    free_port,
    wait_for,
)

WORKERS = 4
SECRET = CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]
FAST_ENV = {
    "CATBOT_WORKERS": str(WORKERS),
    "CATBOT_DM_BUDGET_15MIN": "100000",
    "CATBOT_DM_BUDGET_24H": "100000",
    "CATBOT_LOG_LEVEL": "INFO",
}


class Rig(BotAndX):
    def __init__(
        self, tmp: Path, emulator_args: tuple[str, ...] = (), **env: str
    ) -> None:
        port, metrics_port, emulator_port = free_port(), free_port(), free_port()
        self.daemon = Daemon(tmp, emulator_port, port, metrics_port, {**FAST_ENV, **env})
        self.emulator = Emulator(
            tmp, emulator_port, self.daemon.webhook,
            extra_args=["--dm-rate-limit", "100000", *emulator_args],
        )

    def send_all(self, users: list[str]) -> list[Any]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda u: self.emulator.dm(u, f"hello from {u}"), users))

    def replies(self) -> Counter[str]:
        return Counter(m["recipient_id"] for m in self.emulator.messages()
                       if m["sender_id"] == BOT_ID)

    def wait_all_answered(self, users: list[str], timeout: float = 20.0) -> None:
        wait_for(lambda: all(self.replies()[u] >= 1 for u in users), timeout=timeout,
                 interval=0.1, what=f"replies to {len(users)} users")

    def assert_answered_once(self, users: list[str], settle: float = 1.0) -> None:
        time.sleep(settle)
        replies = self.replies()
        assert {u: replies[u] for u in users} == {u: 1 for u in users}

    def dm_requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.emulator.control("GET", "requests?route=dm")["requests"]
        return sorted(log, key=lambda e: e["at"])

    def metric(self, name: str) -> float:
        return self.daemon.metrics().get(name, 0.0)


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    options: dict[str, Any] = getattr(request, "param", {})
    with Rig(tmp_path, **options) as r:
        yield r


def users(prefix: int, count: int) -> list[str]:
    return [str(prefix + i) for i in range(count)]


def test_after_a_429_window_one_probe_goes_first_then_the_rest(rig: Rig) -> None:
    faults = rig.emulator.control("POST", "faults", {"dm_rate_limit_for_seconds": 2})
    # The window ends on a whole second, the one x-rate-limit-reset names.
    reset_at = round(time.time() + faults["dm_rate_limit_for_seconds"])
    friends = users(8000, 20)
    rig.send_all(friends)
    rig.wait_all_answered(friends, timeout=20)
    rig.assert_answered_once(friends)

    log = rig.dm_requests()
    during = [e for e in log if e["at"] < reset_at]
    after = [e for e in log if e["at"] >= reset_at]
    print(f"429 window: {len(during)} requests during it, {len(after)} after; first after "
          f"the reset at +{after[0]['at'] - reset_at:.2f} s")
    assert during and {e["outcome"] for e in during} == {"rate_limited"}
    # Workers in flight when the first 429 came back; none tries again before the reset.
    assert len(during) <= WORKERS
    probe = after[0]
    assert probe["outcome"] == "sent"
    overlapping = [e for e in after[1:] if e["at"] < probe["answered_at"]]
    assert overlapping == [], "more than one probe went out before the first passed"
    assert [e["outcome"] for e in after] == ["sent"] * len(friends)
    assert rig.metric('catbot_rate_limit_waits_total{source="x_429"}') >= 1


def test_drops_5xx_and_latency_every_dm_answered_once_retries_counted(rig: Rig) -> None:
    rig.emulator.control("POST", "faults", {
        "dm_drop_next": 3, "dm_fail_ratio": 0.3, "dm_fail_status": 503, "seed": 11,
        "latency": {"dm": 0.05},
    })
    friends = users(8100, 12)
    rig.send_all(friends)
    rig.wait_all_answered(friends, timeout=30)
    rig.assert_answered_once(friends)

    stats = rig.emulator.control("GET", "stats")
    failures = stats["dm_dropped"] + stats["dm_failed"]
    retries = rig.metric('catbot_send_retries_total{cause="transient"}')
    requeued = rig.metric('catbot_dms_sent_total{outcome="requeued"}')
    print(f"dropped {stats['dm_dropped']}, 5xx {stats['dm_failed']}, daemon retries "
          f"{retries:g}, requeued {requeued:g}")
    assert stats["dm_dropped"] == 3 and stats["dm_failed"] >= 1
    assert stats["latency_injected"] == stats["dm_requests"]
    # Every failed attempt is either retried or, after the last attempt, requeued.
    assert retries + requeued == failures
    assert rig.metric('catbot_dms_sent_total{outcome="sent"}') == len(friends)


def test_permanent_refusals_are_dead_lettered_once_others_unaffected(rig: Rig) -> None:
    refused = {"8201": 349, "8202": 226}
    rig.emulator.control("POST", "faults", {
        "forbidden_recipients": ["8201"], "automated_recipients": ["8202"],
    })
    friends = ["8203", "8204"]
    rig.send_all([*refused, *friends])
    rig.wait_all_answered(friends)
    wait_for(lambda: rig.metric('catbot_dms_sent_total{outcome="dead_letter"}') == 2,
             what="two dead letters")
    rig.assert_answered_once(friends)
    values = rig.daemon.metrics()
    letters = {k: v for k, v in values.items() if k.startswith("catbot_dead_letters_total")}
    for code in refused.values():
        assert [v for k, v in letters.items() if str(code) in k] == [1.0], letters
    assert values.get('catbot_send_retries_total{cause="transient"}', 0) == 0
    paths = Counter(e["path"] for e in rig.dm_requests())
    for user in refused:
        assert paths[f"/2/dm_conversations/with/{user}/messages"] == 1  # never retried
    assert rig.replies()["8201"] == 0 and rig.replies()["8202"] == 0


SLOW_X = {"emulator_args": ("--delivery-timeout", "0.5", "--redelivery-delays", "0.2,0.5,1,2")}


@pytest.mark.parametrize("rig", [SLOW_X], indirect=True, ids=["redelivering-X"])
def test_redelivery_after_a_slow_answer_brings_no_second_reply(rig: Rig) -> None:
    rig.daemon.signal(signal.SIGSTOP)  # a long GC pause, a saturated node...
    answers: list[Any] = []
    try:
        sender = threading.Thread(target=lambda: answers.append(rig.emulator.dm("8301", "hi")))
        sender.start()
        time.sleep(1.2)
    finally:
        rig.daemon.signal(signal.SIGCONT)
    sender.join(5)
    [first] = answers[0]["deliveries"]
    assert first["status"] is None and "no answer within 0.5 s" in first["error"]
    rig.wait_all_answered(["8301"])
    event_id = answers[0]["event_id"]
    wait_for(lambda: any(d["status"] == 200 and d["attempt"] > 0
                         for d in deliveries(rig, event_id)), what="a successful redelivery")
    rig.assert_answered_once(["8301"], settle=2.0)
    attempts = [(d["attempt"], d["status"]) for d in deliveries(rig, event_id)]
    print("attempts (number, status):", attempts)
    assert rig.emulator.control("GET", "stats")["redeliveries"] >= 1
    assert rig.metric('catbot_events_total{fate="enqueued",kind="direct_message"}') == 1


def deliveries(rig: Rig, event_id: str) -> list[dict[str, Any]]:
    log = rig.emulator.control("GET", "deliveries")["deliveries"]
    return [d for d in log if event_id in d["event_ids"]]


def test_duplicated_and_reordered_deliveries_get_one_reply_per_event(rig: Rig) -> None:
    rig.emulator.control("POST", "faults", {
        "deliver_duplicates_ratio": 1.0, "reorder_window": 0.5, "seed": 4,
    })
    first = users(8400, 10)
    answers = rig.send_all(first)
    assert all(a["deliveries"][0].get("held") for a in answers)
    rig.wait_all_answered(first)
    # Then duplicates arriving at the same moment, racing each other in the store.
    rig.emulator.control("POST", "faults", {"deliver_duplicates_ratio": 1.0})
    second = users(8500, 10)
    rig.send_all(second)
    rig.wait_all_answered(second)
    rig.assert_answered_once(first + second, settle=1.5)
    values = rig.daemon.metrics()
    assert values['catbot_events_total{fate="enqueued",kind="direct_message"}'] == 20
    assert values['catbot_events_total{fate="duplicate",kind="direct_message"}'] == 20
    stats = rig.emulator.control("GET", "stats")
    assert stats["reorder_flushes"] >= 1 and stats["duplicates_sent"] >= 20


def signed_dm(event_id: str, sender: str) -> tuple[bytes, str]:
    body = json.dumps({
        "for_user_id": BOT_ID,
        "direct_message_events": [{
            "type": "message_create", "id": event_id,
            "created_timestamp": str(int(time.time() * 1000)),
            "message_create": {"target": {"recipient_id": BOT_ID}, "sender_id": sender,
                               "message_data": {"text": "fact please"}},
        }],
    }).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return body, "sha256=" + base64.b64encode(digest).decode()


def test_webhook_stays_fast_while_x_is_down(rig: Rig) -> None:
    outage = 25.0
    rig.emulator.control("POST", "faults", {"dm_fail_for_seconds": outage})
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", rig.daemon.port, timeout=5)
    latencies = []
    count, spread = 300, 18.0  # over most of the outage, while the backlog grows
    for i in range(count):
        body, signature = signed_dm(str(870_000_000 + i), str(870000 + i))
        began = time.perf_counter()
        conn.request("POST", WEBHOOK_PATH, body=body, headers={
            "Content-Type": "application/json", "x-twitter-webhooks-signature": signature})
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - began)
        assert response.status == 200
        time.sleep(max(0.0, started + spread * (i + 1) / count - time.monotonic()))
    conn.close()
    assert time.monotonic() - started < outage, "measured after X came back"
    stats = rig.emulator.control("GET", "stats")
    quantiles = statistics.quantiles(latencies, n=100)
    p50, p99 = statistics.median(latencies), quantiles[98]
    print(f"ack latency while X's DM endpoint is down: p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms over {count} POSTs; "
          f"{stats['dm_failed']} failed DM calls meanwhile")
    assert stats["dm_sent"] == 0 and stats["dm_failed"] > WORKERS
    assert rig.metric('catbot_events_total{fate="enqueued",kind="direct_message"}') == count
    assert p99 < 0.25
