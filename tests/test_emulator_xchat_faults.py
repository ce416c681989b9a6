"""X Chat sends are their own family at the emulator: their own allowance, their own injected
trouble, their own counters. A real emulator on loopback; the bot is played with X's SDK
(chatxdk) as in test_emulator_xchat, and its sends go through the daemon's own X Chat client
(catbot.xchat.client), so each kind of trouble is shown to reach the daemon as the failure
class its outbox acts on (retry, wait for the reset, dead-letter).

What each test would catch: X Chat sends spending (or blocked by) the DM allowance, faults
that never fire or fire on the wrong route, a failed send that X keeps anyway (a retry must
then be a new message, not a repeat), counters and the request log missing X Chat.
"""

from __future__ import annotations

import math
import time
from typing import Any

import aiohttp
import pytest
import tweepy

from catbot.emulator.xchat_api import XCHAT_RATE_LIMIT, XCHAT_RATE_WINDOW
from catbot.x.dm import Credentials, PermanentSendError, RateLimited, TransientSendError
from catbot.xchat.client import XChatClient
from catbot.xchat.crypto import SendPayload
from tests.emulator_fixtures import (
    ACCESS_TOKEN,
    CONSUMER_KEY,
    SECRET,
    TOKEN_SECRET,
    EmulatorFactory,
    ReceiverFactory,
)
from tests.test_emulator_xchat import CONVERSATION, FRIEND, Session, control, messages, open_chat

CREDENTIALS = Credentials(CONSUMER_KEY, SECRET, ACCESS_TOKEN, TOKEN_SECRET)


def reply(chat: Session, text: str) -> SendPayload:
    """A fresh encrypted reply to the friend's first message, as the daemon stores it."""
    sent = chat.bot.chat.encrypt_reply(CONVERSATION, text, chat.delivery["encoded_event"])
    return SendPayload(
        path_id=FRIEND,
        message_id=sent.message_id,
        encoded_message_create_event=sent.encrypted_content,
        encoded_message_event_signature=sent.encoded_event_signature,
        conversation_key_version=chat.delivery["conversation_key_version"],
    )


def sender(http: aiohttp.ClientSession, chat: Session) -> XChatClient:
    return XChatClient(CREDENTIALS, http, chat.emulator.url)


async def faults(http: aiohttp.ClientSession, chat: Session, method: str, **fields: Any) -> Any:
    status, body = await control(http, chat.emulator, method, "faults", json=fields)
    assert status == 200, body
    return body


async def stats(http: aiohttp.ClientSession, chat: Session) -> dict[str, int]:
    status, body = await control(http, chat.emulator, "GET", "stats")
    assert status == 200
    result: dict[str, int] = body
    return result


async def xchat_log(http: aiohttp.ClientSession, chat: Session) -> list[dict[str, Any]]:
    status, body = await control(http, chat.emulator, "GET", "requests?route=xchat")
    assert status == 200
    return [e for e in body["requests"] if e["path"].endswith("/messages")]


async def bot_texts(http: aiohttp.ClientSession, chat: Session) -> list[str]:
    return [m["text"] for m in await messages(http, chat.emulator) if m["direction"] == "out"]


async def dm_headers(http: aiohttp.ClientSession, chat: Session) -> dict[str, str]:
    """Send one legacy DM as the bot; the rate-limit headers of the answer."""
    client = chat.client
    client.return_type = aiohttp.ClientResponse
    response = await client.create_direct_message(participant_id=FRIEND, text="a plain DM")
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-rate")}


async def test_xchat_sends_have_their_own_allowance(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    chat = await open_chat(make_emulator, make_receiver, http)
    client = sender(http, chat)

    # The default allowance, counted down in X's headers, untouched by DM sends.
    first = await client.send_message(reply(chat, "one"))
    assert first.remaining == XCHAT_RATE_LIMIT - 1
    assert first.reset_at is not None
    assert time.time() < first.reset_at <= math.ceil(time.time() + XCHAT_RATE_WINDOW)
    headers = await dm_headers(http, chat)
    assert headers["x-rate-limit-remaining"] == str(chat.emulator.runtime.config.dm_rate_limit - 1)
    assert (await client.send_message(reply(chat, "two"))).remaining == XCHAT_RATE_LIMIT - 2

    # A budget of 2 per minute: a fresh window, two sends, then X's 429 until its reset.
    await faults(http, chat, "POST", xchat_budget_limit=2, xchat_budget_window=60)
    remaining = [(await client.send_message(reply(chat, f"budget {n}"))).remaining for n in (1, 2)]
    assert remaining == [1, 0]
    before = time.time()
    with pytest.raises(RateLimited) as limited:
        await client.send_message(reply(chat, "over"))
    assert limited.value.reset_at is not None
    assert before + 55 <= limited.value.reset_at <= time.time() + 61
    # The DM allowance is a different one: DMs still go.
    assert (await dm_headers(http, chat))["x-rate-limit-remaining"] == str(
        chat.emulator.runtime.config.dm_rate_limit - 2
    )

    # And the other way round: DMs out of budget leave X Chat sends alone.
    await faults(http, chat, "POST", dm_budget_limit=1, dm_budget_window=60)
    await dm_headers(http, chat)
    with pytest.raises(tweepy.TooManyRequests):
        await dm_headers(http, chat)
    assert (await client.send_message(reply(chat, "dm spent, chat fine"))).remaining == (
        XCHAT_RATE_LIMIT - 1
    )

    counted = await stats(http, chat)
    assert (counted["xchat_requests"], counted["xchat_sent"], counted["xchat_rate_limited"]) == (
        6,
        5,
        1,
    )
    assert counted["xchat_received"] == 1 and counted["dm_rate_limited"] == 1
    outcomes = [e["outcome"] for e in await xchat_log(http, chat)]
    assert outcomes == ["sent", "sent", "sent", "sent", "rate_limited", "sent"]
    listed = await messages(http, chat.emulator)
    assert [m["text"] for m in listed if m["channel"] == "xchat" and m["direction"] == "out"] == [
        "one",
        "two",
        "budget 1",
        "budget 2",
        "dm spent, chat fine",
    ]


async def test_injected_trouble_reaches_the_daemon_as_its_failure_classes(
    make_emulator: EmulatorFactory, make_receiver: ReceiverFactory, http: aiohttp.ClientSession
) -> None:
    chat = await open_chat(make_emulator, make_receiver, http)
    client = sender(http, chat)

    # 429s: counted ones with X's headers, a time-boxed one, and one without headers.
    await faults(http, chat, "POST", xchat_rate_limit_next=1, xchat_rate_limit_reset_in=5)
    before = time.time()
    with pytest.raises(RateLimited) as injected:
        await client.send_message(reply(chat, "limited"))
    assert injected.value.reset_at is not None
    assert before + 5 <= injected.value.reset_at <= time.time() + 6
    await faults(http, chat, "POST", xchat_rate_limit_for_seconds=30)
    for _ in range(2):
        with pytest.raises(RateLimited) as boxed:
            await client.send_message(reply(chat, "still limited"))
        assert boxed.value.reset_at is not None and boxed.value.reset_at >= before + 29
    await faults(http, chat, "PATCH", xchat_rate_limit_reset_in=None)
    with pytest.raises(RateLimited) as bare:
        await client.send_message(reply(chat, "no headers"))
    assert bare.value.reset_at is None

    # X is down: a 5xx after the message was checked, and X keeps nothing. The daemon's
    # retry of the same payload is then a first send, answered and recorded once.
    await faults(http, chat, "POST", xchat_fail_next=1, xchat_fail_status=502)
    payload = reply(chat, "after an outage")
    with pytest.raises(TransientSendError, match="502"):
        await client.send_message(payload)
    assert await bot_texts(http, chat) == []
    sent = await client.send_message(payload)
    again = await client.send_message(payload)  # a retry after a lost answer: the same event
    assert sent.encoded_message_event == again.encoded_message_event is not None
    assert await bot_texts(http, chat) == ["after an outage"]
    await faults(http, chat, "POST", xchat_fail_for_seconds=30)
    for _ in range(2):
        with pytest.raises(TransientSendError, match="503"):
            await client.send_message(reply(chat, "down"))

    # A broken network path: no answer at all, nothing sent.
    await faults(http, chat, "POST", xchat_drop_next=1)
    with pytest.raises(TransientSendError):
        await client.send_message(reply(chat, "dropped"))

    # A recipient X will never let the bot write to: permanent, dead-lettered.
    await faults(http, chat, "POST", xchat_forbidden_recipients=[FRIEND])
    with pytest.raises(PermanentSendError, match="403"):
        await client.send_message(reply(chat, "forbidden"))

    # Slow: an answer after the delay (past the daemon's send timeout, a timeout), by the
    # send fault and by the `xchat` latency key alike.
    for fields in ({"xchat_delay_seconds": 0.4}, {"latency": {"xchat": 0.4}}):
        await faults(http, chat, "POST", **fields)
        started = time.monotonic()
        await client.send_message(reply(chat, "slow"))
        assert time.monotonic() - started >= 0.4

    # None of that touched DM sends, and all of it is counted and logged.
    await faults(http, chat, "DELETE")
    await dm_headers(http, chat)
    counted = await stats(http, chat)
    assert counted["xchat_rate_limited"] == 4
    assert counted["xchat_failed"] == 4  # 502, two 503s, the 403
    assert counted["xchat_forbidden"] == 1 and counted["xchat_dropped"] == 1
    assert counted["xchat_sent"] == 4  # the recovered send, its repeat, the two slow ones
    assert (counted["dm_failed"], counted["dm_rate_limited"], counted["dm_sent"]) == (0, 0, 1)
    log = await xchat_log(http, chat)
    assert [(e["outcome"], e["status"]) for e in log] == [
        ("rate_limited", 429),
        ("rate_limited", 429),
        ("rate_limited", 429),
        ("rate_limited", 429),
        ("failed", 502),
        ("sent", 201),
        ("sent", 201),
        ("failed", 503),
        ("failed", 503),
        ("dropped", None),
        ("forbidden", 403),
        ("sent", 201),
        ("sent", 201),
    ]
    texts = await bot_texts(http, chat)
    assert texts[:3] == ["after an outage", "slow", "slow"] and texts[3] == "a plain DM"


async def test_xchat_fault_fields_are_validated_and_listed(
    make_emulator: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emulator = await make_emulator()
    for bad in (
        {"xchat_fail_next": -1},
        {"xchat_fail_status": 200},
        {"xchat_budget_limit": 0},
        {"xchat_budget_window": 0},
        {"xchat_rate_limit_reset_in": "soon"},
        {"xchat_forbidden_recipients": "42"},
        {"xchat_delay_seconds": -1},
        {"latency": {"xchats": 1}},
    ):
        status, answer = await control(http, emulator, "PATCH", "faults", json=bad)
        assert status == 400 and next(iter(bad)) in answer["error"], (bad, answer)
    status, listed = await control(
        http,
        emulator,
        "POST",
        "faults",
        json={"xchat_fail_for_seconds": 10, "xchat_rate_limit_for_seconds": 20,
              "xchat_forbidden_recipients": [43, "42"]},
    )
    assert status == 200
    assert 9 <= listed["xchat_fail_for_seconds"] <= 10
    assert 19 <= listed["xchat_rate_limit_for_seconds"] <= 21
    assert listed["xchat_forbidden_recipients"] == ["42", "43"]
    assert listed["dm_fail_for_seconds"] == 0 and listed["dm_rate_limit_for_seconds"] == 0
    cleared = (await control(http, emulator, "DELETE", "faults"))[1]
    assert cleared["xchat_fail_for_seconds"] == 0 and cleared["xchat_forbidden_recipients"] == []
