"""Signed DM deliveries, and a small open-loop Python load generator for fixed rates.

wrk drives the throughput runs; fixed offered rates (500/s) and event-to-reply probes use
this generator, which schedules each request at start + i/rate and measures latency from
that scheduled time (no coordinated omission). Its own ceiling is shown by `bench.run`
running it against the bare reference too.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import aiohttp

from catbot.signing import SIGNATURE_HEADER, sign_body
from testkit.processes import BOT_ID

ENTITIES: dict[str, list[object]] = {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []}


def delivery(event_id: str, sender_id: str, created_ms: int, text: str = "cat fact please"
             ) -> bytes:
    body = {
        "for_user_id": BOT_ID,
        "direct_message_events": [{
            "type": "message_create",
            "id": event_id,
            "created_timestamp": str(created_ms),
            "message_create": {
                "target": {"recipient_id": BOT_ID},
                "sender_id": sender_id,
                "message_data": {"text": text, "entities": ENTITIES},
            },
        }],
        "users": {
            sender_id: {"id": sender_id, "name": "Bench " + sender_id,
                        "screen_name": "bench" + sender_id},
            BOT_ID: {"id": BOT_ID, "name": "catbot", "screen_name": "catbot"},
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


def signed_bodies(secret: str, prefix: str, count: int, users: int = 50_000,
                  first_user: int = 2_000_000) -> Iterator[tuple[str, bytes]]:
    """`count` deliveries with unique ids `<prefix><i>`; senders cycle over `users` ids.
    Event ids are digits after a per-run prefix made of digits too (X ids are digits)."""
    now_ms = int(time.time() * 1000)
    tag = abs(hash(prefix)) % 10_000_000
    for i in range(count):
        body = delivery(f"9{tag:07d}{i:09d}", str(first_user + i % users), now_ms)
        yield sign_body(secret, body), body


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "p999_ms": float("nan"),
                "max_ms": float("nan")}
    v = sorted(values)

    def pct(p: float) -> float:
        return v[min(len(v) - 1, int(p / 100 * len(v)))] * 1000

    return {"p50_ms": pct(50), "p99_ms": pct(99), "p999_ms": pct(99.9), "max_ms": v[-1] * 1000}


async def _post(session: aiohttp.ClientSession, url: str, signature: str, body: bytes) -> int:
    async with session.post(url, data=body, headers={
        SIGNATURE_HEADER: signature, "Content-Type": "application/json"}) as resp:
        await resp.read()
        return resp.status


async def _on_schedule(
    count: int, rate: float, one: Callable[[int, float], Coroutine[Any, Any, None]]
) -> float:
    """Start `one(i, scheduled)` at `rate`/s whatever the answers take (open loop: a slow
    server does not slow the offered load, so its latency is not hidden); `scheduled` is the
    loop time request i was due. Waits for all; returns how long the sending took."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks: list[asyncio.Task[None]] = []
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    sent_span = loop.time() - start
    await asyncio.gather(*tasks)
    return sent_span


async def open_loop(url: str, secret: str, prefix: str, rate: float, count: int
                    ) -> dict[str, Any]:
    bodies = list(signed_bodies(secret, prefix, count))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int, scheduled: float) -> None:
            status = await _post(session, url, *bodies[i])
            latencies.append(asyncio.get_running_loop().time() - scheduled)
            statuses[status] = statuses.get(status, 0) + 1

        sent_span = await _on_schedule(count, rate, one)
    return {"offered_rate": rate, "sent": count, "ok": statuses.get(200, 0),
            "statuses": statuses, "achieved_rate": count / max(sent_span, 1e-9),
            **percentiles(latencies)}


async def post_many(url: str, secret: str, prefix: str, count: int) -> None:
    async with aiohttp.ClientSession() as session:
        for signature, body in signed_bodies(secret, prefix, count, users=count):
            assert await _post(session, url, signature, body) == 200


async def _reply_times(session: aiohttp.ClientSession, emulator: str) -> dict[str, float]:
    """recipient id -> arrival time (epoch s) of the first DM request answered for them."""
    async with session.get(f"{emulator}/_emulator/messages") as resp:
        messages = (await resp.json())["messages"]
    out: dict[str, float] = {}
    for m in messages:
        if m["sender_id"] == BOT_ID:
            out.setdefault(m["recipient_id"], int(m["created_timestamp"]) / 1000)
    return out


async def event_to_reply_idle(url: str, emulator: str, secret: str, count: int
                              ) -> dict[str, Any]:
    """One delivery at a time, each from a new user; the next once the reply arrived."""
    sent: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        for i, (signature, body) in enumerate(
                signed_bodies(secret, "idle-", count, users=count, first_user=3_000_000)):
            user = str(3_000_000 + i)
            sent[user] = time.time()
            assert await _post(session, url, signature, body) == 200
            deadline = time.monotonic() + 10
            while user not in await _reply_times(session, emulator):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)
        replies = await _reply_times(session, emulator)
    lat = [replies[u] - t for u, t in sent.items() if u in replies]
    return {"sent": count, "replied": len(lat), **percentiles(lat)}


async def event_to_reply_loaded(url: str, emulator: str, secret: str, rate: float, count: int
                                ) -> dict[str, Any]:
    """`count` deliveries at `rate`/s, each from a new user, each needing a reply."""
    first = 4_000_000
    bodies = list(signed_bodies(secret, "loaded-", count, users=count, first_user=first))
    sent: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int, scheduled: float) -> None:
            sent[str(first + i)] = time.time()
            await _post(session, url, *bodies[i])

        await _on_schedule(count, rate, one)
        deadline = time.monotonic() + 30
        while True:
            replies = await _reply_times(session, emulator)
            if len([u for u in sent if u in replies]) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    lat = [replies[u] - t for u, t in sent.items() if u in replies]
    return {"offered_rate": rate, "sent": count, "replied": len(lat), **percentiles(lat),
            "median_s": statistics.median(lat) if lat else float("nan")}
