"""The X emulator, exercised over real loopback sockets.

A fake webhook receiver (its own CRC and signature maths, never `catbot.signing`) plays the
daemon; tweepy's AsyncClient, unchanged, plays the daemon's X client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tweepy

from catbot.emulator import ConfigError, RunningEmulator, config_from_env
from catbot.emulator.config import EmulatorConfig
from catbot.emulator.oauth import AuthOutcome, Credentials, RequestToVerify, verify
from tests.emulator_fixtures import (
    ACCESS_TOKEN,
    BOT,
    CONSUMER_KEY,
    ENV,
    SECRET,
    SIGNATURE_HEADER,
    TOKEN_SECRET,
    EmulatorFactory,
    Receiver,
    ReceiverFactory,
    bearer_client,
    hmac_b64,
    oauth_signer,
    tweepy_client,
    wait_valid,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


async def control(
    http: aiohttp.ClientSession, emulator: RunningEmulator, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, emulator.url + "/_emulator/" + path, **kw) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


def v11_body(recipient: str, text: str) -> dict[str, Any]:
    return {
        "event": {
            "type": "message_create",
            "message_create": {
                "target": {"recipient_id": recipient},
                "message_data": {"text": text},
            },
        }
    }


# --- configuration ---------------------------------------------------------------------


def test_config_bot_id_from_access_token_and_seed_names() -> None:
    config = config_from_env(
        {
            "consumer_secret": "seed-secret",
            "consumer_key": "seed-key",
            "access_token": "123456-seed-token",
            "access_token_secret": "seed-token-secret",
        },
        bot_user_id="999",
    )
    assert (config.bot_user_id, config.consumer_key, config.api) == ("123456", "seed-key", "v2")
    assert "seed" not in repr(config)  # secrets stay out of logs
    plain = config_from_env({"CATBOT_X_CONSUMER_SECRET": "s", "CATBOT_X_ACCESS_TOKEN": "xyz"})
    assert plain.bot_user_id == "1000"
    assert config_from_env({"consumer_secret": "s"}, bot_user_id="55").bot_user_id == "55"


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="CATBOT_X_CONSUMER_SECRET"):
        config_from_env({"CATBOT_X_CONSUMER_KEY": "k"})
    with pytest.raises(ConfigError, match="https"):
        config_from_env(ENV, webhook_urls=["http://example.com/webhook"])
    with pytest.raises(ConfigError, match="CATBOT_X_API"):
        config_from_env({**ENV, "CATBOT_X_API": "v3"})
    ok = config_from_env(ENV, webhook_urls="http://localhost:1/x")
    assert ok.webhook_urls == ("http://localhost:1/x",)
    assert config_from_env(ENV, webhook_urls=["https://example.com/w"]).webhook_urls


def test_oauth_accepts_the_public_urls_only_with_the_right_secrets() -> None:
    credentials = Credentials(SECRET, CONSUMER_KEY, ACCESS_TOKEN, TOKEN_SECRET)
    path = "/2/dm_conversations/with/42/messages?a=b%3Ac"

    def check(signed_base: str, token_secret: str = TOKEN_SECRET, **kw: Any) -> AuthOutcome:
        signer = oauth_signer(token_secret)
        _, headers, _ = signer.sign(signed_base + path, "POST")
        request = RequestToVerify("POST", "http", "127.0.0.1:8099", path, headers["Authorization"])
        return verify(request, credentials, now=time.time(), max_clock_skew=300, **kw)

    assert check("https://api.x.com") is AuthOutcome.OK
    assert check("https://api.twitter.com") is AuthOutcome.OK
    assert check("http://127.0.0.1:8099") is AuthOutcome.OK
    assert check("https://api.twitter.com", public_bases=()) is AuthOutcome.BAD_SIGNATURE
    assert check("https://example.com") is AuthOutcome.BAD_SIGNATURE
    assert check("https://api.x.com", token_secret="other") is AuthOutcome.BAD_SIGNATURE
    missing = RequestToVerify("POST", "http", "h", path, None)
    assert verify(missing, credentials, now=0, max_clock_skew=1) is AuthOutcome.MISSING


# --- CRC and deliveries ----------------------------------------------------------------


async def test_startup_webhook_passes_crc(
    make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(receiver.url)
    hook = await wait_valid(http, emulator)
    assert hook["url"] == receiver.url and hook["last_crc_status"] == 200
    assert receiver.crc_tokens, "the emulator never sent a CRC challenge"
    _, stats = await control(http, emulator, "GET", "stats")
    assert stats["crc_checks"] >= 1


async def test_webhook_with_wrong_secret_is_invalid_and_gets_nothing(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    wrong = await make_receiver(secret="not-the-consumer-secret")
    emulator = await make_emulator(wrong.url, crc_retry_total=0.2)
    await asyncio.sleep(0.3)
    _, hooks = await control(http, emulator, "GET", "webhooks")
    assert hooks["webhooks"][0]["valid"] is False
    assert "does not match" in hooks["webhooks"][0]["last_crc_error"]
    status, answer = await control(
        http, emulator, "POST", "dm", json={"sender_id": "42", "text": "hi"}
    )
    assert status == 200
    [delivery] = answer["deliveries"]
    assert delivery["status"] is None
    assert delivery["error"].startswith("webhook invalid: ")
    assert wrong.posts == []
    assert len(wrong.crc_tokens) >= 2  # start-up attempts plus the pre-delivery retry


async def test_dm_delivers_signed_account_activity_payload(
    make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(receiver.url)
    status, answer = await control(
        http,
        emulator,
        "POST",
        "dm",
        json={"sender_id": "42", "text": "hi", "sender_name": "Ada"},
    )
    assert status == 200
    assert answer["deliveries"] == [{"url": receiver.url, "status": 200, "error": None}]
    headers, body = receiver.posts[-1]
    assert headers["content-type"] == "application/json"
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], hmac_b64(SECRET, body))
    payload = json.loads(body)
    assert payload["for_user_id"] == BOT
    [event] = payload["direct_message_events"]
    assert event["type"] == "message_create"
    assert event["id"] == answer["event_id"] and event["id"].isdigit()
    assert event["created_timestamp"].isdigit()
    create = event["message_create"]
    assert create["sender_id"] == "42" and create["target"] == {"recipient_id": BOT}
    assert create["message_data"]["text"] == "hi"
    assert create["message_data"]["entities"] == {
        "hashtags": [],
        "symbols": [],
        "user_mentions": [],
        "urls": [],
    }
    assert set(payload["users"]) == {"42", BOT}
    assert payload["users"]["42"]["name"] == "Ada"
    assert {"screen_name", "protected", "verified"} <= set(payload["users"]["42"])
    _, messages = await control(http, emulator, "GET", "messages")
    assert messages["messages"][-1]["direction"] == "in"

    old = {"sender_id": "42", "text": "late", "created_timestamp": "1500000000000"}
    await control(http, emulator, "POST", "dm", json=old)
    assert (
        receiver.payload()["direct_message_events"][0]["created_timestamp"]
        == old["created_timestamp"]
    )


SIGNED_64_BIT = re.compile(r"^-?[0-9]{1,19}$")


async def test_activity_envelope(
    make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(receiver.url, api="activity")
    _, answer = await control(http, emulator, "POST", "dm", json={"sender_id": "42", "text": "a"})
    assert answer["deliveries"][0]["status"] == 200
    headers, body = receiver.posts[-1]
    assert headers[SIGNATURE_HEADER] == hmac_b64(SECRET, body)
    data = json.loads(body)["data"]
    assert data["event_type"] == "dm.received"
    assert data["filter"] == {"user_id": BOT}
    # X's examples: a decimal 64-bit integer as a string, possibly negative; never a UUID.
    assert data["tag"] == "catbot" and SIGNED_64_BIT.match(data["event_uuid"])
    assert -(2**63) <= int(data["event_uuid"]) < 2**63
    [event] = data["payload"]["direct_message_events"]
    assert event["message_create"]["sender_id"] == "42"
    assert data["payload"]["users"]["42"]["data"]["username"]
    assert "for_user_id" not in json.loads(body) and "includes" not in data

    # The start-up subscriptions are what the bot answers: its own DM does not come back.
    await tweepy_client(http, emulator).create_direct_message(participant_id="42", text="b")
    await control(http, emulator, "POST", "dm", json={"sender_id": "42", "text": "c"})
    await receiver.wait_posts(2)
    assert [json.loads(b)["data"]["event_type"] for _, b in receiver.posts] == ["dm.received"] * 2


async def test_activity_batch_is_one_delivery_per_event(
    make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(receiver.url, api="activity")
    await wait_valid(http, emulator)
    batch = {"messages": [{"sender_id": "42", "text": "one"}, {"sender_id": "43", "text": "2"}]}
    status, answer = await control(http, emulator, "POST", "dm_batch", json=batch)
    assert status == 200 and len(answer["deliveries"]) == 2
    datas = [json.loads(body)["data"] for _, body in receiver.posts]
    carried = [[e["id"] for e in d["payload"]["direct_message_events"]] for d in datas]
    assert sorted(carried) == sorted([event_id] for event_id in answer["event_ids"])
    assert len({d["event_uuid"] for d in datas}) == 2
    for data, [event_id] in zip(datas, carried, strict=True):
        sender = "42" if event_id == answer["event_ids"][0] else "43"
        assert set(data["payload"]["users"]) == {sender, BOT}

    # A redelivery repeats the one body that carried the event, not its neighbour's.
    second = answer["event_ids"][1]
    _, again = await control(http, emulator, "POST", "redeliver", json={"event_id": second})
    assert len(again["deliveries"]) == 1
    original = next(body for _, body in receiver.posts[:2] if second.encode() in body)
    assert receiver.posts[2][1] == original


async def test_batch_is_one_delivery_and_redelivery_repeats_the_bytes(
    make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(receiver.url)
    status, answer = await control(
        http,
        emulator,
        "POST",
        "dm_batch",
        json={"messages": [{"sender_id": "42", "text": "one"}, {"sender_id": "43", "text": "2"}]},
    )
    assert status == 200 and len(answer["event_ids"]) == 2
    assert int(answer["event_ids"][0]) < int(answer["event_ids"][1])
    assert len(receiver.posts) == 1
    events = receiver.payload()["direct_message_events"]
    assert [e["id"] for e in events] == answer["event_ids"]
    assert set(receiver.payload()["users"]) == {"42", "43", BOT}

    status, again = await control(
        http, emulator, "POST", "redeliver", json={"event_id": answer["event_ids"][1]}
    )
    assert status == 200 and again["deliveries"][0]["status"] == 200
    assert receiver.posts[1] == receiver.posts[0]  # same bytes, same signature
    status, missing = await control(http, emulator, "POST", "redeliver", json={"event_id": "1"})
    assert status == 404 and "error" in missing


async def test_deliver_raw_signed_unsigned_and_forged(
    make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(receiver.url)
    await wait_valid(http, emulator)
    body = {"for_user_id": BOT, "favorite_events": [{"id": "1"}]}
    await control(http, emulator, "POST", "deliver_raw", json={"body": body})
    await control(http, emulator, "POST", "deliver_raw", json={"body": body, "sign": False})
    _, answer = await control(
        http, emulator, "POST", "deliver_raw", json={"body_text": "{not json", "signature": "x"}
    )
    assert answer["deliveries"][0]["status"] == 200
    (h1, b1), (h2, _), (h3, b3) = receiver.posts
    assert json.loads(b1) == body and h1[SIGNATURE_HEADER] == hmac_b64(SECRET, b1)
    assert SIGNATURE_HEADER not in h2
    assert b3 == b"{not json" and h3[SIGNATURE_HEADER] == "x"


async def test_runtime_webhook_registration(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    good, bad = await make_receiver(), await make_receiver(secret="wrong")
    status, hook = await control(http, emulator, "POST", "webhooks", json={"url": good.url})
    assert status == 200 and hook["valid"] is True and hook["id"].isdigit()
    status, err = await control(http, emulator, "POST", "webhooks", json={"url": bad.url})
    assert status == 400 and "CrcValidationFailed" in err["error"]
    status, err = await control(
        http, emulator, "POST", "webhooks", json={"url": "http://example.com/hook"}
    )
    assert status == 400 and "https" in err["error"]
    status, err = await control(http, emulator, "POST", "webhooks", json={"url": good.url})
    assert status == 400 and "DuplicateUrlFailed" in err["error"]
    _, hooks = await control(http, emulator, "GET", "webhooks")
    assert [h["url"] for h in hooks["webhooks"]] == [good.url]
    _, answer = await control(http, emulator, "POST", "dm", json={"sender_id": "9", "text": "x"})
    assert answer["deliveries"][0]["status"] == 200 and len(good.posts) == 1


async def test_control_validation_and_unknown_routes(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    for bad in ({"sender_id": "abc", "text": "hi"}, {"sender_id": "42", "text": ""}, {}):
        status, err = await control(http, emulator, "POST", "dm", json=bad)
        assert status == 400 and err["error"]
    status, err = await control(http, emulator, "POST", "faults", json={"dm_fail_nxt": 1})
    assert status == 400 and "dm_fail_nxt" in err["error"]
    status, err = await control(http, emulator, "GET", "messages", params={"user_id": "x"})
    assert status == 400 and "user_id" in err["error"]
    async with http.get(emulator.url + "/2/nothing/here") as resp:
        assert resp.status == 404 and resp.content_type == "application/json"
        assert (await resp.json())["errors"][0]["code"] == 34


# --- X's DM routes through tweepy ------------------------------------------------------


async def test_tweepy_v2_dm_is_recorded_and_echoed_to_the_webhook(
    make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(receiver.url)
    await wait_valid(http, emulator)
    client = tweepy_client(http, emulator)
    response = await client.create_direct_message(participant_id="42", text="hi", user_auth=True)
    assert response.data["dm_conversation_id"] == f"42-{BOT}"
    assert response.data["dm_event_id"].isdigit()

    _, messages = await control(http, emulator, "GET", "messages", params={"user_id": "42"})
    [sent] = messages["messages"]
    assert sent == {
        "id": response.data["dm_event_id"],
        "sender_id": BOT,
        "recipient_id": "42",
        "text": "hi",
        "created_timestamp": sent["created_timestamp"],
        "direction": "out",
        "channel": "dm",
    }
    await receiver.wait_posts(1)
    headers, body = receiver.posts[-1]
    assert headers[SIGNATURE_HEADER] == hmac_b64(SECRET, body)
    echo = json.loads(body)
    assert echo["for_user_id"] == BOT
    create = echo["direct_message_events"][0]["message_create"]
    assert create["sender_id"] == BOT and create["target"]["recipient_id"] == "42"
    _, stats = await control(http, emulator, "GET", "stats")
    assert stats["dm_sent"] == 1 and stats["dm_requests"] == 1


async def test_dm_answer_does_not_wait_for_the_echo(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    slow = await make_receiver(post_delay=1.0)
    emulator = await make_emulator(slow.url)
    await wait_valid(http, emulator)
    started = time.monotonic()
    await tweepy_client(http, emulator).create_direct_message(participant_id="42", text="hi")
    assert time.monotonic() - started < 0.5
    await slow.wait_posts(1)


async def test_tweepy_v11_dm(
    make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(receiver.url, api="v1.1")
    client = tweepy_client(http, emulator)
    response = await client.request(
        "POST",
        "/1.1/direct_messages/events/new.json",
        params={},
        json=v11_body("42", "hello"),
        user_auth=True,
    )
    assert response.status == 200
    event = (await response.json())["event"]
    assert event["type"] == "message_create" and event["id"].isdigit()
    assert event["message_create"]["sender_id"] == BOT
    assert event["message_create"]["message_data"]["text"] == "hello"
    await receiver.wait_posts(1)
    assert receiver.payload()["direct_message_events"][0]["id"] == event["id"]

    with pytest.raises(tweepy.Forbidden) as too_long:
        await client.request(
            "POST",
            "/1.1/direct_messages/events/new.json",
            params={},
            json=v11_body("42", "x" * 10_001),
            user_auth=True,
        )
    assert too_long.value.api_codes == [354]


async def test_bad_credentials_are_unauthorized(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    client = tweepy_client(http, emulator, consumer_secret="wrong-secret")
    with pytest.raises(tweepy.Unauthorized) as v2_error:
        await client.create_direct_message(participant_id="42", text="hi")
    assert v2_error.value.response.status == 401
    with pytest.raises(tweepy.Unauthorized) as v11_error:
        await client.request(
            "POST",
            "/1.1/direct_messages/events/new.json",
            params={},
            json=v11_body("42", "hi"),
            user_auth=True,
        )
    assert v11_error.value.api_codes == [32]
    bearer = bearer_client(http, emulator, "app-only")
    with pytest.raises(tweepy.Forbidden):
        await bearer.create_direct_message(participant_id="42", text="hi", user_auth=False)
    _, stats = await control(http, emulator, "GET", "stats")
    assert stats["auth_failures"] == 3 and stats["dm_sent"] == 0
    _, messages = await control(http, emulator, "GET", "messages")
    assert messages["messages"] == []


async def test_signature_over_the_emulator_url_and_clock_skew(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    """A client aimed here by a base-URL setting signs the emulator's own URL."""
    emulator = await make_emulator()
    url = emulator.url + "/1.1/direct_messages/events/new.json"

    async def post(timestamp: str | None = None) -> tuple[int, Any]:
        signer = oauth_signer(timestamp=timestamp)
        _, headers, _ = signer.sign(url, "POST")
        async with http.post(url, json=v11_body("42", "hi"), headers=headers) as resp:
            return resp.status, await resp.json()

    status, answer = await post()
    assert status == 200 and answer["event"]["message_create"]["sender_id"] == BOT
    status, answer = await post(timestamp=str(int(time.time()) - 1000))
    assert status == 401 and answer["errors"][0]["code"] == 135


async def test_injected_faults_through_tweepy(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    client = tweepy_client(http, emulator)
    send = client.create_direct_message

    await control(http, emulator, "POST", "faults", json={"dm_fail_next": 1})
    with pytest.raises(tweepy.TwitterServerError) as server_error:
        await send(participant_id="42", text="hi")
    assert server_error.value.response.status == 503

    await control(
        http,
        emulator,
        "POST",
        "faults",
        json={"dm_rate_limit_next": 1, "dm_rate_limit_reset_in": 30},
    )
    with pytest.raises(tweepy.TooManyRequests) as limited:
        await send(participant_id="42", text="hi")
    assert limited.value.reset_time is not None
    assert 25 <= limited.value.reset_time - time.time() <= 32

    await control(
        http,
        emulator,
        "POST",
        "faults",
        json={"dm_rate_limit_next": 1, "dm_rate_limit_reset_in": None},
    )
    with pytest.raises(tweepy.TooManyRequests) as bare:
        await send(participant_id="42", text="hi")
    assert bare.value.reset_time is None
    assert "x-rate-limit-remaining" not in bare.value.response.headers

    _, faults = await control(
        http, emulator, "POST", "faults", json={"forbidden_recipients": ["42"]}
    )
    assert faults["forbidden_recipients"] == ["42"]
    with pytest.raises(tweepy.Forbidden) as forbidden:
        await send(participant_id="42", text="hi")
    assert 349 in forbidden.value.api_codes
    assert (await send(participant_id="43", text="ok")).data["dm_event_id"]

    await control(http, emulator, "DELETE", "faults")
    _, faults = await control(http, emulator, "GET", "faults")
    assert faults["forbidden_recipients"] == [] and faults["dm_fail_next"] == 0
    await send(participant_id="42", text="fine now")

    _, messages = await control(http, emulator, "GET", "messages")
    assert [m["text"] for m in messages["messages"]] == ["ok", "fine now"]
    _, stats = await control(http, emulator, "GET", "stats")
    assert stats["dm_requests"] == 6 and stats["dm_sent"] == 2
    assert stats["dm_failed"] == 2 and stats["dm_rate_limited"] == 2

    await control(http, emulator, "POST", "reset")
    _, stats = await control(http, emulator, "GET", "stats")
    _, messages = await control(http, emulator, "GET", "messages")
    assert stats["dm_requests"] == 0 and messages["messages"] == []


async def test_delay_fault_and_request_validation(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    client = tweepy_client(http, emulator)
    await control(http, emulator, "POST", "faults", json={"dm_delay_seconds": 0.3})
    started = time.monotonic()
    await client.create_direct_message(participant_id="42", text="slow")
    assert time.monotonic() - started >= 0.3
    await control(http, emulator, "DELETE", "faults")
    with pytest.raises(tweepy.BadRequest):
        await client.create_direct_message(participant_id="42", text="")
    with pytest.raises(tweepy.BadRequest):
        await client.create_direct_message(participant_id="42", text="x" * 10_001)


async def test_rate_limit_budget_is_enforced(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator(dm_rate_limit=2, dm_rate_window=60.0)
    client = tweepy_client(http, emulator)
    client.return_type = aiohttp.ClientResponse
    remaining = []
    for _ in range(2):
        response = await client.create_direct_message(participant_id="42", text="hi")
        assert response.status == 201
        assert response.headers["x-rate-limit-limit"] == "2"
        remaining.append(response.headers["x-rate-limit-remaining"])
    assert remaining == ["1", "0"]
    with pytest.raises(tweepy.TooManyRequests) as limited:
        await client.create_direct_message(participant_id="42", text="hi")
    assert limited.value.reset_time is not None
    assert 0 < limited.value.reset_time - time.time() <= 61


# --- the command line ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    cred_names = {"consumer_key", "consumer_secret", "access_token", "access_token_secret"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CATBOT_") and k.lower() not in cred_names
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def test_cli_starts_listens_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    stderr_path = tmp_path / "stderr.log"
    with (
        stderr_path.open("w") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "catbot.emulator", "--port", str(port)],
            cwd=tmp_path,
            env=_subprocess_env(ENV),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as proc,
    ):
        try:
            _check_listening_then_sigterm(proc, port)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "Traceback" not in stderr_path.read_text()


def _check_listening_then_sigterm(proc: subprocess.Popen[str], port: int) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready, "no listening line within 10 s"
    line = proc.stdout.readline()
    assert line.strip() == (
        f"catbot emulator listening on http://127.0.0.1:{port} (api=v2, bot user {BOT})"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0


def test_cli_without_consumer_secret_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "catbot.emulator", "--port", str(_free_port())],
        cwd=tmp_path,
        env=_subprocess_env({"CATBOT_X_CONSUMER_KEY": "k"}),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "CATBOT_X_CONSUMER_SECRET" in result.stderr
    assert result.stdout == ""


def test_default_config_matches_the_contract() -> None:
    config = EmulatorConfig(consumer_secret="s")
    assert (config.host, config.port, config.api, config.bot_user_id) == (
        "127.0.0.1",
        8099,
        "v2",
        "1000",
    )
    assert config.crc_timeout == 3.0
