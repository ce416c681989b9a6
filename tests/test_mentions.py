"""Mentions: which posts become public replies, in both envelopes (pure parsing)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from twitter_text import parse_tweet

from catbot.brain import HELP_TEXT
from catbot.facts import load_corpus
from catbot.models import InboundDM
from catbot.outbox.worker import strip_mentions
from catbot.webhook.events import parse_delivery
from testkit.processes import BotAndX, Daemon, Emulator, free_port, wait_for

BOT = "1000"
CORPUS = {fact.text for fact in load_corpus()}


def tweet(tweet_id: str, author: str, text: str, mentions: list[str], **extra: Any
          ) -> dict[str, Any]:
    return {
        "id": int(tweet_id), "id_str": tweet_id, "text": text,
        "created_at": "Sun Nov 29 07:00:00 +0000 2026", "timestamp_ms": "1795935600000",
        "user": {"id": int(author), "id_str": author, "screen_name": "friend"},
        "entities": {"user_mentions": [{"id_str": m, "screen_name": "x"} for m in mentions],
                     "hashtags": [], "urls": []},
        **extra,
    }


def account_activity(*tweets: dict[str, Any], blocked: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"for_user_id": BOT, "tweet_create_events": list(tweets)}
    if blocked is not None:
        body["user_has_blocked"] = blocked
    return body


def test_a_mention_becomes_a_public_reply_job() -> None:
    delivery = parse_delivery(account_activity(tweet("77", "42", "@catbot hi", [BOT])))
    [mention] = delivery.mentions
    assert mention == InboundDM(
        event_id="tweet:77", sender_id="42", recipient_id=BOT, for_user_id=BOT,
        text="@catbot hi", created_at=1795935600.0, kind="mention", tweet_id="77",
    )
    assert delivery.direct_messages == [] and delivery.ignored == []


@pytest.mark.parametrize("blocked", [True, "true", "True"])
def test_posts_from_users_who_blocked_the_bot_are_skipped(blocked: Any) -> None:
    delivery = parse_delivery(
        account_activity(tweet("78", "42", "@catbot hi", [BOT]), blocked=blocked)
    )
    assert delivery.mentions == [] and delivery.ignored == [("tweet_create", "blocked")]


@pytest.mark.parametrize("blocked", [False, "false", None])
def test_not_blocked_in_any_spelling_is_answered(blocked: Any) -> None:
    delivery = parse_delivery(
        account_activity(tweet("79", "42", "@catbot hi", [BOT]), blocked=blocked)
    )
    assert [m.tweet_id for m in delivery.mentions] == ["79"]


def test_retweets_and_posts_not_mentioning_the_bot_are_skipped() -> None:
    retweet = tweet("80", "42", "RT @catbot: a fact", [BOT], retweeted_status={"id_str": "5"})
    unrelated = tweet("81", "42", "@someone else", ["555"])
    delivery = parse_delivery(account_activity(retweet, unrelated))
    assert delivery.mentions == []
    assert delivery.ignored == [("tweet_create", "retweet"), ("tweet_create", "not_a_mention")]


def test_the_bots_own_posts_reach_classification_as_own() -> None:
    # The webhook's classify() then drops them as "own", as for DMs.
    [own] = parse_delivery(account_activity(tweet("82", BOT, "a cat fact", []))).mentions
    assert own.sender_id == own.for_user_id == BOT


def test_a_malformed_tweet_does_not_lose_the_good_one() -> None:
    good = tweet("83", "42", "@catbot hi", [BOT])
    delivery = parse_delivery(account_activity({"id_str": "x"}, good))
    assert [m.tweet_id for m in delivery.mentions] == ["83"]
    assert delivery.ignored == [("tweet_create", "malformed")]


def test_activity_api_post_mention_create() -> None:
    body = {"data": {
        "event_uuid": "-1", "filter": {"user_id": BOT}, "event_type": "post.mention.create",
        "tag": "catbot",
        # x-api/activity/event-payloads: the payload IS the post, includes beside it.
        "payload": {"id": "90", "text": "@catbot tell me something",
                    "author_id": "42", "created_at": "2026-11-29T07:00:00.000Z"},
        "includes": {"users": [{"id": "42", "username": "friend"}]},
    }}
    [mention] = parse_delivery(body).mentions
    assert (mention.event_id, mention.tweet_id, mention.sender_id, mention.kind) == (
        "tweet:90", "90", "42", "mention")
    assert mention.created_at == 1795935600.0


def test_mention_and_dm_ids_never_collide_in_dedupe() -> None:
    [mention] = parse_delivery(account_activity(tweet("91", "42", "@catbot", [BOT]))).mentions
    assert mention.event_id != "91"


@pytest.mark.parametrize(("text", "words"), [
    ("@catbot stop", "stop"),
    ("@catbot @friend  help me", "help me"),
    ("hello @catbot", "hello @catbot"),
    ("@catbot", ""),
])
def test_leading_handles_are_not_part_of_the_command(text: str, words: str) -> None:
    assert strip_mentions(text) == words


def test_stored_form_round_trips_and_old_rows_read_as_dms() -> None:
    [mention] = parse_delivery(account_activity(tweet("92", "42", "@catbot", [BOT]))).mentions
    assert InboundDM.from_json(mention.to_json()) == mention
    old = ('{"event_id": "1", "sender_id": "2", "recipient_id": "3", "for_user_id": "3",'
           ' "text": "hi", "created_at": 5.0}')
    assert InboundDM.from_json(old).kind == "dm"


# --- end to end: the daemon and the emulator as real processes ------------------------------

class MentionWorld(BotAndX):
    def __init__(self, tmp: Path, api: str = "v2", **env: str) -> None:
        ports = free_port(), free_port(), free_port()
        daemon_env = {"CATBOT_X_API": api, "CATBOT_REPLY_TO_MENTIONS": "true", **env}
        self.daemon = Daemon(tmp, ports[0], ports[1], ports[2], daemon_env)
        self.emulator = Emulator(tmp, ports[0], self.daemon.webhook, api=api)

    def mention(self, sender: str, text: str, **extra: Any) -> str:
        answer = self.emulator.control(
            "POST", "mention", {"sender_id": sender, "text": text, **extra})
        assert [d["status"] for d in answer["deliveries"]] == [200]
        return str(answer["tweet_id"])

    def replies_to(self, tweet_id: str) -> list[str]:
        posts = self.emulator.control("GET", "posts")["posts"]
        return [p["text"] for p in posts
                if p["author_id"] == BOT and p["in_reply_to_tweet_id"] == tweet_id]


@pytest.mark.parametrize("api", ["v2", "activity"])
def test_a_mention_gets_one_public_reply(tmp_path: Path, api: str) -> None:
    with MentionWorld(tmp_path, api) as world:
        tweet_id = world.mention("42", "@catbot tell me something")
        [reply] = wait_for(lambda: world.replies_to(tweet_id), what="a public reply")
        assert reply in CORPUS
        time.sleep(1.0)  # the bot's own reply comes back as an event: never answered
        assert len(world.replies_to(tweet_id)) == 1
        assert len([p for p in world.emulator.control("GET", "posts")["posts"]
                    if p["author_id"] == BOT]) == 1


def test_blocked_retweets_and_opted_out_friends_get_no_public_reply(tmp_path: Path) -> None:
    with MentionWorld(tmp_path) as world:
        blocked = world.mention("43", "@catbot hi", user_has_blocked="true")
        retweet = world.mention("44", "@catbot hi", retweet=True)
        world.emulator.dm("45", "stop")  # opted out in DMs...
        wait_for(lambda: world.emulator.replies_to("45"), what="the stop confirmation")
        opted_out = world.mention("45", "@catbot a fact please")  # ...so not in public
        answered = world.mention("46", "@catbot a fact please")
        wait_for(lambda: world.replies_to(answered), what="the control reply")
        time.sleep(1.0)
        assert [world.replies_to(t) for t in (blocked, retweet, opted_out)] == [[], [], []]
        values = world.daemon.metrics()
        assert values['catbot_events_total{fate="blocked",kind="tweet_create"}'] == 1
        assert values['catbot_events_total{fate="retweet",kind="tweet_create"}'] == 1


def test_mentions_are_ignored_unless_switched_on(tmp_path: Path) -> None:
    with MentionWorld(tmp_path, CATBOT_REPLY_TO_MENTIONS="false") as world:
        tweet_id = world.mention("47", "@catbot hi")
        time.sleep(1.0)
        assert world.replies_to(tweet_id) == []
        assert world.daemon.metrics()[
            'catbot_events_total{fate="mentions_off",kind="mention"}'] == 1


# Issue 14: a public reply fits in a post, whatever the suffix.
# Plain words, so that every one of its 150 characters counts 1 as X counts a post.
SUFFIX_150 = (" — more cat facts every day from catbot, your friendly feline bot" * 3)[:150]


def test_a_150_character_suffix_still_gives_replies_x_accepts(tmp_path: Path) -> None:
    assert len(SUFFIX_150) == parse_tweet(SUFFIX_150).weightedLength == 150
    # Before, help plus the suffix weighed more than a post may: X refused it (dead letter).
    assert parse_tweet(HELP_TEXT + SUFFIX_150).weightedLength > 280
    with MentionWorld(tmp_path, CATBOT_REPLY_SUFFIX=SUFFIX_150) as world:
        help_post = world.mention("42", "@catbot help")
        fact_post = world.mention("43", "@catbot tell me something")
        world.emulator.dm("44", "help")
        [help_reply] = wait_for(lambda: world.replies_to(help_post), what="the help reply")
        [fact_reply] = wait_for(lambda: world.replies_to(fact_post), what="the fact reply")
        [dm_reply] = wait_for(lambda: world.emulator.replies_to("44"), what="the DM reply")

        for reply in (help_reply, fact_reply):
            parsed = parse_tweet(reply)
            assert parsed.valid and parsed.weightedLength <= 280, reply
        # Help keeps the start of the suffix that fits; a fact that fits beside the whole
        # suffix is chosen; a DM has room for all of it.
        assert help_reply.startswith(HELP_TEXT) and SUFFIX_150.startswith(
            help_reply[len(HELP_TEXT):])
        assert fact_reply.endswith(SUFFIX_150) and fact_reply[:-150] in CORPUS
        assert dm_reply == HELP_TEXT + SUFFIX_150
        assert world.daemon.metrics().get('catbot_dms_sent_total{outcome="dead_letter"}',
                                          0) == 0
