"""X's own documented payloads (tests/fixtures/x/) against the daemon, as X would send them.

Every fixture is sent signed with the app's consumer secret to a real daemon process whose
X is the emulator, and ends as `tests/fixtures/x/index.json` says: answered by DM, answered
in public, or ignored with its `catbot_events_total{kind,fate}` label; sent again, an
answered one is a duplicate and is not answered twice. None may end as `malformed`.
The X Activity API flavour must also subscribe to (and `doctor` check) every event type the
bot answers.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from catbot.webhook.events import parse_delivery
from catbot.webhook.ingest import IngestPolicy, classify
from testkit.processes import CREDENTIALS, BotAndX, Daemon, Emulator, free_port, http, wait_for
from tests.emulator_fixtures import SIGNATURE_HEADER, hmac_b64
from tests.test_admin_cli import Setup

FIXTURES = Path(__file__).parent / "fixtures" / "x"
INDEX: dict[str, Any] = json.loads((FIXTURES / "index.json").read_text())
ENTRIES: list[dict[str, Any]] = INDEX["fixtures"]
SECRET = CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]
# What the daemon's classify step answers for an event the store will take.
ACCEPTED_FATES = {"enqueued", "duplicate"}


def load(entry: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / entry["file"]).read_text())
    return body


def refreshed(body: dict[str, Any], envelope: str, now: float) -> dict[str, Any]:
    """The body with its event times set to `now`, each in the form X gives it there
    (index.json, "timestamps"): X's examples are years old, the daemon drops old events."""
    out = copy.deepcopy(body)
    ms = str(int(now * 1000))
    if envelope == "activity":
        payload = out["data"].get("payload")
        if isinstance(payload, dict):
            for event in payload.get("direct_message_events") or []:
                event["created_timestamp"] = ms
            if "created_at" in payload:
                payload["created_at"] = datetime.fromtimestamp(now, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S.000Z")
            for key in ("timestamp_ms", "created_at_msec"):
                if key in payload:
                    payload[key] = ms
        return out
    for key, events in out.items():
        if not key.endswith("_events") or not isinstance(events, list):
            continue
        for event in events:
            if "created_timestamp" in event:
                event["created_timestamp"] = ms
            if "timestamp_ms" in event:
                event["timestamp_ms"] = ms
            if "created_at" in event:
                event["created_at"] = time.strftime("%a %b %d %H:%M:%S +0000 %Y",
                                                    time.gmtime(now))
    return out


def with_post_id(body: dict[str, Any], envelope: str, post_id: str) -> dict[str, Any]:
    """The post given `post_id`: X (and so the emulator) refuses a reply to a post it does
    not have, so a post to answer must be one the emulator knows."""
    out = copy.deepcopy(body)
    if envelope == "activity":
        out["data"]["payload"]["id"] = post_id
    else:
        for tweet in out["tweet_create_events"]:
            tweet["id_str"], tweet["id"] = post_id, int(post_id)
    return out


# Pure: parse + classify, no processes --------------------------------------------------


def test_the_index_names_every_fixture_file_once() -> None:
    on_disk = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.json")} - {"index.json"}
    listed = [e["file"] for e in ENTRIES]
    assert sorted(listed) == sorted(on_disk)
    for entry in ENTRIES:
        assert entry["source"]["page"].startswith("https://docs.x.com/"), entry["file"]
        assert entry["outcome"] in INDEX["outcomes"], entry["file"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_each_fixture_parses_to_its_documented_outcome(entry: dict[str, Any]) -> None:
    now = time.time()
    delivery = parse_delivery(refreshed(load(entry), entry["envelope"], now))
    policy = IngestPolicy(bot_user_id=entry["bot_user_id"], max_event_age_seconds=3600,
                          reply_to_mentions=True)
    fates = [
        (("direct_message" if dm.kind == "dm" else dm.kind), classify(dm, policy, now))
        for dm in [*delivery.direct_messages, *delivery.mentions]
    ]
    expected_fate = "accept" if entry["fate"] in ACCEPTED_FATES else entry["fate"]
    assert [*delivery.ignored, *fates] == [(entry["kind"], expected_fate)]
    answered = [dm.kind for dm in [*delivery.direct_messages, *delivery.mentions]
                if classify(dm, policy, now) == "accept"]
    assert answered == {"dm": ["dm"], "public_reply": ["mention"], "ignored": []}[
        entry["outcome"]]


def test_unrefreshed_fixtures_would_be_stale() -> None:
    # The refresh is what makes them answerable: X's own times are far in the past.
    entry = next(e for e in ENTRIES if e["file"] == "activity/dm_received.json")
    [dm] = parse_delivery(load(entry)).direct_messages
    policy = IngestPolicy(bot_user_id=entry["bot_user_id"], max_event_age_seconds=3600)
    assert classify(dm, policy, time.time()) == "stale"


# A real daemon, with the emulator as X ---------------------------------------------------


class FixturePair(BotAndX):
    """A daemon for the fixtures' bot account and an emulator with no webhook: fixtures are
    sent by the test, not by the emulator, which only takes the bot's DMs and posts."""

    def __init__(self, tmp: Path, envelope: str, bot_id: str) -> None:
        self.envelope = envelope
        api = "activity" if envelope == "activity" else "v2"
        env = {"CATBOT_X_ACCESS_TOKEN": f"{bot_id}-test-access-token", "CATBOT_X_API": api}
        self.emulator = Emulator(tmp, free_port(), None, api=api, extra_env=env)
        self.daemon = Daemon(tmp, self.emulator.port, free_port(), free_port(),
                             {**env, "CATBOT_REPLY_TO_MENTIONS": "true"})
        self.bot_id = bot_id

    def start(self) -> FixturePair:
        self.emulator.start()
        self.daemon.start()
        return self

    def send(self, body: dict[str, Any]) -> int:
        raw = json.dumps(body, ensure_ascii=False).encode()
        status, answer, _ = http("POST", self.daemon.webhook, raw=raw, headers={
            "Content-Type": "application/json", SIGNATURE_HEADER: hmac_b64(SECRET, raw)})
        assert status == 200, answer
        return status

    def events(self) -> dict[tuple[str, str], float]:
        values = {}
        for name, value in self.daemon.metrics().items():
            if name.startswith("catbot_events_total{"):
                labels = dict(part.split("=", 1) for part in name[20:-1].split(","))
                values[labels["kind"].strip('"'), labels["fate"].strip('"')] = value
        return values

    def bot_dms_to(self, user_id: str) -> list[dict[str, Any]]:
        return [m for m in self.emulator.messages(user_id) if m["sender_id"] == self.bot_id]

    def bot_replies_to(self, post_id: str) -> list[dict[str, Any]]:
        posts = self.emulator.control("GET", "posts")["posts"]
        return [p for p in posts
                if p["author_id"] == self.bot_id and p["in_reply_to_tweet_id"] == post_id]


def _delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
           ) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _author(body: dict[str, Any], envelope: str) -> str:
    if envelope == "activity":
        payload = body["data"]["payload"]
        if "direct_message_events" in payload:
            return str(payload["direct_message_events"][0]["message_create"]["sender_id"])
        return str(payload["author_id"])
    if "direct_message_events" in body:
        return str(body["direct_message_events"][0]["message_create"]["sender_id"])
    return str(body["tweet_create_events"][0]["user"]["id_str"])


@pytest.fixture(params=["activity", "account_activity"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FixturePair]:
    envelope = request.param
    [bot_id] = {e["bot_user_id"] for e in ENTRIES if e["envelope"] == envelope}
    with FixturePair(tmp_path, envelope, bot_id) as started:
        yield started


def test_every_documented_payload_ends_as_documented(pair: FixturePair) -> None:
    envelope = pair.envelope
    entries = [e for e in ENTRIES if e["envelope"] == envelope]
    assert entries
    for entry in entries:
        body = refreshed(load(entry), envelope, time.time())
        author = _author(body, envelope) if entry["outcome"] != "ignored" else ""
        post_id = ""
        if entry["outcome"] == "public_reply":
            post_id = pair.emulator.control("POST", "mention", {
                "sender_id": author, "text": "a post to answer"})["tweet_id"]
            body = with_post_id(body, envelope, post_id)

        before = pair.events()
        pair.send(body)
        assert _delta(before, pair.events()) == {(entry["kind"], entry["fate"]): 1}, entry

        if entry["outcome"] == "dm":
            wait_for(lambda user=author: pair.bot_dms_to(user),
                     what=f"a DM answer to {entry['file']}")
        elif entry["outcome"] == "public_reply":
            wait_for(lambda post=post_id: pair.bot_replies_to(post),
                     what=f"a public reply to {entry['file']}")
        if entry["outcome"] != "ignored":
            # X delivers again when unsure: the same event is a duplicate, answered once.
            before = pair.events()
            pair.send(body)
            assert _delta(before, pair.events()) == {(entry["kind"], "duplicate"): 1}, entry

    # Every answer went out, once each (a re-sent event never reached the outbox).
    for entry in entries:
        if entry["outcome"] == "dm":
            assert len(pair.bot_dms_to(_author(load(entry), envelope))) == 1, entry["file"]
    replies = [p for p in pair.emulator.control("GET", "posts")["posts"]
               if p["author_id"] == pair.bot_id]
    assert len(replies) == sum(e["outcome"] == "public_reply" for e in entries)
    assert not [k for k in pair.events() if k[1] == "malformed"]


# Subscriptions: what the X Activity API flavour asks X for --------------------------------

MENTIONS_ON = {"CATBOT_REPLY_TO_MENTIONS": "true"}


def _subscribed_types(setup: Setup) -> set[str]:
    subs = setup.emulator.control("GET", "subscriptions")["subscriptions"]
    return {s["event_type"] for s in subs if s["user_id"] == "1000"}


def test_activity_api_subscribes_and_checks_every_answered_event_type(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "activity")
    setup.emulator.start()
    setup.daemon.start()
    try:
        url = setup.daemon.webhook
        # Mentions off: DMs are all the bot answers, so all it subscribes to.
        assert setup.catbot("webhooks", "ensure", url).returncode == 0
        assert _subscribed_types(setup) == {"dm.received"}
        assert setup.catbot("doctor", "--url", url).returncode == 0

        # Mentions switched on later: doctor names what is missing, `add` fills it in.
        doctor = setup.catbot("doctor", "--url", url, env=MENTIONS_ON)
        assert doctor.returncode == 1, doctor.stdout
        assert "post.mention.create, post.reply.create" in doctor.stdout
        assert setup.catbot("subscriptions", "add", env=MENTIONS_ON).returncode == 0
        assert _subscribed_types(setup) == {
            "dm.received", "post.mention.create", "post.reply.create"}
        doctor = setup.catbot("doctor", "--url", url, env=MENTIONS_ON)
        assert doctor.returncode == 0, doctor.stdout
        assert "post.reply.create" in doctor.stdout
    finally:
        setup.daemon.stop()
        setup.emulator.stop()
        print(setup.daemon.output()[-3000:], setup.emulator.output()[-3000:])
