"""The daemon and the X emulator as real processes on loopback, checked through HTTP only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from catbot.brain import HELP_TEXT, START_TEXT, STOP_TEXT
from catbot.facts import load_corpus
from testkit.processes import (
    BOT_ID,
    CREDENTIALS,
    BotAndX,
    Daemon,
    Emulator,
    free_port,
    http,
    wait_for,
)

SECRET = CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]
FRIEND = "4242"
CORPUS = {fact.text for fact in load_corpus()}


class World(BotAndX):
    def __init__(self, tmp: Path, api: str = "v2", daemon_env: dict[str, str] | None = None):
        self.tmp = tmp
        self.emulator_port, self.port, self.metrics_port = free_port(), free_port(), free_port()
        self.daemon_env = {"CATBOT_X_API": api, **(daemon_env or {})}
        self.daemon = self.new_daemon()
        self.emulator = Emulator(tmp, self.emulator_port, self.daemon.webhook, api=api)

    def new_daemon(self, **env: str) -> Daemon:
        return Daemon(self.tmp, self.emulator_port, self.port, self.metrics_port,
                      {**self.daemon_env, **env})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def sign(body: bytes, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def dm_payload(
    event_id: str, sender: str, text: str, created_ms: int | None = None
) -> dict[str, Any]:
    return {
        "for_user_id": BOT_ID,
        "direct_message_events": [{
            "type": "message_create",
            "id": event_id,
            "created_timestamp": str(created_ms or int(time.time() * 1000)),
            "message_create": {
                "target": {"recipient_id": BOT_ID},
                "sender_id": sender,
                "message_data": {"text": text, "entities": {}},
            },
        }],
    }


def post_signed(world: World, payload: Any, signature: str | None = None) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json",
               "x-twitter-webhooks-signature": signature or sign(body)}
    status, answer, _ = http("POST", world.daemon.webhook, raw=body, headers=headers)
    return status, answer


def wait_replies(world: World, user: str, count: int, timeout: float = 15.0) -> list[str]:
    return wait_for(lambda: (r := world.emulator.replies_to(user)) and len(r) >= count and r,
                    timeout=timeout, what=f"{count} replies to {user}")


def assert_no_more_replies(world: World, user: str, count: int, settle: float = 1.0) -> None:
    time.sleep(settle)
    assert len(world.emulator.replies_to(user)) == count


def metric(world: World, name: str) -> float:
    return world.daemon.metrics().get(name, 0.0)


def test_crc_answer_matches_an_independent_hmac(world: World) -> None:
    status, body, headers = http("GET", world.daemon.webhook + "?crc_token=crc-token-123")
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), b"crc-token-123", hashlib.sha256).digest()
    ).decode()
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body == {"response_token": "sha256=" + expected}

    status, body, _ = http("GET", world.daemon.webhook)
    assert status == 400 and "crc_token" in body["error"]


def test_a_dm_gets_exactly_one_cat_fact(world: World) -> None:
    answer = world.emulator.dm(FRIEND, "hello cat bot")
    assert [d["status"] for d in answer["deliveries"]] == [200]
    [reply] = wait_replies(world, FRIEND, 1)
    assert reply in CORPUS
    # The bot's own reply comes back as an event; it must not be answered.
    assert_no_more_replies(world, FRIEND, 1)
    wait_for(lambda: metric(world, 'catbot_events_total{fate="own",kind="direct_message"}') >= 1,
             what="the echoed reply to be counted as own")


def test_unsigned_and_badly_signed_posts_are_rejected_and_nothing_is_sent(world: World) -> None:
    payload = dm_payload("9001", FRIEND, "hi")
    body = json.dumps(payload).encode()
    status, _, _ = http("POST", world.daemon.webhook, raw=body,
                        headers={"Content-Type": "application/json"})
    assert status == 401
    assert post_signed(world, payload, signature=sign(body, "wrong-secret"))[0] == 401
    assert post_signed(world, payload, signature="sha256=not-base64!")[0] == 401
    assert_no_more_replies(world, FRIEND, 0, settle=1.0)
    values = world.daemon.metrics()
    assert values['catbot_signature_failures_total{reason="missing"}'] == 1
    assert values['catbot_signature_failures_total{reason="mismatch"}'] == 1
    assert values['catbot_signature_failures_total{reason="malformed"}'] == 1
    # The same body correctly signed is then accepted and answered once.
    assert post_signed(world, payload)[0] == 200
    wait_replies(world, FRIEND, 1)


def test_oversized_and_malformed_bodies_get_4xx(world: World) -> None:
    big = b'{"x": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    status, _, _ = http("POST", world.daemon.webhook, raw=big,
                        headers={"x-twitter-webhooks-signature": sign(big)})
    assert status == 413
    bad = b'{"for_user_id": "1000", '
    status, _, _ = http("POST", world.daemon.webhook, raw=bad,
                        headers={"x-twitter-webhooks-signature": sign(bad)})
    assert status == 400
    # Unknown event kinds are acknowledged so X does not retry them.
    status, _ = post_signed(world, {"for_user_id": BOT_ID, "mystery_events": [{"x": 1}]})
    assert status == 200


def test_duplicate_delivery_gets_no_second_reply(world: World) -> None:
    answer = world.emulator.dm(FRIEND, "one fact please")
    wait_replies(world, FRIEND, 1)
    again = world.emulator.control("POST", "redeliver", {"event_id": answer["event_id"]})
    assert [d["status"] for d in again["deliveries"]] == [200]
    assert_no_more_replies(world, FRIEND, 1)
    assert metric(world, 'catbot_events_total{fate="duplicate",kind="direct_message"}') == 1


def test_a_batch_of_dms_gets_one_reply_each(world: World) -> None:
    senders = ["501", "502", "503", "504"]
    answer = world.emulator.control(
        "POST", "dm_batch",
        {"messages": [{"sender_id": s, "text": f"fact for {s}"} for s in senders]},
    )
    assert len(answer["event_ids"]) == len(senders)
    for sender in senders:
        wait_replies(world, sender, 1)
    time.sleep(0.8)
    assert [len(world.emulator.replies_to(s)) for s in senders] == [1, 1, 1, 1]


def test_own_and_stale_messages_are_never_answered(world: World) -> None:
    own = dm_payload("7001", BOT_ID, "a message the bot sent itself")
    assert post_signed(world, own)[0] == 200
    old_ms = int((time.time() - 7200) * 1000)
    assert post_signed(world, dm_payload("7002", FRIEND, "hi from the past", old_ms))[0] == 200
    assert_no_more_replies(world, FRIEND, 0)
    assert world.emulator.replies_to(BOT_ID) == []
    values = world.daemon.metrics()
    assert values['catbot_events_total{fate="stale",kind="direct_message"}'] == 1
    assert values['catbot_events_total{fate="own",kind="direct_message"}'] >= 1


def test_help_stop_start_and_opt_out_survives_a_restart(world: World) -> None:
    world.emulator.dm(FRIEND, "help")
    assert wait_replies(world, FRIEND, 1)[-1] == HELP_TEXT
    world.emulator.dm(FRIEND, "STOP")
    assert wait_replies(world, FRIEND, 2)[-1] == STOP_TEXT

    world.daemon.stop()
    assert world.daemon.proc is not None and world.daemon.proc.returncode == 0
    world.daemon = world.new_daemon()
    world.daemon.start()

    world.emulator.dm(FRIEND, "are you there?")
    assert_no_more_replies(world, FRIEND, 2, settle=1.5)
    world.emulator.dm(FRIEND, "start")
    assert wait_replies(world, FRIEND, 3)[-1] == START_TEXT
    world.emulator.dm(FRIEND, "a fact now?")
    assert wait_replies(world, FRIEND, 4)[-1] in CORPUS


def test_kill_9_while_a_reply_is_pending_then_restart_still_delivers(world: World) -> None:
    # X is slow: the daemon's send hangs long past the kill.
    world.emulator.faults(dm_delay_seconds=30)
    world.emulator.dm(FRIEND, "are you durable?")
    wait_for(lambda: world.emulator.control("GET", "stats")["dm_requests"] >= 1,
             what="the daemon to start sending")
    world.daemon.signal(signal.SIGKILL)
    world.daemon.wait(5)
    world.emulator.control("DELETE", "faults")
    assert world.emulator.replies_to(FRIEND) == []

    world.daemon = world.new_daemon()
    world.daemon.start()
    [reply] = wait_replies(world, FRIEND, 1)
    assert reply in CORPUS
    assert metric(world, 'catbot_dms_sent_total{outcome="sent"}') == 1


def test_metrics_move_and_probes_answer(world: World) -> None:
    before = world.daemon.metrics()
    world.emulator.dm(FRIEND, "count me")
    wait_replies(world, FRIEND, 1)
    after = wait_for(
        lambda: (m := world.daemon.metrics())
        and m.get("catbot_event_to_reply_seconds_count", 0) >= 1 and m,
        what="reply metrics",
    )
    key_sent = 'catbot_dms_sent_total{outcome="sent"}'
    key_in = 'catbot_events_total{fate="enqueued",kind="direct_message"}'
    assert after[key_sent] == before.get(key_sent, 0) + 1
    assert after[key_in] == before.get(key_in, 0) + 1
    assert after["catbot_dm_send_seconds_count"] >= 1
    assert after['catbot_webhook_requests_total{outcome="accepted"}'] >= 2  # the DM + the echo
    assert all(not name.startswith("catbot_") or FRIEND not in name for name in after)
    status, body, _ = http("GET", world.daemon.internal + "/livez")
    assert status == 200 and body["status"] == "ok"
    # Internal endpoints are not on the public port.
    assert http("GET", f"http://127.0.0.1:{world.port}/metrics")[0] == 404


def test_sigterm_drains_and_exits_zero(world: World) -> None:
    world.daemon.signal(signal.SIGTERM)
    assert world.daemon.wait(15) == 0
    assert "shutdown_started" in world.daemon.output()


def test_transient_failures_are_retried_then_delivered(world: World) -> None:
    world.emulator.faults(dm_fail_next=2, dm_fail_status=503)
    world.emulator.dm(FRIEND, "flaky X")
    wait_replies(world, FRIEND, 1)
    assert metric(world, 'catbot_send_retries_total{cause="transient"}') == 2


def test_rate_limit_waits_for_reset_without_losing_the_reply(world: World) -> None:
    world.emulator.faults(dm_rate_limit_next=1, dm_rate_limit_reset_in=1.0)
    started = time.monotonic()
    world.emulator.dm(FRIEND, "limited")
    wait_replies(world, FRIEND, 1)
    assert time.monotonic() - started >= 0.9
    assert metric(world, 'catbot_rate_limit_waits_total{source="x_429"}') == 1


def test_permanent_refusal_is_dead_lettered_not_retried(world: World) -> None:
    world.emulator.faults(forbidden_recipients=[FRIEND])
    world.emulator.dm(FRIEND, "you cannot answer me")
    wait_for(lambda: metric(world, 'catbot_dms_sent_total{outcome="dead_letter"}') == 1,
             what="the dead letter")
    values = world.daemon.metrics()
    assert values.get('catbot_send_retries_total{cause="transient"}', 0) == 0
    assert any(k.startswith("catbot_dead_letters_total") and "349" in k for k in values)
    assert world.emulator.control("GET", "stats")["dm_requests"] == 1


@pytest.mark.parametrize("api", ["activity", "v1.1"])
def test_other_flavours_end_to_end(tmp_path: Path, api: str) -> None:
    env = {"CATBOT_X_ENV_NAME": "dev"} if api == "v1.1" else {}
    with World(tmp_path, api=api, daemon_env=env) as w:
        w.emulator.dm(FRIEND, "hello from " + api)
        [reply] = wait_replies(w, FRIEND, 1)
        assert reply in CORPUS
        assert_no_more_replies(w, FRIEND, 1)


def test_logs_are_json_and_never_hold_dm_text_or_secrets(world: World) -> None:
    secret_text = "my-very-private-words-" + str(time.time_ns())
    world.emulator.dm(FRIEND, secret_text)
    wait_replies(world, FRIEND, 1)
    world.daemon.stop()
    log = world.daemon.output()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    events = {record.get("event") for record in records}
    assert {"started", "event_enqueued", "replied"} <= events
    assert secret_text not in log
    for name, value in CREDENTIALS.items():
        if "SECRET" in name or "TOKEN" in name:
            assert value not in log, name
    assert all({"event", "level", "logger", "timestamp"} <= set(r) for r in records), records
    # The access log is a structured event too: one `request` line per answered request.
    webhook_path = urlsplit(world.daemon.webhook).path
    assert any(r["event"] == "request" and r["method"] == "POST" and r["path"] == webhook_path
               and r["status"] == 200 and r["duration_ms"] >= 0 for r in records), records


def test_at_warning_the_webhook_logs_nothing_per_delivery(tmp_path: Path) -> None:
    with World(tmp_path, daemon_env={"CATBOT_LOG_LEVEL": "WARNING"}) as w:
        w.emulator.dm(FRIEND, "hello")
        wait_replies(w, FRIEND, 1)
        w.daemon.stop()
        records = [json.loads(line) for line in w.daemon.output().splitlines() if line.strip()]
    assert all(r["level"] in ("warning", "error", "critical") for r in records), records
