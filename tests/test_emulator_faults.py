"""The emulator's delivery spreading and injected faults, over real loopback sockets.

Scripted webhook receivers (their own CRC and signature maths) play the daemon's replicas;
tweepy's AsyncClient, unchanged, plays the daemon's X client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tweepy
from aiohttp import web

from catbot.emulator import ConfigError, config_from_env
from catbot.emulator.cli import config_from_args, configure_parser
from catbot.emulator.faults import Faults
from tests.emulator_fixtures import (
    ENV,
    SECRET,
    SIGNATURE_HEADER,
    ControlFactory,
    Serving,
    WebhookApp,
    hmac_b64,
)


class Hook(WebhookApp):
    """A webhook receiver with scripted answers: (delay, status) per POST, then 200 at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.secret = SECRET
        self.crc_delay = 0.0
        self.script: list[tuple[float, int]] = []
        self.posts: list[tuple[float, bytes, str | None]] = []
        super().__init__()

    async def _crc(self, request: web.Request) -> web.Response:
        token = request.query["crc_token"]
        self.crc_tokens.append(token)
        await asyncio.sleep(self.crc_delay)
        return web.json_response({"response_token": hmac_b64(self.secret, token.encode())})

    async def _event(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts.append((time.monotonic(), body, request.headers.get(SIGNATURE_HEADER)))
        self._changed.set()
        delay, status = self.script.pop(0) if self.script else (0.0, 200)
        await asyncio.sleep(delay)
        return web.json_response({"ok": status < 300}, status=status)

    def event_ids(self) -> list[str]:
        ids: list[str] = []
        for _, body, _ in self.posts:
            payload = json.loads(body)
            events = payload.get("direct_message_events") or payload["data"]["payload"].get(
                "direct_message_events", []
            )
            ids.extend(e["id"] for e in events)
        return ids

    def _shortfall(self, count: int) -> str:
        return f"{self.name}: expected {count} posts, got {len(self.posts)}"


HookFactory = Callable[..., Awaitable[Hook]]


@pytest.fixture
def make_hook(serving: Serving) -> HookFactory:
    async def factory(name: str = "hook") -> Hook:
        hook = Hook(name)
        hook.url = await serving(hook.app) + "/webhook"
        return hook

    return factory


async def settle(seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)


# --- Part A: delivery spreading --------------------------------------------------------


async def test_default_mode_delivers_every_event_to_every_webhook(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    ctl = await make_control()
    hooks = [await make_hook(f"h{i}") for i in range(3)]
    await ctl.register(*hooks)
    assert (await ctl.ok("GET", "delivery_mode"))["mode"] == "all"
    answer = await ctl.dm()
    assert [d["status"] for d in answer["deliveries"]] == [200, 200, 200]
    assert [len(h.posts) for h in hooks] == [1, 1, 1]


async def test_round_robin_sends_each_event_to_one_webhook_in_turn(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    ctl = await make_control()
    hooks = [await make_hook(f"h{i}") for i in range(3)]
    ids = await ctl.register(*hooks)
    mode = await ctl.ok("POST", "delivery_mode", {"mode": "round_robin"})
    assert mode["mode"] == "round_robin" and mode["duplicate_every"] == 0
    assert mode["rotation"] == ids

    event_ids = []
    for n in range(6):
        answer = await ctl.dm(str(100 + n), f"dm {n}")
        assert [d["url"] for d in answer["deliveries"]] == [hooks[n % 3].url]
        assert answer["deliveries"][0]["status"] == 200
        event_ids.append(answer["event_id"])
    assert [h.event_ids() for h in hooks] == [
        [event_ids[0], event_ids[3]],
        [event_ids[1], event_ids[4]],
        [event_ids[2], event_ids[5]],
    ]
    for hook in hooks:  # each copy is X's signed body, unchanged
        for _, body, signature in hook.posts:
            assert signature == hmac_b64(SECRET, body)
    state = await ctl.ok("GET", "delivery_mode")
    assert state["planned"] == 6 and state["last_webhook_id"] == ids[2]

    # The bot's reply comes back as an event too: one webhook gets the echo, in turn.
    await ctl.tweepy.create_direct_message(participant_id="42", text="r")
    await hooks[0].wait_posts(3)
    await settle()
    assert [len(h.posts) for h in hooks] == [3, 2, 2]

    # Back to X's behaviour.
    await ctl.ok("POST", "delivery_mode", {"mode": "all"})
    assert len((await ctl.dm())["deliveries"]) == 3


async def test_round_robin_duplicate_every_sends_the_nth_event_to_two_webhooks(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    ctl = await make_control()
    hooks = [await make_hook(f"h{i}") for i in range(2)]
    await ctl.register(*hooks)
    await ctl.ok("POST", "delivery_mode", {"mode": "round_robin", "duplicate_every": 2})
    answers = [await ctl.dm(str(200 + n)) for n in range(4)]
    assert [len(a["deliveries"]) for a in answers] == [1, 2, 1, 2]
    second = answers[1]["deliveries"]
    assert [d.get("duplicate", False) for d in second] == [False, True]
    assert {d["url"] for d in second} == {hooks[0].url, hooks[1].url}
    # Same bytes, same signature on both replicas.
    event = answers[1]["event_id"]
    copies = [body for h in hooks for _, body, _ in h.posts if event in body.decode()]
    assert len(copies) == 2 and copies[0] == copies[1]
    assert (await ctl.stats())["duplicates_sent"] == 2
    assert sorted(hooks[0].event_ids() + hooks[1].event_ids()) == sorted(
        [a["event_id"] for a in answers] + [answers[1]["event_id"], answers[3]["event_id"]]
    )


async def test_round_robin_skips_invalid_webhooks_and_redelivers_to_the_next(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    ctl = await make_control()
    hooks = [await make_hook(f"h{i}") for i in range(3)]
    ids = await ctl.register(*hooks)
    await ctl.ok("POST", "delivery_mode", {"mode": "round_robin"})
    hooks[1].secret = "rotated-away"
    [result] = (await ctl.ok("POST", "crc", {"webhook_id": ids[1]}))["crc"]
    assert result["valid"] is False and "does not match" in result["error"]
    assert (await ctl.ok("GET", "delivery_mode"))["rotation"] == [ids[0], ids[2]]
    urls = [(await ctl.dm(str(300 + n)))["deliveries"][0]["url"] for n in range(4)]
    assert urls == [hooks[0].url, hooks[2].url, hooks[0].url, hooks[2].url]
    assert hooks[1].posts == []

    # A redelivery goes to the next replica in turn, as a load balancer would send it.
    event = (await ctl.dm("399"))["event_id"]
    assert hooks[0].event_ids()[-1] == event
    again = await ctl.ok("POST", "redeliver", {"event_id": event})
    assert [d["url"] for d in again["deliveries"]] == [hooks[2].url]


async def test_round_robin_with_several_startup_webhooks_ignores_the_tier_limit(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    hooks = [await make_hook(f"h{i}") for i in range(3)]
    with pytest.raises(ConfigError, match="max-webhooks"):
        config_from_env(ENV, webhook_urls=[h.url for h in hooks])
    ctl = await make_control(*(h.url for h in hooks), delivery_mode="round_robin")
    deadline = time.monotonic() + 5
    while len((await ctl.ok("GET", "delivery_mode"))["rotation"]) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    for n in range(3):
        await ctl.dm(str(400 + n))
    assert [len(h.posts) for h in hooks] == [1, 1, 1]


async def test_delivery_mode_validation(make_control: ControlFactory) -> None:
    ctl = await make_control()
    for bad in (
        {"mode": "random"},
        {},
        {"mode": "round_robin", "duplicate_every": -1},
        {"mode": "round_robin", "duplicate_every": True},
        {"mode": "all", "extra": 1},
    ):
        status, answer = await ctl.call("POST", "delivery_mode", bad)
        assert status == 400 and answer["error"], bad
    assert (await ctl.ok("GET", "delivery_mode"))["mode"] == "all"


def test_cli_flags_for_delivery(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(
        [
            "--delivery-mode",
            "round_robin",
            "--duplicate-every",
            "3",
            "--delivery-timeout",
            "0.5",
            "--redelivery-delays",
            "0.2,0.5,1",
        ]
    )
    config = config_from_args(args)
    assert config.delivery_mode == "round_robin" and config.duplicate_every == 3
    assert config.delivery_timeout == 0.5 and config.redelivery_delays == (0.2, 0.5, 1.0)
    assert config_from_args(parser.parse_args([])).redelivery_delays == ()
    with pytest.raises(ConfigError, match="redelivery delays"):
        config_from_args(parser.parse_args(["--redelivery-delays", "0.2,soon"]))
    with pytest.raises(ConfigError, match="duplicate every"):
        config_from_args(parser.parse_args(["--duplicate-every", "-2"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--delivery-mode", "sometimes"])


# --- Part B: faults on X's routes ------------------------------------------------------


async def test_latency_on_any_route_by_class_pattern_or_template(
    make_control: ControlFactory, http: aiohttp.ClientSession
) -> None:
    ctl = await make_control()
    client = ctl.tweepy

    async def timed(call: Callable[[], Awaitable[Any]]) -> float:
        started = time.monotonic()
        await call()
        return time.monotonic() - started

    async def users_me() -> Any:
        async with http.get(ctl.emulator.url + "/2/users/me") as resp:
            return resp.status

    async def list_webhooks() -> Any:
        async with http.get(ctl.emulator.url + "/2/webhooks") as resp:
            return resp.status

    async def send() -> Any:
        return await client.create_direct_message(participant_id="42", text="hi")

    await ctl.ok("POST", "faults", {"latency": {"dm": 0.3}})
    assert await timed(send) >= 0.3
    assert await timed(list_webhooks) < 0.25
    assert await timed(lambda: ctl.ok("GET", "stats")) < 0.25  # never the control API
    await ctl.ok("POST", "faults", {"latency": {"webhooks": 0.3, "/2/users/*": 0.2}})
    assert await timed(list_webhooks) >= 0.3
    assert await timed(users_me) >= 0.2
    assert await timed(send) < 0.25
    await ctl.ok(
        "POST",
        "faults",
        {"latency": {"POST /2/dm_conversations/with/{participant_id}/messages": 0.3}},
    )
    assert await timed(send) >= 0.3
    await ctl.ok("POST", "faults", {"latency": {"*": 0.2}})
    assert await timed(users_me) >= 0.2 and await timed(send) >= 0.2
    assert await timed(lambda: ctl.ok("GET", "faults")) < 0.15
    stats = await ctl.stats()
    assert stats["latency_injected"] == 6
    log = (await ctl.ok("GET", "requests?route=dm"))["requests"]
    assert [entry["latency_injected"] for entry in log] == [0.3, 0.0, 0.3, 0.2]
    for bad in ({"latency": {"dms": 1}}, {"latency": {"dm": -1}}, {"latency": ["dm"]}):
        status, _ = await ctl.call("POST", "faults", bad)
        assert status == 400


async def test_fail_ratio_is_seeded_and_fail_for_seconds_is_an_outage(
    make_control: ControlFactory,
) -> None:
    ctl = await make_control()
    client = ctl.tweepy

    async def pattern() -> list[int]:
        statuses = []
        for _ in range(20):
            try:
                await client.create_direct_message(participant_id="42", text="hi")
                statuses.append(201)
            except tweepy.TwitterServerError as exc:
                statuses.append(exc.response.status)
        return statuses

    await ctl.ok("POST", "faults", {"dm_fail_ratio": 0.5, "dm_fail_status": 502, "seed": 7})
    first = await pattern()
    await ctl.ok("POST", "faults", {"dm_fail_ratio": 0.5, "dm_fail_status": 502, "seed": 7})
    assert await pattern() == first
    assert 3 <= first.count(502) <= 17 and set(first) == {201, 502}

    faults = await ctl.ok("POST", "faults", {"dm_fail_for_seconds": 0.5})
    assert 0.4 < faults["dm_fail_for_seconds"] <= 0.5
    with pytest.raises(tweepy.TwitterServerError):
        await client.create_direct_message(participant_id="42", text="down")
    await asyncio.sleep(0.55)
    assert (await ctl.ok("GET", "faults"))["dm_fail_for_seconds"] == 0
    await client.create_direct_message(participant_id="42", text="back")


async def test_dropped_connections_send_nothing(make_control: ControlFactory) -> None:
    ctl = await make_control()
    client = ctl.tweepy
    await ctl.ok("POST", "faults", {"dm_drop_next": 2})
    for _ in range(2):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.create_direct_message(participant_id="42", text="lost")
    await client.create_direct_message(participant_id="42", text="arrives")
    assert [m["text"] for m in (await ctl.ok("GET", "messages"))["messages"]] == ["arrives"]
    stats = await ctl.stats()
    assert stats["dm_dropped"] == 2 and stats["dm_requests"] == 3 and stats["dm_sent"] == 1
    log = (await ctl.ok("GET", "requests"))["requests"]
    assert [(e["status"], e["outcome"]) for e in log] == [
        (None, "dropped"),
        (None, "dropped"),
        (201, "sent"),
    ]
    await ctl.ok("POST", "faults", {"dm_drop_ratio": 1.0})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.create_direct_message(participant_id="42", text="lost")


async def test_rate_limit_window_and_runtime_budget(make_control: ControlFactory) -> None:
    ctl = await make_control()
    client = ctl.tweepy
    send = client.create_direct_message
    set_at = time.time()
    await ctl.ok("POST", "faults", {"dm_rate_limit_for_seconds": 1.0})
    resets = set()
    for _ in range(3):
        with pytest.raises(tweepy.TooManyRequests) as limited:
            await send(participant_id="42", text="hi")
        resets.add(limited.value.reset_time)
    [reset] = resets
    assert set_at + 1 <= reset <= set_at + 2
    await asyncio.sleep(max(0.0, reset - time.time()) + 0.05)
    await send(participant_id="42", text="after the window")
    log = (await ctl.ok("GET", "requests?route=dm"))["requests"]
    assert [e["outcome"] for e in log] == ["rate_limited"] * 3 + ["sent"]
    assert all(e["at"] < reset for e in log[:3]) and log[3]["at"] >= reset

    await ctl.ok(
        "POST",
        "faults",
        {"dm_rate_limit_for_seconds": 5, "dm_rate_limit_reset_in": None},
    )
    with pytest.raises(tweepy.TooManyRequests) as bare:
        await send(participant_id="42", text="hi")
    assert "x-rate-limit-reset" not in bare.value.response.headers

    client.return_type = aiohttp.ClientResponse
    await ctl.ok("POST", "faults", {"dm_budget_limit": 2, "dm_budget_window": 60})
    remaining = []
    for _ in range(2):
        response = await send(participant_id="42", text="budget")
        remaining.append(response.headers["x-rate-limit-remaining"])
    assert remaining == ["1", "0"] and response.headers["x-rate-limit-limit"] == "2"
    with pytest.raises(tweepy.TooManyRequests) as spent:
        await send(participant_id="42", text="budget")
    assert 55 <= spent.value.reset_time - time.time() <= 61
    await ctl.ok("DELETE", "faults")  # the configured budget (200) again, a fresh window
    response = await send(participant_id="42", text="fresh")
    assert response.headers["x-rate-limit-limit"] == "200"
    assert response.headers["x-rate-limit-remaining"] == "199"


async def test_permanent_refusals_with_codes_349_226_and_150(make_control: ControlFactory) -> None:
    ctl = await make_control()
    client = ctl.tweepy
    faults = await ctl.ok(
        "POST",
        "faults",
        {
            "forbidden_recipients": ["41"],
            "automated_recipients": [42],
            "forbidden_codes": {"43": 150},
        },
    )
    assert faults["automated_recipients"] == ["42"] and faults["forbidden_codes"] == {"43": 150}
    for user, code in (("41", 349), ("42", 226), ("43", 150)):
        with pytest.raises(tweepy.Forbidden) as refused:
            await client.create_direct_message(participant_id=user, text="hi")
        assert refused.value.api_codes == [code]
        with pytest.raises(tweepy.Forbidden) as v11:
            await client.request(
                "POST",
                "/1.1/direct_messages/events/new.json",
                params={},
                json={
                    "event": {
                        "type": "message_create",
                        "message_create": {
                            "target": {"recipient_id": user},
                            "message_data": {"text": "hi"},
                        },
                    }
                },
                user_auth=True,
            )
        assert v11.value.api_codes == [code]
    await client.create_direct_message(participant_id="44", text="fine")
    assert (await ctl.stats())["dm_forbidden"] == 6
    status, answer = await ctl.call("POST", "faults", {"forbidden_codes": {"43": 88}})
    assert status == 400 and "forbidden_codes" in answer["error"]


async def test_patch_merges_and_fields_are_validated(make_control: ControlFactory) -> None:
    ctl = await make_control()
    await ctl.ok("POST", "faults", {"dm_fail_next": 3, "latency": {"dm": 0.1}})
    merged = await ctl.ok("PATCH", "faults", {"dm_drop_next": 1})
    assert (merged["dm_fail_next"], merged["dm_drop_next"], merged["latency"]) == (
        3,
        1,
        {"dm": 0.1},
    )
    replaced = await ctl.ok("POST", "faults", {"dm_drop_next": 1})
    assert replaced["dm_fail_next"] == 0 and replaced["latency"] == {}
    for bad in (
        {"dm_fail_ratio": 1.5},
        {"dm_drop_next": -1},
        {"reorder_window": "soon"},
        {"redelivery_delays": [0.1, -1]},
        {"delivery_timeout": 0},
        {"seed": "x"},
        {"dm_budget_limit": 0},
        {"nonsense": 1},
    ):
        status, answer = await ctl.call("PATCH", "faults", bad)
        assert status == 400 and next(iter(bad)) in answer["error"], bad
    assert (await ctl.ok("DELETE", "faults")) == Faults().to_json()


# --- Part B: faults on deliveries ------------------------------------------------------


async def test_duplicate_deliveries(make_control: ControlFactory, make_hook: HookFactory) -> None:
    hook = await make_hook()
    ctl = await make_control(hook.url)
    await ctl.ok("POST", "faults", {"deliver_duplicates_ratio": 1.0})
    answer = await ctl.dm()
    assert [(d["status"], d.get("duplicate", False)) for d in answer["deliveries"]] == [
        (200, False),
        (200, True),
    ]
    assert len(hook.posts) == 2 and hook.posts[0][1] == hook.posts[1][1]
    await ctl.ok("POST", "faults", {"deliver_duplicates_ratio": 0.5, "seed": 3})
    for n in range(10):
        await ctl.dm(str(500 + n))
    duplicates = (await ctl.stats())["duplicates_sent"]
    assert 1 + 1 <= duplicates <= 1 + 9
    assert len(hook.posts) == 2 + 10 + duplicates - 1


async def test_reordered_deliveries_are_held_then_shuffled(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    hook = await make_hook()
    ctl = await make_control(hook.url)
    await ctl.ok("POST", "faults", {"reorder_window": 0.4, "seed": 1})
    answers = [await ctl.dm(str(600 + n), f"msg {n}") for n in range(6)]
    for answer in answers:
        assert answer["deliveries"] == [
            {"url": hook.url, "status": None, "error": None, "held": True}
        ]
    assert hook.posts == []
    await hook.wait_posts(6)
    sent_order = [a["event_id"] for a in answers]
    assert sorted(hook.event_ids()) == sorted(sent_order)
    assert hook.event_ids() != sent_order
    stats = await ctl.stats()
    assert stats["deliveries_held"] == 6 and stats["reorder_flushes"] == 1
    # Turning the fault off sends at once again.
    await ctl.ok("DELETE", "faults")
    assert (await ctl.dm())["deliveries"][0]["status"] == 200


async def test_redelivery_after_errors_and_slow_answers(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    hook = await make_hook()
    ctl = await make_control(hook.url, redelivery_delays=(0.05, 0.1, 0.1))
    hook.script = [(0.0, 500), (0.0, 503)]
    answer = await ctl.dm()
    assert answer["deliveries"][0]["status"] == 500  # the first attempt is what X reports
    await hook.wait_posts(3)
    await settle()
    assert len(hook.posts) == 3 and len({body for _, body, _ in hook.posts}) == 1
    stats = await ctl.stats()
    assert stats["redeliveries"] == 2 and stats["redeliveries_exhausted"] == 0
    attempts = [d["attempt"] for d in (await ctl.ok("GET", "deliveries"))["deliveries"]]
    assert attempts == [0, 1, 2]

    # Slower than the delivery timeout counts as failed, like no answer at all.
    await ctl.ok("POST", "faults", {"delivery_timeout": 0.2})
    hook.script = [(0.5, 200)]
    answer = await ctl.dm("43")
    assert answer["deliveries"][0]["status"] is None
    assert "no answer within 0.2 s" in answer["deliveries"][0]["error"]
    await hook.wait_posts(5)
    stats = await ctl.stats()
    assert stats["delivery_timeouts"] == 1 and stats["redeliveries"] == 3

    # An answer that never gets better: retried once per delay, then given up.
    await ctl.ok("POST", "faults", {"redelivery_delays": [0.05, 0.05]})
    hook.script = [(0.0, 400)] * 3
    await ctl.dm("44")
    await hook.wait_posts(8)
    await settle(0.3)
    stats = await ctl.stats()
    assert stats["redeliveries"] == 5 and stats["redeliveries_exhausted"] == 1
    assert len(hook.posts) == 8


async def test_no_redelivery_unless_configured(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    hook = await make_hook()
    ctl = await make_control(hook.url)
    hook.script = [(0.0, 503)]
    assert (await ctl.dm())["deliveries"][0]["status"] == 503
    await settle(0.3)
    assert len(hook.posts) == 1 and (await ctl.stats())["redeliveries"] == 0


async def test_a_late_crc_answer_invalidates_the_webhook(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    hook = await make_hook()
    ctl = await make_control(hook.url)
    await hook.wait_posts(0)
    [ok] = (await ctl.ok("POST", "crc"))["crc"]
    assert ok["valid"] is True
    await ctl.ok("POST", "faults", {"crc_timeout": 0.2})
    hook.crc_delay = 0.4
    [late] = (await ctl.ok("POST", "crc"))["crc"]
    assert late["valid"] is False and "within 0.2 s" in late["error"]
    answer = await ctl.dm()
    assert answer["deliveries"][0]["error"].startswith("webhook invalid")
    assert hook.posts == []
    hook.crc_delay = 0.0
    [back] = (await ctl.ok("POST", "crc"))["crc"]
    assert back["valid"] is True
    assert (await ctl.dm())["deliveries"][0]["status"] == 200
    status, _ = await ctl.call("POST", "crc", {"webhook_id": "123"})
    assert status == 404


async def test_request_log_filters(
    make_control: ControlFactory, http: aiohttp.ClientSession
) -> None:
    ctl = await make_control()
    client = ctl.tweepy
    await client.create_direct_message(participant_id="42", text="one")
    middle = time.time()
    async with http.get(ctl.emulator.url + "/2/webhooks") as resp:
        assert resp.status == 401
    await client.create_direct_message(participant_id="42", text="two")
    everything = (await ctl.ok("GET", "requests"))["requests"]
    assert [(e["route"], e["status"]) for e in everything] == [
        ("dm", 201),
        ("webhooks", 401),
        ("dm", 201),
    ]
    assert all(e["answered_at"] >= e["at"] for e in everything)
    later = (await ctl.ok("GET", f"requests?since={middle}&route=dm"))["requests"]
    assert len(later) == 1 and later[0]["outcome"] == "sent"
    status, _ = await ctl.call("GET", "requests?since=yesterday")
    assert status == 400
    await ctl.ok("POST", "reset")
    assert (await ctl.ok("GET", "requests"))["requests"] == []


async def test_reset_discards_held_deliveries(
    make_control: ControlFactory, make_hook: HookFactory
) -> None:
    hook = await make_hook()
    ctl = await make_control(hook.url)
    await ctl.ok("POST", "faults", {"reorder_window": 0.2})
    assert (await ctl.dm())["deliveries"][0]["held"] is True
    await ctl.ok("POST", "reset")
    await settle(0.4)
    assert hook.posts == []
    assert (await ctl.ok("GET", "faults"))["reorder_window"] == 0
    assert (await ctl.dm())["deliveries"][0]["status"] == 200
