"""X's JSON shapes for X Chat: the `chat.received` delivery, public-key records, answers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from catbot.xchat.errors import MalformedPayloadError
from catbot.xchat.wire import (
    _MAX_ENCODED_CHARS,
    canonical_conversation_id,
    conversation_participants,
    parse_chat_received,
    parse_conversation_events,
    parse_public_keys,
    parse_registered_version,
    parse_sent_event,
    send_path_id,
)

# X's documented example (x-api/activity/event-payloads, "chat.received"), with the truncated
# crypto strings replaced by well-formed base64.
DOCUMENTED: dict[str, Any] = {
    "data": {
        "event_uuid": "8511582263942905822",
        "filter": {"user_id": "1111111111111111111"},
        "event_type": "chat.received",
        "tag": "chat-inbound",
        "payload": {
            "conversation_token": "eyJhbGciOiJIUzI1NiJ9.eyJyZXF1ZXN0aW5nVXN.sig",
            "id": "e4f4d3fc-8bbf-4928-92eb-e5058d6bb6f6",
            "created_at_msec": "1784841183370",
            "sender_id": "2222222222222222222",
            "conversation_id": "2222222222222222222:1111111111111111111",
            "conversation_key_version": "1768236281331",
            "encoded_event": "CwABAAAAEzIwODA0MDA4MjUyMjcxMDAxNjALAAIA",
            "conversation_key_change_event": "CwABAAAAEzIwMTA3NTQ4MTkxMTY0NDk5MDULAAIA",
            "message_event_signature": {
                "public_key_version": "1765382634817",
                "signature": "6IK9SZIMXBe5SFcB7vGZJd5A5Eb5MLvnwrhUFfBGv4S5",
                "signature_version": "7",
                "signing_public_key": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJ2c",
            },
        },
    }
}


def test_the_documented_delivery_parses() -> None:
    parsed = parse_chat_received(DOCUMENTED)
    payload = DOCUMENTED["data"]["payload"]
    assert parsed.sender_id == payload["sender_id"]
    assert parsed.conversation_id == payload["conversation_id"]
    assert parsed.encoded_event == payload["encoded_event"]
    assert parsed.key_change_event == payload["conversation_key_change_event"]
    assert parsed.event_id == payload["id"]
    assert parsed.event_uuid == DOCUMENTED["data"]["event_uuid"]
    assert parsed.dedupe_id == payload["id"]
    assert parsed.created_at_msec == int(payload["created_at_msec"])
    assert parsed.conversation_token == payload["conversation_token"]
    assert parsed.signer_key_hint == payload["message_event_signature"]["signing_public_key"]
    # Ciphertext and tokens stay out of the repr.
    assert payload["encoded_event"] not in repr(parsed)
    assert payload["conversation_token"] not in repr(parsed)


def test_the_short_variant_without_id_or_key_change_parses() -> None:
    # xchat/real-time-events "Payload shape (live)": hyphenated id, no `id`, no signature.
    short = {"data": {"event_type": "chat.received", "event_uuid": "0f52b591",
                      "payload": {"conversation_id": "1215441834412953600-1843439638876491776",
                                  "sender_id": "1843439638876491776",
                                  "encoded_event": "QUJD",
                                  "conversation_key_version": "1782945126642"}}}
    parsed = parse_chat_received(short)
    assert parsed.key_change_event is None
    assert parsed.dedupe_id == "0f52b591"
    assert canonical_conversation_id(parsed.conversation_id) == (
        "1215441834412953600:1843439638876491776"
    )


def test_a_bare_payload_parses_too() -> None:
    parsed = parse_chat_received(DOCUMENTED["data"]["payload"])
    assert parsed.event_uuid is None and parsed.sender_id == "2222222222222222222"


def broken(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(DOCUMENTED)
    node = body["data"]["payload"]
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


@pytest.mark.parametrize(("path", "value"), [
    (("sender_id",), KeyError),
    (("sender_id",), "@friend"),
    (("conversation_id",), "not-a-conversation"),
    (("conversation_id",), KeyError),
    (("encoded_event",), KeyError),
    (("encoded_event",), "not base64!"),
    (("encoded_event",), 42),
    (("encoded_event",), "A" * (_MAX_ENCODED_CHARS + 4)),
    (("conversation_key_change_event",), "%%%"),
])
def test_broken_deliveries_are_malformed(path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(MalformedPayloadError):
        parse_chat_received(broken(path, value))


def test_another_event_type_is_refused() -> None:
    body = copy.deepcopy(DOCUMENTED)
    body["data"]["event_type"] = "chat.sent"
    with pytest.raises(MalformedPayloadError):
        parse_chat_received(body)
    with pytest.raises(MalformedPayloadError):
        parse_chat_received({"data": {"payload": "nope"}})


@pytest.mark.parametrize(("given", "canonical"), [
    ("42:1000", "42:1000"),
    ("1000:42", "42:1000"),
    ("1000-42", "42:1000"),
    ("g123456", "g123456"),
])
def test_conversation_ids_in_every_form(given: str, canonical: str) -> None:
    assert canonical_conversation_id(given) == canonical
    assert conversation_participants(given) == conversation_participants(canonical)


def test_the_send_path_is_the_recipient_for_one_to_one() -> None:
    assert send_path_id("42:1000", "1000") == "42"
    assert send_path_id("1000-42", "1000") == "42"
    assert send_path_id("g77", "1000") == "g77"
    with pytest.raises(MalformedPayloadError):
        send_path_id("42:43", "1000")


KEY = {"public_key": "UEs=", "signing_public_key": "U1BL", "identity_public_key_signature": "U0lH"}


def test_public_key_records_under_either_version_name() -> None:
    body = {"data": [{**KEY, "public_key_version": "1765382634817", "juicebox_config": {}},
                     {**KEY, "version": "1733889755256"},
                     {"public_key": "UEs=", "version": "1"}]}  # incomplete: skipped
    records = parse_public_keys(body, "42")
    assert [(r.user_id, r.version) for r in records] == [
        ("42", "1765382634817"), ("42", "1733889755256")
    ]
    assert records[0].signing_entry() == {
        "user_id": "42", "public_key_version": "1765382634817", "public_key": "U1BL",
        "identity_public_key": "UEs=", "identity_public_key_signature": "U0lH",
    }
    assert parse_public_keys({"data": {**KEY, "version": 7}}, "9")[0].version == "7"
    assert parse_public_keys({"errors": [{"title": "Not Found Error"}]}, "9") == []


def test_answers() -> None:
    assert parse_registered_version({"data": {"public_key_version": "123"}}) == "123"
    assert parse_registered_version({"data": {"version": "456", "token_map": {}}}) == "456"
    assert parse_registered_version({"data": [{"version": 789}]}) == "789"
    assert parse_registered_version({"errors": []}) is None
    assert parse_sent_event({"data": {"encoded_message_event": "QUJD"}}) == "QUJD"
    assert parse_sent_event({"data": {}}) is None


def test_conversation_events_page() -> None:
    page = parse_conversation_events({
        "data": [{"encoded_event": "QUJD", "id": "1"}, "REVG", {"encoded_event": "!!"}],
        "meta": {"conversation_key_events": ["R0hJ", {"encoded_event": "SktM"}],
                 "next_token": "abc"},
    })
    assert page.events == ("QUJD", "REVG")
    assert page.key_change_events == ("R0hJ", "SktM")
    assert page.next_token == "abc"
    assert parse_conversation_events({}).next_token is None
