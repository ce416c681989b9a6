"""DMs and posts are separate allowances at X (issue 14): a rate-limited public reply must
not stop the DMs.

The real daemon against the real emulator. Posting is limited the way X limits it: the bot
account's 100 posts of the 15-minute window (docs.x.com/x-api/fundamentals/rate-limits,
"Manage posts") are used up, so the daemon's public reply meets a 429 whose
`x-rate-limit-reset` is about 15 minutes ahead. A DM sent meanwhile must be answered within
seconds, and the public replies must wait without holding the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from catbot.app import Daemon as AppDaemon
from catbot.config import load_settings
from catbot.outbox.ratelimit import DM, POST, WaitTooLong, allowances_from
from catbot.x.dm import Credentials, tweepy_client
from testkit.processes import CREDENTIALS, BotAndX, Daemon, Emulator, free_port, wait_for
from testkit.redis_server import RedisServer

WORKERS = 2
# More mentions than workers: a worker held by each would leave none for the DM.
MENTIONS = ["41", "42", "43"]
DM_SENDER = "77"
# What "within seconds" means here, generous for a loaded machine.
DM_ANSWERED_WITHIN = 8.0


class World(BotAndX):
    def __init__(self, tmp: Path) -> None:
        port, metrics_port, emulator_port = free_port(), free_port(), free_port()
        self.daemon = Daemon(tmp, emulator_port, port, metrics_port, {
            "CATBOT_REPLY_TO_MENTIONS": "true",
            "CATBOT_WORKERS": str(WORKERS),
            "CATBOT_LOG_LEVEL": "INFO",
        })
        self.emulator = Emulator(tmp, emulator_port, self.daemon.webhook)

    def mention(self, sender: str) -> str:
        answer = self.emulator.control(
            "POST", "mention", {"sender_id": sender, "text": "@catbot a fact please"})
        assert [d["status"] for d in answer["deliveries"]] == [200]
        return str(answer["tweet_id"])

    def post_requests(self) -> list[dict[str, object]]:
        entries: list[dict[str, object]] = self.emulator.control(
            "GET", "requests?route=tweets")["requests"]
        return entries

    def bot_replies_to(self, tweet_id: str) -> list[str]:
        posts = self.emulator.control("GET", "posts")["posts"]
        return [p["text"] for p in posts if p["in_reply_to_tweet_id"] == tweet_id]

    def metric(self, name: str) -> float:
        return self.daemon.metrics().get(name, 0.0)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


async def use_up_posting(base: str) -> float:
    """Post as the bot (another app of the account, say) until X says none remain in the
    window; returns the window's reset time as X gives it."""
    credentials = Credentials(
        consumer_key=CREDENTIALS["CATBOT_X_CONSUMER_KEY"],
        consumer_secret=CREDENTIALS["CATBOT_X_CONSUMER_SECRET"],
        access_token=CREDENTIALS["CATBOT_X_ACCESS_TOKEN"],
        access_token_secret=CREDENTIALS["CATBOT_X_ACCESS_TOKEN_SECRET"],
    )
    async with aiohttp.ClientSession() as session:
        client = tweepy_client(credentials, session, base)
        for n in range(1000):
            response = await client.create_tweet(text=f"filler post {n}", user_auth=True)
            assert response.status == 201, response.status
            if response.headers["x-rate-limit-remaining"] == "0":
                return float(response.headers["x-rate-limit-reset"])
    raise AssertionError("the post window never ran out")


def test_a_dm_is_answered_within_seconds_while_posting_is_limited(world: World) -> None:
    reset = asyncio.run(use_up_posting(world.emulator.base))
    assert reset - time.time() > 14 * 60  # posting is closed for about 15 minutes

    mentions = [world.mention(sender) for sender in MENTIONS]
    wait_for(lambda: any(e["status"] == 429 for e in world.post_requests()),
             what="the public reply to meet X's 429")

    world.emulator.dm(DM_SENDER, "hello")
    wait_for(lambda: world.emulator.replies_to(DM_SENDER), timeout=DM_ANSWERED_WITHIN,
             what="the DM's reply while posting is limited")
    wait_for(lambda: world.metric('catbot_parked_jobs_total{family="post"}') == len(MENTIONS),
             what="every public reply handed back until posting reopens")

    # One request learnt that posting is closed; no other was spent on it, and the public
    # replies wait for the reset instead of failing.
    daemon_posts = [e for e in world.post_requests() if e["status"] != 201]
    assert [e["status"] for e in daemon_posts] == [429]
    assert all(world.bot_replies_to(t) == [] for t in mentions)
    assert world.metric('catbot_rate_limit_family_waits_total{family="post",source="x_429"}') == 1
    assert world.metric('catbot_rate_limit_family_waits_total{family="dm",source="x_429"}') == 0
    assert world.metric('catbot_dms_sent_total{outcome="dead_letter"}') == 0


# With replicas sharing Redis, each family's budget is shared, and kept apart -------------

@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def replica(url: str) -> AppDaemon:
    return AppDaemon(load_settings(
        env_file=None, store_url=url, post_budget_15min=1, dm_budget_15min=2,
        **{name.removeprefix("CATBOT_").lower(): value for name, value in CREDENTIALS.items()},
    ))


async def test_replicas_share_each_family_budget_in_redis_and_keep_them_apart(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url_with_prefix()
    replicas = [replica(url), replica(url)]
    for daemon in replicas:
        await daemon.store.open()
    try:
        first, second = (allowances_from(daemon.settings, daemon.store) for daemon in replicas)
        # One post for the account: the other replica's post has to wait for the window...
        await first[POST].budget.reserve(max_wait=0.0)  # room: no WaitTooLong
        with pytest.raises(WaitTooLong) as raised:
            await second[POST].budget.reserve(max_wait=0.0)
        assert raised.value.until - time.time() > 14 * 60
        # ...while DMs have their own two, shared by both replicas.
        await second[DM].budget.reserve(max_wait=0.0)
        await first[DM].budget.reserve(max_wait=0.0)
        with pytest.raises(WaitTooLong):
            await second[DM].budget.reserve(max_wait=0.0)
    finally:
        for daemon in replicas:
            await daemon.store.close()
