"""X Chat: what X's SDK costs the bot per message (issue 16), beside a same-run reference.

`python -m bench.xchat_cost [--samples N] [--json out.json]`, or as the `xchat_cost`
section of `make bench` (bench/run.py). In-process, one thread, the daemon's own code:

- the friend is a real chatxdk identity (testkit/xchat_builders.py) writing to the bot, and
  each delivery is the `chat.received` body X sends (the server-built `encoded_event`
  around the friend's client payload, in X's documented envelope);
- the bot is `catbot.xchat.crypto.XChatCrypto`, as the outbox uses it: `decrypt` (the
  payload's key change applied first when there is one, then the message verified and
  decrypted) and `encrypt_reply` (a plain message under the conversation's newest key,
  signed: what the outbox sends);
- each timed call gets a message of its own (no cache can answer twice), after a warm-up.

Rows (median and p99 of per-message wall time):
- *reply as X delivers it*: decrypt + encrypt, the payload carrying the conversation's
  latest key change and its key version, as X's documented chat.received example does (the
  bot already holds that key version, so `decrypt` opens the message without verifying the
  change again);
- *reply, no key change in the payload*: decrypt + encrypt (the shorter live variant on
  xchat/real-time-events);
- decrypt alone and encrypt alone (no key change);
- *first message of a conversation*: a bot that holds no key for it yet (a fresh
  `XChatCrypto` per sample): the key change verified and unwrapped, the message decrypted,
  the learned key sealed for the store (`conversation_keys_to_store`, as the outbox saves it
  before answering), the reply encrypted.

Reference, same run, same bytes: what the webhook already does for every delivery it
acknowledges (the signature's HMAC-SHA256 check, orjson parse, event parse:
`SignatureVerifier.verify` + `orjson.loads` + `parse_delivery`), and a bare
`hashlib.sha256` of the body. Ratios are against the webhook's work.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.metadata
import json
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from catbot.facts import load_corpus
from catbot.signing import sign_body
from catbot.webhook.events import parse_delivery
from catbot.webhook.signature import SignatureVerifier
from catbot.xchat.crypto import XChatCrypto
from catbot.xchat.identity import generate_identity, load_identity
from catbot.xchat.wire import ChatReceived, parse_chat_received
from testkit.xchat_builders import Friend, chat_received

BOT_ID = "1000"
FRIEND_ID = "2244994945"
# As long as a real consumer secret (50 characters), so the verifier does what it does in
# production.
SECRET = "bench-consumer-secret-0123456789-0123456789-abcdef"
WARMUP = 50


def _percentiles(samples_ns: Sequence[int]) -> dict[str, float]:
    us = [s / 1000 for s in samples_ns]
    return {
        "n": len(us),
        "p50_us": statistics.median(us),
        "p99_us": statistics.quantiles(us, n=100, method="inclusive")[98],
        "mean_us": statistics.fmean(us),
    }


def _timed(calls: Sequence[Callable[[], object]]) -> dict[str, float]:
    """Each call once, timed alone; the first WARMUP calls are not counted."""
    samples: list[int] = []
    gc.collect()
    for index, call in enumerate(calls):
        started = time.perf_counter_ns()
        call()
        elapsed = time.perf_counter_ns() - started
        if index >= WARMUP:
            samples.append(elapsed)
    return _percentiles(samples)


def _reply_text() -> str:
    """A reply as long as a typical one: the corpus fact of median length, with a suffix."""
    facts = sorted((f.text for f in load_corpus()), key=len)
    return facts[len(facts) // 2] + " Nya~"


class World:
    """The bot, a friend in a conversation with it, and `count` deliveries of each kind."""

    def __init__(self, count: int) -> None:
        fresh = generate_identity()
        version = fresh.registration.version
        self.bot = load_identity(fresh.private_key, user_id=BOT_ID, key_version=version)
        self.friend = Friend(FRIEND_ID)
        self.conversation, self.key_change = self.friend.start_conversation(self.bot.record())
        self.sender_keys = [self.friend.record()]
        self.reply = _reply_text()
        self.with_change: list[dict[str, Any]] = []
        self.without_change: list[dict[str, Any]] = []
        for i in range(count):
            for kind, into in (("k", self.with_change), ("p", self.without_change)):
                event, _ = self.friend.write(self.conversation, f"cat fact please {kind}{i}")
                into.append(chat_received(
                    sender_id=FRIEND_ID, conversation_id=self.conversation, encoded_event=event,
                    key_change=self.key_change if kind == "k" else None, bot_id=BOT_ID,
                    event_id=f"bench-{kind}-{i:08d}",
                    # X's documented chat.received names the message's key version.
                    conversation_key_version=self.friend.conversation_keys[
                        self.conversation][0],
                ))

    def crypto(self) -> XChatCrypto:
        """The bot's crypto, holding no conversation key yet."""
        return XChatCrypto(self.bot)

    def warm_crypto(self) -> XChatCrypto:
        """The bot's crypto after the conversation's first message: it holds the key."""
        crypto = self.crypto()
        first = parse_chat_received(self.with_change[0])
        crypto.decrypt(first, self.sender_keys)
        return crypto


def measure(samples: int = 2000, first_samples: int = 300) -> dict[str, Any]:
    samples = max(samples, WARMUP + 10)
    first_samples = max(first_samples, WARMUP + 10)
    world = World(samples)
    keys = world.sender_keys
    conversation, text = world.conversation, world.reply
    with_change = [parse_chat_received(d) for d in world.with_change]
    without_change = [parse_chat_received(d) for d in world.without_change]
    result: dict[str, Any] = {
        "chatxdk": importlib.metadata.version("chatxdk"),
        "reply_chars": len(text),
    }

    crypto = world.warm_crypto()

    def reply(delivery: ChatReceived) -> Callable[[], object]:
        def call() -> object:
            message = crypto.decrypt(delivery, keys)
            return crypto.encrypt_reply(message.conversation_id, text)
        return call

    result["reply_as_delivered"] = _timed([reply(d) for d in with_change])
    result["reply_no_key_change"] = _timed([reply(d) for d in without_change])
    result["decrypt"] = _timed([partial(crypto.decrypt, d, keys) for d in without_change])
    result["encrypt"] = _timed(
        [partial(crypto.encrypt_reply, conversation, text)] * len(without_change)
    )

    # A conversation the bot has never seen: a fresh crypto per sample, made beforehand.
    first = with_change[0]
    cold = [world.crypto() for _ in range(first_samples)]

    def first_reply(bot: XChatCrypto) -> Callable[[], object]:
        def call() -> object:
            message = bot.decrypt(first, keys)
            assert message.learned_keys
            bot.conversation_keys_to_store([message.conversation_id])
            return bot.encrypt_reply(message.conversation_id, text)
        return call

    result["first_message"] = _timed([first_reply(bot) for bot in cold])

    # The reference: the webhook's own work on the same delivery bytes, as X signs them.
    bodies = [json.dumps(d, separators=(",", ":")).encode() for d in world.with_change]
    signed = [(sign_body(SECRET, body), body) for body in bodies]
    verifier = SignatureVerifier([SECRET])

    def ingest(header: str, body: bytes) -> Callable[[], object]:
        def call() -> object:
            assert verifier.verify(header, body).ok
            return parse_delivery(orjson.loads(body), xchat=True)
        return call

    result["webhook_ingest"] = _timed([ingest(h, b) for h, b in signed])
    result["sha256"] = _timed([partial(hashlib.sha256, b) for b in bodies])
    result["body_bytes"] = statistics.fmean(len(b) for b in bodies)
    return result


def _fmt(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs"


def rows(r: dict[str, Any]) -> list[str]:
    ref = r["webhook_ingest"]["p50_us"]
    n = r["reply_no_key_change"]["n"]
    out = [f"X Chat, the SDK's cost per message (chatxdk {r['chatxdk']}, bot side, one thread; "
           f"{n} messages per row, {r['first_message']['n']} new conversations; "
           f"{r['reply_chars']}-character reply; ratio: medians, against the webhook's work "
           "on the same delivery)",
           f"  {'':<62}{'median':>10} {'p99':>10} {'ratio':>7}"]
    labels = (
        ("reply_as_delivered", "reply as X delivers it (held key): decrypt + encrypt"),
        ("reply_no_key_change", "reply, no key change in the payload: decrypt + encrypt"),
        ("decrypt", "  decrypt alone"),
        ("encrypt", "  encrypt alone"),
        ("first_message", "first message: key change + decrypt + seal key + encrypt"),
        ("webhook_ingest", f"reference: webhook HMAC check + parse of the "
                           f"{r['body_bytes'] / 1024:.1f} KB delivery"),
        ("sha256", "reference: sha256 of the same body"),
    )
    for key, label in labels:
        x = r[key]
        out.append(f"  {label:<62}{_fmt(x['p50_us']):>10} {_fmt(x['p99_us']):>10}"
                   f" {x['p50_us'] / ref:>6.1f}x")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="X Chat SDK cost per message (issue 16)")
    p.add_argument("--samples", type=int, default=2000, help="messages per steady-state row")
    p.add_argument("--first-samples", type=int, default=300,
                   help="conversations for the first-message row")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args()
    result = measure(a.samples, a.first_samples)
    print("\n".join(rows(result)))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
