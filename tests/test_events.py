"""Parsing X's delivery envelopes (`parse_delivery`) and the pre-storage `classify` step."""

from __future__ import annotations

import calendar
import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catbot.models import InboundDM
from catbot.webhook.events import Delivery, MalformedBody, parse_delivery
from catbot.webhook.ingest import IngestPolicy, classify

BOT = "1000"
NOW_MS = 1_750_000_000_000


def dm_event(
    event_id: str = "111",
    sender: str = "42",
    recipient: str = BOT,
    text: str = "hello",
    ts_ms: int | str = NOW_MS,
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "message_create",
        "id": event_id,
        "created_timestamp": str(ts_ms),
        "message_create": {
            "target": {"recipient_id": recipient},
            "sender_id": sender,
            "source_app_id": "268278",
            "message_data": {
                "text": text,
                "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
            },
        },
    }
    event.update(extra)
    return event


def account_activity(*events: dict[str, Any], for_user_id: Any = BOT, **extra: Any) -> dict:
    body: dict[str, Any] = {"for_user_id": for_user_id, "direct_message_events": list(events)}
    body.update(extra)
    return body


def activity(
    *events: dict[str, Any], event_type: str = "dm.received", user_id: Any = BOT
) -> dict[str, Any]:
    return {
        "data": {
            "event_uuid": "-8675309",
            "filter": {"user_id": user_id},
            "event_type": event_type,
            "tag": "catbot",
            "payload": {
                "direct_message_events": list(events),
                "users": {
                    "42": {"data": {"id": "42", "username": "cat", "name": "Cat",
                                    "protected": False}}
                },
            },
        }
    }


def expected_dm(
    event_id: str = "111",
    sender: str = "42",
    recipient: str = BOT,
    text: str = "hello",
    ts_ms: int = NOW_MS,
    for_user_id: str = BOT,
) -> InboundDM:
    return InboundDM(
        event_id=event_id,
        sender_id=sender,
        recipient_id=recipient,
        for_user_id=for_user_id,
        text=text,
        created_at=ts_ms / 1000.0,
    )


# Account Activity envelope ----------------------------------------------------------------


def test_single_dm_is_parsed() -> None:
    delivery = parse_delivery(account_activity(dm_event()))
    assert delivery.envelope == "account_activity"
    assert delivery.for_user_id == BOT
    assert delivery.direct_messages == [expected_dm()]
    assert delivery.ignored == []


def test_several_dms_all_parsed_in_order() -> None:
    events = [
        dm_event(event_id=str(900 - i), sender=str(40 + i), text=f"msg {i}", ts_ms=NOW_MS + i)
        for i in range(5)
    ]
    delivery = parse_delivery(account_activity(*events))
    assert [dm.event_id for dm in delivery.direct_messages] == [e["id"] for e in events]
    assert delivery.direct_messages == [
        expected_dm(event_id=str(900 - i), sender=str(40 + i), text=f"msg {i}", ts_ms=NOW_MS + i)
        for i in range(5)
    ]


def test_users_and_apps_maps_do_not_disturb_parsing() -> None:
    body = account_activity(
        dm_event(),
        users={
            "42": {"id": "42", "name": "Cat", "screen_name": "cat", "protected": False},
            BOT: {"id": BOT, "name": "catbot", "screen_name": "catbot", "protected": False},
        },
        apps={"268278": {"id": "268278", "name": "catbot app", "url": "https://x"}},
    )
    delivery = parse_delivery(body)
    assert delivery.direct_messages == [expected_dm()]
    assert delivery.ignored == []


def test_round_trip_through_json_text() -> None:
    raw = json.dumps(account_activity(dm_event(text="héllo \U0001f431 \"quoted\"")))
    delivery = parse_delivery(json.loads(raw))
    assert delivery.direct_messages[0].text == "héllo \U0001f431 \"quoted\""


def test_created_timestamp_is_epoch_ms() -> None:
    delivery = parse_delivery(account_activity(dm_event(ts_ms=1_234_567)))
    assert delivery.direct_messages[0].created_at == pytest.approx(1234.567)


def test_missing_message_data_gives_empty_text() -> None:
    event = dm_event()
    del event["message_create"]["message_data"]
    delivery = parse_delivery(account_activity(event))
    assert [dm.text for dm in delivery.direct_messages] == [""]


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("direct_message_indicate_typing_events", "typing"),
        ("direct_message_mark_read_events", "read"),
        ("favorite_events", "favorite"),
        ("follow_events", "follow"),
        ("block_events", "block"),
        ("mute_events", "mute"),
        ("tweet_delete_events", "tweet_delete"),
    ],
)
def test_other_arrays_counted_as_ignored_with_their_kind(key: str, kind: str) -> None:
    body = {"for_user_id": BOT, key: [{"a": 1}, {"b": 2}, {"c": 3}]}
    delivery = parse_delivery(body)
    assert delivery.envelope == "account_activity"
    assert delivery.direct_messages == []
    assert delivery.ignored == [(kind, "ignored")] * 3


def test_user_event_without_for_user_id() -> None:
    body = {"user_event": {"revoke": {"date_time": "2018-05-24T09:48:12+00:00",
                                       "target": {"app_id": "13090192"},
                                       "source": {"user_id": "63046977"}}}}
    delivery = parse_delivery(body)
    assert delivery.envelope == "account_activity"
    assert delivery.for_user_id is None
    assert delivery.ignored == [("user_event", "ignored")]
    assert delivery.direct_messages == []


def test_replay_job_status_ignored() -> None:
    body = {"replay_job_status": {"job_state": "Complete", "job_id": "1"}}
    delivery = parse_delivery(body)
    assert delivery.ignored == [("replay_job_status", "ignored")]


def test_tweet_create_events_that_are_not_tweets_are_malformed() -> None:
    # Real tweets become mentions (tests/test_mentions.py); junk is counted, never answered.
    body = {"for_user_id": BOT, "tweet_create_events": [{"a": 1}, {"id_str": "1"}]}
    delivery = parse_delivery(body)
    assert delivery.ignored == [("tweet_create", "malformed")] * 2
    assert delivery.mentions == [] and delivery.direct_messages == []


def test_mixed_arrays_dms_and_ignored() -> None:
    body = account_activity(
        dm_event(event_id="1"),
        dm_event(event_id="2"),
        direct_message_indicate_typing_events=[{"x": 1}],
        direct_message_mark_read_events=[{"x": 1}, {"x": 2}],
    )
    delivery = parse_delivery(body)
    assert [dm.event_id for dm in delivery.direct_messages] == ["1", "2"]
    assert sorted(delivery.ignored) == sorted(
        [("typing", "ignored"), ("read", "ignored"), ("read", "ignored")]
    )


def test_unknown_keys_ignored() -> None:
    body = account_activity(
        dm_event(),
        brand_new_field={"nested": [1, 2, 3]},
        something="else",
        numbers=[1, 2],
    )
    delivery = parse_delivery(body)
    assert delivery.direct_messages == [expected_dm()]
    assert delivery.ignored == []


def test_unknown_event_arrays_counted_as_unknown() -> None:
    body = {"for_user_id": BOT, "future_thing_events": [{}, {}], "other_event": {"a": 1}}
    delivery = parse_delivery(body)
    assert delivery.envelope == "account_activity"
    assert delivery.ignored == [("unknown", "ignored")] * 3


def test_unknown_object_is_unknown_envelope() -> None:
    delivery = parse_delivery({"hello": "world"})
    assert delivery.envelope == "unknown"
    assert delivery.for_user_id is None
    assert delivery.direct_messages == []
    assert delivery.ignored == [("unknown", "ignored")]


def test_empty_object_is_unknown_envelope() -> None:
    delivery = parse_delivery({})
    assert delivery.envelope == "unknown"
    assert delivery.direct_messages == []


def test_for_user_id_alone_is_account_activity() -> None:
    delivery = parse_delivery({"for_user_id": BOT})
    assert delivery == Delivery("account_activity", BOT)


def test_empty_and_null_dm_arrays() -> None:
    assert parse_delivery(account_activity()).direct_messages == []
    assert parse_delivery({"for_user_id": BOT, "direct_message_events": None}) == Delivery(
        "account_activity", BOT
    )


# Malformed DM events ------------------------------------------------------------------------


def _break(path: list[str], value: Any = None, delete: bool = False) -> dict[str, Any]:
    event = dm_event(event_id="999")
    node = event
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return event


MALFORMED_EVENTS = [
    pytest.param(_break(["id"], delete=True), id="no-id"),
    pytest.param(_break(["id"], ""), id="empty-id"),
    pytest.param(_break(["id"], "x" * 65), id="id-too-long"),
    pytest.param(_break(["id"], None), id="null-id"),
    # X's ids are 64-bit decimals (x-ids): anything else would become a stranger's dedupe key.
    pytest.param(_break(["id"], "abc"), id="id-not-digits"),
    pytest.param(_break(["id"], "-1"), id="id-negative"),
    pytest.param(_break(["id"], "1" * 20), id="id-over-19-digits"),
    pytest.param(_break(["id"], "１２"), id="id-fullwidth-digits"),
    pytest.param(_break(["created_timestamp"], delete=True), id="no-timestamp"),
    pytest.param(_break(["created_timestamp"], "yesterday"), id="text-timestamp"),
    pytest.param(_break(["created_timestamp"], -5), id="negative-timestamp"),
    pytest.param(_break(["message_create"], delete=True), id="no-message-create"),
    pytest.param(_break(["message_create"], "text"), id="message-create-not-object"),
    pytest.param(_break(["message_create", "sender_id"], delete=True), id="no-sender"),
    pytest.param(_break(["message_create", "sender_id"], "abc"), id="sender-not-digits"),
    pytest.param(_break(["message_create", "sender_id"], "1" * 20), id="sender-too-long"),
    pytest.param(_break(["message_create", "sender_id"], ""), id="sender-empty"),
    pytest.param(_break(["message_create", "target"], delete=True), id="no-target"),
    pytest.param(_break(["message_create", "target", "recipient_id"], "x1"), id="bad-recipient"),
    pytest.param(_break(["message_create", "message_data"], "hi"), id="data-not-object"),
    pytest.param(_break(["message_create", "message_data", "text"], ["a"]), id="text-list"),
    pytest.param("not an object", id="string"),
    pytest.param(12345, id="number"),
    pytest.param(["list"], id="list"),
    pytest.param({}, id="empty-object"),
]


@pytest.mark.parametrize("bad", MALFORMED_EVENTS)
def test_malformed_dm_counted_without_losing_good_ones(bad: Any) -> None:
    body = account_activity(dm_event(event_id="1"), bad, dm_event(event_id="2"))
    delivery = parse_delivery(body)
    assert [dm.event_id for dm in delivery.direct_messages] == ["1", "2"]
    assert delivery.ignored == [("direct_message", "malformed")]


def test_non_message_create_dm_event_is_ignored_not_malformed() -> None:
    other = dm_event(event_id="3", type="reaction_create")
    delivery = parse_delivery(account_activity(dm_event(event_id="1"), other))
    assert [dm.event_id for dm in delivery.direct_messages] == ["1"]
    assert delivery.ignored == [("direct_message", "ignored")]


def test_dm_events_not_a_list_single_object_still_parsed() -> None:
    body = {"for_user_id": BOT, "direct_message_events": dm_event()}
    delivery = parse_delivery(body)
    assert delivery.direct_messages == [expected_dm()]


def test_dm_events_as_string_counted_malformed() -> None:
    body = {"for_user_id": BOT, "direct_message_events": "oops"}
    delivery = parse_delivery(body)
    assert delivery.direct_messages == []
    assert delivery.ignored == [("direct_message", "malformed")]


def test_parse_does_not_mutate_input() -> None:
    body = account_activity(dm_event(), dm_event(event_id="2"), follow_events=[{}])
    before = copy.deepcopy(body)
    parse_delivery(body)
    assert body == before


# Ids as ints ----------------------------------------------------------------------------


def test_integer_ids_are_coerced_to_strings() -> None:
    event = dm_event()
    event["id"] = 111
    event["created_timestamp"] = NOW_MS
    event["message_create"]["sender_id"] = 42
    event["message_create"]["target"]["recipient_id"] = int(BOT)
    delivery = parse_delivery(account_activity(event, for_user_id=int(BOT)))
    assert delivery.for_user_id == BOT
    assert delivery.direct_messages == [expected_dm()]
    dm = delivery.direct_messages[0]
    for value in (dm.event_id, dm.sender_id, dm.recipient_id, dm.for_user_id):
        assert isinstance(value, str)


@pytest.mark.parametrize("bad", [None, "", "abc", "-1", "1" * 20, True, 1.5, [], {}, "１２"])
def test_invalid_for_user_id_becomes_none_and_recipient_is_used(bad: Any) -> None:
    delivery = parse_delivery(account_activity(dm_event(), for_user_id=bad))
    assert delivery.for_user_id is None
    assert delivery.direct_messages == [expected_dm(for_user_id=BOT)]


def test_for_user_id_fallback_uses_recipient() -> None:
    body = {"direct_message_events": [dm_event(recipient="555")]}
    delivery = parse_delivery(body)
    assert delivery.for_user_id is None
    assert delivery.direct_messages[0].for_user_id == "555"


# X Activity API envelope --------------------------------------------------------------------


def test_activity_dm_received() -> None:
    delivery = parse_delivery(activity(dm_event(event_id="7"), dm_event(event_id="8")))
    assert delivery.envelope == "activity"
    assert delivery.for_user_id == BOT
    assert delivery.direct_messages == [expected_dm(event_id="7"), expected_dm(event_id="8")]
    assert delivery.ignored == []


def test_activity_dm_sent_is_parsed_too() -> None:
    own = dm_event(sender=BOT, recipient="42")
    delivery = parse_delivery(activity(own, event_type="dm.sent"))
    assert delivery.envelope == "activity"
    assert delivery.direct_messages == [expected_dm(sender=BOT, recipient="42")]


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("dm.read", "read"),
        ("dm.indicate_typing", "typing"),
        ("chat.received", "chat"),
        ("chat.sent", "chat"),
        ("profile.update.bio", "profile"),
        ("post.quote.create", "quote"),
        ("post.repost.create", "repost"),
        ("post.create", "post"),
        ("post.delete", "post_delete"),
        ("like.create", "like"),
        ("follow.follow", "follow"),
        ("oauth.revoke", "oauth_revoke"),
        ("brand.new.type", "unknown"),
        ("", "unknown"),
    ],
)
def test_activity_other_types_ignored(event_type: str, kind: str) -> None:
    delivery = parse_delivery(activity(dm_event(), event_type=event_type))
    assert delivery.envelope == "activity"
    assert delivery.direct_messages == []
    assert delivery.ignored == [(kind, "ignored")]


def test_activity_integer_filter_user_id() -> None:
    delivery = parse_delivery(activity(dm_event(), user_id=int(BOT)))
    assert delivery.for_user_id == BOT
    assert delivery.direct_messages == [expected_dm()]


def test_activity_malformed_in_batch() -> None:
    body = activity(dm_event(event_id="1"), {"type": "message_create"}, dm_event(event_id="2"))
    delivery = parse_delivery(body)
    assert [dm.event_id for dm in delivery.direct_messages] == ["1", "2"]
    assert delivery.ignored == [("direct_message", "malformed")]


def test_activity_without_filter_falls_back_to_recipient() -> None:
    body = activity(dm_event(recipient="777"))
    del body["data"]["filter"]
    delivery = parse_delivery(body)
    assert delivery.for_user_id is None
    assert delivery.direct_messages[0].for_user_id == "777"


def test_activity_payload_missing_or_not_object() -> None:
    body = activity()
    del body["data"]["payload"]
    delivery = parse_delivery(body)
    assert delivery.envelope == "activity"
    assert delivery.direct_messages == []
    body["data"]["payload"] = "nope"
    assert parse_delivery(body).direct_messages == []


def test_data_without_event_type_is_not_activity() -> None:
    delivery = parse_delivery({"data": {"payload": {"direct_message_events": [dm_event()]}}})
    assert delivery.envelope == "unknown"
    assert delivery.direct_messages == []


@pytest.mark.parametrize("event_uuid", [
    "-6850472171600526495", "2080765813578191303", "9223372036854775807",
    "-9223372036854775808", str(uuid.UUID(int=7)), 12345, None,
])
def test_activity_event_uuid_in_any_form_is_accepted(event_uuid: Any) -> None:
    # X's examples show signed 64-bit decimals; nothing about the delivery id may refuse one.
    body = activity(dm_event(event_id="7"))
    body["data"]["event_uuid"] = event_uuid
    assert parse_delivery(body).direct_messages == [expected_dm(event_id="7")]


# Posts addressed to the bot (tests/fixtures/x: X's documented examples) -----------------

FIXTURES = Path(__file__).parent / "fixtures" / "x"
XAA_BOT = "1111111111111111111"  # the filtered user of every X Activity API example
AAA_BOT = "4337869213"  # the subscribed user of the Account Activity examples


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return body


def utc(*when: int) -> float:
    return float(calendar.timegm((*when, 0, 0, 0)))


@pytest.mark.parametrize(("name", "created"), [
    ("activity/post_mention_create.json", utc(2026, 7, 24, 21, 23, 23)),
    ("activity/post_reply_create.json", utc(2026, 8, 12, 18, 0, 0)),
])
def test_activity_post_events_carry_the_post_as_payload(name: str, created: float) -> None:
    body = fixture(name)
    post = body["data"]["payload"]
    delivery = parse_delivery(body)
    assert delivery.mentions == [InboundDM(
        event_id="tweet:" + post["id"], sender_id=post["author_id"], recipient_id=XAA_BOT,
        for_user_id=XAA_BOT, text=post["text"], created_at=created, kind="mention",
        tweet_id=post["id"],
    )]
    assert delivery.direct_messages == [] and delivery.ignored == []


def test_a_reply_that_also_names_the_bot_dedupes_with_its_mention() -> None:
    # X sends both post.reply.create and post.mention.create for such a post: one job.
    reply = fixture("activity/post_reply_create.json")
    mention = copy.deepcopy(reply)
    mention["data"]["event_type"] = "post.mention.create"
    mention["data"]["event_uuid"] = "-1"
    [a] = parse_delivery(reply).mentions
    [b] = parse_delivery(mention).mentions
    assert a.event_id == b.event_id == "tweet:" + reply["data"]["payload"]["id"]


def _post_body(**changes: Any) -> dict[str, Any]:
    body = fixture("activity/post_mention_create.json")
    payload = body["data"]["payload"]
    for key, value in changes.items():
        if value is _DELETE:
            del payload[key]
        else:
            payload[key] = value
    return body


_DELETE = object()


@pytest.mark.parametrize("changes", [
    pytest.param({"id": "abc"}, id="id-not-digits"),
    pytest.param({"id": "1" * 20}, id="id-too-long"),
    pytest.param({"id": _DELETE}, id="no-id"),
    pytest.param({"author_id": "me"}, id="author-not-digits"),
    pytest.param({"created_at": _DELETE}, id="no-created-at"),
    pytest.param({"created_at": "yesterday"}, id="created-at-text"),
    pytest.param({"created_at": "2026-07-24T21:23:23"}, id="created-at-without-zone"),
    pytest.param({"created_at": 1784928203}, id="created-at-number"),
    pytest.param({"text": ["a"]}, id="text-list"),
])
def test_bad_activity_posts_are_malformed(changes: dict[str, Any]) -> None:
    delivery = parse_delivery(_post_body(**changes))
    assert delivery.mentions == [] and delivery.ignored == [("mention", "malformed")]


def test_activity_payload_not_an_object_is_malformed() -> None:
    body = _post_body()
    body["data"]["payload"] = ["not", "a", "post"]
    assert parse_delivery(body).ignored == [("mention", "malformed")]


def test_the_pre_issue_14_wrapped_post_is_not_read() -> None:
    # `payload.data` was the emulator's invention, never X's: it must not look answerable.
    body = _post_body()
    body["data"]["payload"] = {"data": body["data"]["payload"]}
    assert parse_delivery(body).ignored == [("mention", "malformed")]


def test_a_repost_delivered_as_a_mention_is_not_answered() -> None:
    body = _post_body(referenced_tweets=[{"type": "retweeted", "id": "2080761390344937796"}])
    delivery = parse_delivery(body)
    assert delivery.mentions == [] and delivery.ignored == [("mention", "retweet")]


def test_a_quoting_post_that_replies_is_still_answered() -> None:
    # Only a repost repeats someone else's words; quoted/replied_to references are questions.
    body = _post_body(referenced_tweets=[{"type": "quoted", "id": "1"},
                                         {"type": "replied_to", "id": "2"}])
    assert len(parse_delivery(body).mentions) == 1


def test_a_long_v2_post_is_read_from_note_tweet() -> None:
    whole = "@ExampleUser " + "purr " * 100
    [mention] = parse_delivery(_post_body(note_tweet={"text": whole})).mentions
    assert mention.text == whole


@pytest.mark.parametrize("created_at", [
    "2026-07-24T21:23:23.000Z", "2026-07-24T21:23:23Z", "2026-07-24T23:23:23+02:00",
    "Fri Jul 24 21:23:23 +0000 2026",
])
def test_activity_post_time_in_each_form_x_writes(created_at: str) -> None:
    [mention] = parse_delivery(_post_body(created_at=created_at)).mentions
    assert mention.created_at == utc(2026, 7, 24, 21, 23, 23)


# Account Activity long posts, created_at, is_blocked_by --------------------------------------


def test_a_long_post_naming_the_bot_past_140_characters_is_answered_whole() -> None:
    body = fixture("account_activity/tweet_create_events_longform_mention_of_bot.json")
    [tweet] = body["tweet_create_events"]
    assert tweet["entities"]["user_mentions"] == []  # the mention is only in extended_tweet
    [mention] = parse_delivery(body).mentions
    assert mention.text == tweet["extended_tweet"]["full_text"]
    assert len(mention.text) == tweet["extended_tweet"]["display_text_range"][1] > 140
    assert (mention.tweet_id, mention.sender_id) == (tweet["id_str"], tweet["user"]["id_str"])
    # X's long-post example has no timestamp_ms: its created_at is the time.
    assert mention.created_at == utc(2025, 5, 19, 14, 1, 46)


def test_the_documented_long_post_for_another_account_is_not_a_mention() -> None:
    delivery = parse_delivery(fixture("account_activity/tweet_create_events_longform.json"))
    assert delivery.mentions == [] and delivery.ignored == [("tweet_create", "not_a_mention")]


def _tweet_body(**changes: Any) -> dict[str, Any]:
    tweet: dict[str, Any] = {
        "id_str": "1050118621198921728", "text": "@catbot hi",
        "user": {"id_str": "42"}, "entities": {"user_mentions": [{"id_str": BOT}]},
    }
    for key, value in changes.items():
        if value is not _DELETE:
            tweet[key] = value
    return {"for_user_id": BOT, "tweet_create_events": [tweet]}


@pytest.mark.parametrize("created_at", [
    "Wed Oct 10 20:19:24 +0000 2018", "Wed Oct 10 22:19:24 +0200 2018",
    "2018-10-10T20:19:24.000Z", "2018-10-10T20:19:24+00:00",
])
def test_tweet_created_at_is_read_without_timestamp_ms(created_at: str) -> None:
    [mention] = parse_delivery(_tweet_body(created_at=created_at)).mentions
    assert mention.created_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC).timestamp()


def test_tweet_timestamp_ms_wins_over_created_at() -> None:
    body = _tweet_body(created_at="Wed Oct 10 20:19:24 +0000 2018", timestamp_ms="1539202765123")
    [mention] = parse_delivery(body).mentions
    assert mention.created_at == 1539202765.123


@pytest.mark.parametrize("created_at", [
    None, "", "yesterday", "Wed Oct 10 20:19:24 2018", "2018-10-10T20:19:24", 1539202764,
    "Wed Oct 10 20:19:24 +0000 -2018",
])
def test_tweet_without_a_readable_time_is_malformed(created_at: Any) -> None:
    body = _tweet_body(created_at=_DELETE if created_at is None else created_at)
    delivery = parse_delivery(body)
    assert delivery.mentions == [] and delivery.ignored == [("tweet_create", "malformed")]


@pytest.mark.parametrize(("flags", "answered"), [
    ({"is_blocked_by": True}, False),
    ({"is_blocked_by": "true"}, False),
    ({"is_blocked_by": "false"}, True),
    ({"is_blocked_by": False}, True),
    ({"is_blocked_by": "true", "user_has_blocked": "false"}, False),
    ({"is_blocked_by": "false", "user_has_blocked": "true"}, False),
])
def test_is_blocked_by_is_honoured_like_user_has_blocked(
    flags: dict[str, Any], answered: bool
) -> None:
    body = _tweet_body(created_at="Wed Oct 10 20:19:24 +0000 2018")
    body.update(flags)
    delivery = parse_delivery(body)
    assert bool(delivery.mentions) is answered
    assert delivery.ignored == ([] if answered else [("tweet_create", "blocked")])


# Non-object bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, True, 0, 1.5, "text", [], [{"for_user_id": BOT}]])
def test_non_object_body_raises_malformed(body: Any) -> None:
    with pytest.raises(MalformedBody):
        parse_delivery(body)


def test_malformed_body_is_a_value_error() -> None:
    # The route catches ValueError for "400 not a JSON object".
    assert issubclass(MalformedBody, ValueError)


# classify ---------------------------------------------------------------------------------

NOW = NOW_MS / 1000.0


def policy(bot_user_id: str | None = BOT, max_age: float = 3600.0) -> IngestPolicy:
    return IngestPolicy(bot_user_id=bot_user_id, max_event_age_seconds=max_age)


def inbound(
    sender: str = "42", for_user_id: str = BOT, created_at: float = NOW, recipient: str = BOT
) -> InboundDM:
    return InboundDM("e1", sender, recipient, for_user_id, "hi", created_at)


def test_classify_accepts_fresh_dm_from_someone_else() -> None:
    assert classify(inbound(), policy(), NOW) == "accept"
    assert classify(inbound(created_at=NOW - 10), policy(), NOW) == "accept"


def test_classify_own_message_by_for_user_id() -> None:
    assert classify(inbound(sender=BOT, recipient="42"), policy(), NOW) == "own"


def test_classify_own_message_without_configured_bot_id() -> None:
    dm = inbound(sender="555", for_user_id="555", recipient="42")
    assert classify(dm, policy(bot_user_id=None), NOW) == "own"


def test_classify_own_message_by_bot_id_even_if_for_user_id_differs() -> None:
    # Another subscribed account receives the bot's DM: still the bot's own message.
    dm = inbound(sender=BOT, for_user_id="777", recipient="777")
    assert classify(dm, policy(), NOW) == "own"


def test_classify_own_wins_over_stale() -> None:
    dm = inbound(sender=BOT, created_at=NOW - 10**6)
    assert classify(dm, policy(), NOW) == "own"


def test_classify_not_for_us() -> None:
    dm = inbound(sender="42", for_user_id="777", recipient="777")
    assert classify(dm, policy(), NOW) == "not_for_us"


def test_classify_without_bot_id_accepts_any_account() -> None:
    dm = inbound(sender="42", for_user_id="777", recipient="777")
    assert classify(dm, policy(bot_user_id=None), NOW) == "accept"


def test_classify_stale_by_age() -> None:
    p = policy(max_age=60.0)
    assert classify(inbound(created_at=NOW - 60.0), p, NOW) == "accept"  # boundary inclusive
    assert classify(inbound(created_at=NOW - 60.5), p, NOW) == "stale"
    assert classify(inbound(created_at=NOW - 86_400), p, NOW) == "stale"


def test_classify_future_timestamp_is_accepted() -> None:
    # Clock skew: an event stamped slightly in the future is not stale.
    assert classify(inbound(created_at=NOW + 5), policy(), NOW) == "accept"


def test_classify_refuses_a_time_too_far_ahead() -> None:
    # Else "now + a year" would pass the age check for a year (issue 15).
    default = policy()
    skew = default.max_future_skew_seconds
    assert classify(inbound(created_at=NOW + skew), default, NOW) == "accept"  # inclusive
    assert classify(inbound(created_at=NOW + skew + 1), default, NOW) == "future"
    assert classify(inbound(created_at=NOW + 365 * 86_400), default, NOW) == "future"
    strict = IngestPolicy(bot_user_id=BOT, max_event_age_seconds=3600,
                          max_future_skew_seconds=0)
    assert classify(inbound(created_at=NOW + 0.5), strict, NOW) == "future"


def test_parse_then_classify_end_to_end() -> None:
    body = account_activity(
        dm_event(event_id="1", sender="42"),
        dm_event(event_id="2", sender=BOT, recipient="42"),
        dm_event(event_id="3", sender="43", ts_ms=NOW_MS - 7_200_000),
    )
    delivery = parse_delivery(body)
    fates = [classify(dm, policy(), NOW) for dm in delivery.direct_messages]
    assert fates == ["accept", "own", "stale"]


# Properties -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=30,
)

ENVELOPE_KEYS = [
    "for_user_id",
    "direct_message_events",
    "direct_message_indicate_typing_events",
    "direct_message_mark_read_events",
    "tweet_create_events",
    "follow_events",
    "user_event",
    "users",
    "apps",
    "data",
    "replay_job_status",
]
EVENT_KEYS = ["type", "id", "created_timestamp", "message_create"]
MESSAGE_KEYS = ["sender_id", "target", "message_data", "source_app_id"]

ids = st.one_of(
    st.integers(min_value=-5, max_value=10**20),
    st.from_regex(r"\A[0-9]{1,21}\Z"),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.floats(),
)


def _maybe(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional={k: values for k in keys})


message_create = st.fixed_dictionaries(
    {},
    optional={
        "sender_id": ids,
        "target": st.one_of(st.fixed_dictionaries({}, optional={"recipient_id": ids}), json_like),
        "message_data": st.one_of(
            st.fixed_dictionaries({}, optional={"text": st.one_of(st.text(), json_like)}),
            json_like,
        ),
        "source_app_id": ids,
    },
)
dm_events = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.just("message_create"), json_like),
        "id": ids,
        "created_timestamp": ids,
        "message_create": st.one_of(message_create, json_like),
    },
)
account_bodies = st.fixed_dictionaries(
    {},
    optional={
        "for_user_id": ids,
        "direct_message_events": st.one_of(st.lists(st.one_of(dm_events, json_like)), json_like),
        "users": json_like,
        "follow_events": json_like,
        "user_event": json_like,
        "tweet_create_events": json_like,
    },
).flatmap(lambda d: st.dictionaries(st.text(max_size=8), json_like, max_size=3).map(
    lambda extra: {**extra, **d}))
posts = st.fixed_dictionaries(
    {},
    optional={
        "id": ids, "author_id": ids, "text": st.one_of(st.text(), json_like),
        "created_at": st.one_of(st.just("2026-07-24T21:23:23.000Z"), st.text(max_size=30),
                                json_like),
        "referenced_tweets": json_like, "note_tweet": json_like,
    },
)
activity_bodies = st.builds(
    lambda event_type, filt, payload, extra: {
        "data": {**extra, "event_type": event_type, "filter": filt, "payload": payload}
    },
    st.one_of(st.sampled_from(["dm.received", "dm.sent", "dm.read", "chat.sent",
                               "post.mention.create", "post.reply.create"]), st.text()),
    st.one_of(st.fixed_dictionaries({}, optional={"user_id": ids}), json_like),
    st.one_of(
        st.fixed_dictionaries(
            {}, optional={"direct_message_events": st.one_of(st.lists(dm_events), json_like),
                          "users": json_like}
        ),
        posts,
        json_like,
    ),
    st.dictionaries(st.text(max_size=8), json_like, max_size=3),
)
keyed_bodies = st.dictionaries(
    st.sampled_from(ENVELOPE_KEYS + EVENT_KEYS + MESSAGE_KEYS), json_like, max_size=6
)


def _check(delivery: Delivery) -> None:
    assert isinstance(delivery, Delivery)
    assert delivery.envelope in {"account_activity", "activity", "unknown"}
    assert delivery.for_user_id is None or (
        delivery.for_user_id.isdigit() and len(delivery.for_user_id) <= 19
    )
    for dm in [*delivery.direct_messages, *delivery.mentions]:
        assert isinstance(dm, InboundDM)
        key = dm.event_id.removeprefix("tweet:")
        assert key.isascii() and key.isdigit() and len(key) <= 19
        for value in (dm.event_id, dm.sender_id, dm.recipient_id, dm.for_user_id, dm.text):
            assert isinstance(value, str)
        assert isinstance(dm.created_at, float)
    for kind, fate in delivery.ignored:
        assert isinstance(kind, str)
        assert fate in {"ignored", "malformed", "retweet", "blocked", "not_a_mention"}


@given(body=json_like)
@settings(max_examples=400, deadline=None)
def test_parse_arbitrary_json_like_values(body: Any) -> None:
    if isinstance(body, dict):
        _check(parse_delivery(body))
    else:
        with pytest.raises(MalformedBody):
            parse_delivery(body)


@given(body=st.one_of(account_bodies, activity_bodies, keyed_bodies))
@settings(max_examples=400, deadline=None)
def test_parse_envelope_shaped_values_never_raise(body: dict[str, Any]) -> None:
    delivery = parse_delivery(body)
    _check(delivery)
    # Every DM-shaped input event is accounted for: parsed, or counted ignored/malformed.
    if delivery.envelope == "account_activity":
        raw = body.get("direct_message_events")
        n_raw = len(raw) if isinstance(raw, list) else (0 if raw is None else 1)
        n_dm_ignored = sum(1 for kind, _ in delivery.ignored if kind == "direct_message")
        assert len(delivery.direct_messages) + n_dm_ignored == n_raw


@given(
    events=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=1, max_value=10**12)), max_size=8
    )
)
@settings(max_examples=100, deadline=None)
def test_good_events_survive_any_mix_of_bad_ones(events: list[tuple[bool, int]]) -> None:
    raw = [
        dm_event(event_id=str(n)) if good else {"type": "message_create", "id": str(n)}
        for good, n in events
    ]
    delivery = parse_delivery(account_activity(*raw))
    assert [dm.event_id for dm in delivery.direct_messages] == [
        str(n) for good, n in events if good
    ]
    assert delivery.ignored == [("direct_message", "malformed")] * sum(
        1 for good, _ in events if not good
    )


def test_huge_created_timestamp_is_malformed_not_a_crash() -> None:
    """X sends epoch ms as a string; a huge number must be counted as malformed, not raise
    (an OverflowError escapes the route's ValueError handler and becomes a 500)."""
    body = account_activity(dm_event(event_id="1"), dm_event(event_id="2", ts_ms="9" * 400))
    delivery = parse_delivery(body)
    _check(delivery)
    assert [dm.event_id for dm in delivery.direct_messages] == ["1"]
    assert delivery.ignored == [("direct_message", "malformed")]


@given(
    ts=st.one_of(
        st.integers(min_value=0, max_value=10**400), st.from_regex(r"\A[0-9]{1,400}\Z")
    )
)
@settings(max_examples=100, deadline=None)
def test_any_digit_string_timestamp_never_raises(ts: int | str) -> None:
    _check(parse_delivery(account_activity(dm_event(ts_ms=ts))))
