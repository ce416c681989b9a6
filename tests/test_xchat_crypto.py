"""The bot's X Chat crypto against real chatxdk objects, offline.

A friend with a real SDK identity sets up a conversation key, encrypts, and the delivery is
built the way X's server builds it (testkit/xchat_builders.py). The bot must decrypt it, answer,
and the friend must decrypt and verify the answer; every way a delivery can be wrong must end
in its own bounded reason.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import chat_xdk
import pytest

from catbot.xchat.crypto import DecryptedMessage, SendPayload, XChatCrypto, _classify_message
from catbot.xchat.errors import (
    DECRYPT_FAILURE_REASONS,
    ConversationKeyError,
    MalformedPayloadError,
    UnsupportedEventError,
    VerificationError,
    XChatError,
)
from catbot.xchat.identity import BotIdentity, generate_identity, load_identity
from catbot.xchat.keyring import ConversationKeyring
from catbot.xchat.wire import ChatReceived, PublicKeyRecord, parse_chat_received
from testkit.xchat_builders import (
    Friend,
    chat_received,
    message_event,
    t_end,
    t_struct,
    wrap_posted,
)

BOT = "1000"
FRIEND = "42"


@dataclass
class Setup:
    identity: BotIdentity
    crypto: XChatCrypto
    friend: Friend
    conversation: str
    key_change: str


def new_identity(version: str | None = None) -> BotIdentity:
    fresh = generate_identity()
    return load_identity(fresh.private_key, user_id=BOT,
                         key_version=version or fresh.registration.version)


@pytest.fixture
def setup() -> Setup:
    identity = new_identity()
    friend = Friend(FRIEND)
    conversation, key_change = friend.start_conversation(identity.record())
    return Setup(identity, XChatCrypto(identity), friend, conversation, key_change)


def delivery(s: Setup, encoded_event: str, *, key_change: str | None = None,
             sender_id: str = FRIEND) -> ChatReceived:
    return parse_chat_received(chat_received(
        sender_id=sender_id, conversation_id=s.conversation, encoded_event=encoded_event,
        key_change=key_change, bot_id=BOT,
    ))


def friend_says(s: Setup, text: str, *, with_key_change: bool = True) -> ChatReceived:
    encoded, _ = s.friend.write(s.conversation, text)
    return delivery(s, encoded, key_change=s.key_change if with_key_change else None)


def as_delivered_by_x(s: Setup, reply: SendPayload) -> str:
    return wrap_posted(
        message_id=reply.message_id,
        encoded_message_create_event=reply.encoded_message_create_event,
        encoded_message_event_signature=reply.encoded_message_event_signature,
        sender_id=BOT,
        conversation_id=s.conversation,
    )


def expect(reason: str, cls: type[XChatError], call: Callable[[], object]) -> XChatError:
    with pytest.raises(cls) as caught:
        call()
    assert caught.value.reason == reason
    return caught.value


# --- the round trip -------------------------------------------------------------------


def test_friend_message_is_decrypted_and_the_reply_reads_back_verified(setup: Setup) -> None:
    encoded, sent = setup.friend.write(setup.conversation, "hello cat 🐈")
    message = setup.crypto.decrypt(
        delivery(setup, encoded, key_change=setup.key_change), [setup.friend.record()]
    )
    assert message.text == "hello cat 🐈"
    assert message.sender_id == FRIEND
    assert message.message_id == sent.message_id
    assert message.conversation_id == f"{FRIEND}:{BOT}"
    assert message.key_version == setup.friend.conversation_keys[setup.conversation][0]
    assert message.learned_keys is True

    reply = setup.crypto.encrypt_reply(message.conversation_id, "Cats sleep 12 to 16 hours.")
    assert reply.path_id == FRIEND  # x-api/chat/send-chat-message: the recipient's user id
    assert set(reply.body()) == {
        "message_id", "encoded_message_create_event", "encoded_message_event_signature"
    }
    read = setup.friend.read(as_delivered_by_x(setup, reply), setup.identity.record())
    assert read["type"] == "Message"
    assert read["verified"] is True
    assert read["sender_id"] == BOT
    assert read["content"]["text"] == "Cats sleep 12 to 16 hours."
    assert read["id"] == reply.message_id


def test_threaded_reply_quotes_the_message_and_the_quote_validates(setup: Setup) -> None:
    message = setup.crypto.decrypt(friend_says(setup, "fact please"), [setup.friend.record()])
    reply = setup.crypto.encrypt_reply(message.conversation_id, "A fact.", in_reply_to=message)
    read = setup.friend.read(as_delivered_by_x(setup, reply), setup.identity.record())
    assert read["content"]["text"] == "A fact."
    assert read["content"]["replying_to_preview"]["replying_to_message_id"] == message.message_id
    assert read["reply_preview_validation"] == "Valid"


def test_second_message_needs_no_key_change(setup: Setup) -> None:
    first = setup.crypto.decrypt(friend_says(setup, "one"), [setup.friend.record()])
    second = setup.crypto.decrypt(
        friend_says(setup, "two", with_key_change=False), [setup.friend.record()]
    )
    assert (first.text, second.text) == ("one", "two")
    assert second.learned_keys is False


def test_a_key_rotation_is_learned_and_replies_use_the_new_key(setup: Setup) -> None:
    setup.crypto.decrypt(friend_says(setup, "before"), [setup.friend.record()])
    old_version = setup.friend.conversation_keys[setup.conversation][0]
    _, rotation = setup.friend.start_conversation(setup.identity.record())
    new_version = setup.friend.conversation_keys[setup.conversation][0]
    assert new_version != old_version
    encoded, _ = setup.friend.write(setup.conversation, "after")
    message = setup.crypto.decrypt(
        delivery(setup, encoded, key_change=rotation), [setup.friend.record()]
    )
    assert (message.text, message.key_version, message.learned_keys) == (
        "after", new_version, True
    )
    reply = setup.crypto.encrypt_reply(setup.conversation, "fresh key")
    assert reply.conversation_key_version == new_version
    read = setup.friend.read(as_delivered_by_x(setup, reply), setup.identity.record())
    assert read["content"]["text"] == "fresh key"


class _CountingChat:
    """The SDK instance, counting key-change reads (each is a signature check)."""

    def __init__(self, chat: chat_xdk.Chat) -> None:
        self._chat = chat
        self.key_change_reads = 0

    def decrypt_events(self, *args: object) -> object:
        self.key_change_reads += 1
        return self._chat.decrypt_events(*args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._chat, name)


def as_x_sends_it(s: Setup, text: str, *, version: str | None = None) -> ChatReceived:
    """A message with the conversation's key change and key version on it, as X's
    documented chat.received payload carries both on every message."""
    held = s.friend.conversation_keys[s.conversation][0]
    return replace(friend_says(s, text), conversation_key_version=version or held)


def test_a_key_change_already_held_is_not_read_again(setup: Setup) -> None:
    counting = _CountingChat(setup.crypto._chat)
    setup.crypto._chat = counting  # type: ignore[assignment]
    texts = [setup.crypto.decrypt(as_x_sends_it(setup, f"message {n}"),
                                  [setup.friend.record()]).text for n in range(5)]
    assert texts == [f"message {n}" for n in range(5)]
    assert counting.key_change_reads == 1


def test_a_message_under_a_newer_key_than_its_stated_version_still_opens(setup: Setup) -> None:
    setup.crypto.decrypt(as_x_sends_it(setup, "before"), [setup.friend.record()])
    old_version = setup.friend.conversation_keys[setup.conversation][0]
    _, rotation = setup.friend.start_conversation(setup.identity.record())
    encoded, _ = setup.friend.write(setup.conversation, "after")
    stale = replace(delivery(setup, encoded, key_change=rotation),
                    conversation_key_version=old_version)
    message = setup.crypto.decrypt(stale, [setup.friend.record()])
    assert (message.text, message.learned_keys) == ("after", True)


# --- what must not be answered ------------------------------------------------------------


def tampered_create_event(s: Setup, text: str) -> str:
    """The friend's message with one ciphertext bit flipped on the way (field 100 of the
    MessageCreateEvent, after its 7-byte field header)."""
    version, key = s.friend.conversation_keys[s.conversation]
    sent = s.friend.chat.encrypt_message(
        s.conversation, text, conversation_key=key, conversation_key_version=version
    )
    create = bytearray(base64.b64decode(sent.encrypted_content))
    create[10] ^= 0x01
    return wrap_posted(
        message_id=sent.message_id,
        encoded_message_create_event=base64.b64encode(bytes(create)).decode(),
        encoded_message_event_signature=sent.encoded_event_signature,
        sender_id=FRIEND, conversation_id=s.conversation,
    )


def test_tampered_ciphertext_fails_verification(setup: Setup) -> None:
    encoded = tampered_create_event(setup, "pay me")
    expect("unverified", VerificationError, lambda: setup.crypto.decrypt(
        delivery(setup, encoded, key_change=setup.key_change), [setup.friend.record()]
    ))


def test_a_message_id_changed_by_the_server_fails_verification(setup: Setup) -> None:
    _, sent = setup.friend.write(setup.conversation, "hello")
    encoded = wrap_posted(
        message_id=sent.message_id[:-1] + ("0" if sent.message_id[-1] != "0" else "1"),
        encoded_message_create_event=sent.encrypted_content,
        encoded_message_event_signature=sent.encoded_event_signature,
        sender_id=FRIEND, conversation_id=setup.conversation,
    )
    expect("unverified", VerificationError, lambda: setup.crypto.decrypt(
        delivery(setup, encoded, key_change=setup.key_change), [setup.friend.record()]
    ))


def test_without_the_senders_keys_nothing_is_decrypted(setup: Setup) -> None:
    expect("unknown_sender_keys", VerificationError,
           lambda: setup.crypto.decrypt(friend_says(setup, "hi"), []))


def test_an_impostor_key_under_the_senders_version_fails_verification(setup: Setup) -> None:
    impostor = Friend("666")
    forged = PublicKeyRecord(FRIEND, setup.friend.version, impostor.keys.public_key,
                             impostor.keys.signing_public_key,
                             impostor.keys.identity_public_key_signature)
    # The key change comes first and fails; its keys are not taken, so the message cannot
    # open and the key change's verification failure is what is reported.
    expect("unverified", VerificationError,
           lambda: setup.crypto.decrypt(friend_says(setup, "hi"), [forged]))
    assert not setup.crypto.has_conversation_key(setup.conversation)


def test_a_record_whose_keys_are_not_bound_together_is_ignored(setup: Setup) -> None:
    """The friend's real signing key, but beside another identity key: the binding signature
    no longer holds, and chatxdk must not use the record."""
    impostor = Friend("666")
    unbound = PublicKeyRecord(FRIEND, setup.friend.version, impostor.keys.public_key,
                              setup.friend.keys.signing_public_key,
                              setup.friend.keys.identity_public_key_signature)
    expect("unknown_sender_keys", VerificationError,
           lambda: setup.crypto.decrypt(friend_says(setup, "hi"), [unbound]))


def test_a_delivery_naming_another_sender_than_the_signed_event_is_refused(setup: Setup) -> None:
    encoded, _ = setup.friend.write(setup.conversation, "hi")
    wrong = ChatReceived(sender_id="43", conversation_id=setup.conversation,
                         encoded_event=encoded, key_change_event=setup.key_change)
    expect("envelope_mismatch", VerificationError,
           lambda: setup.crypto.decrypt(wrong, [setup.friend.record()]))


def test_an_event_whose_sender_field_was_rewritten_fails(setup: Setup) -> None:
    _, sent = setup.friend.write(setup.conversation, "hi")
    encoded = wrap_posted(
        message_id=sent.message_id, encoded_message_create_event=sent.encrypted_content,
        encoded_message_event_signature=sent.encoded_event_signature,
        sender_id="43", conversation_id=setup.conversation,
    )
    with pytest.raises(VerificationError) as caught:
        setup.crypto.decrypt(
            delivery(setup, encoded, key_change=setup.key_change, sender_id="43"),
            [setup.friend.record()],
        )
    # Whose keys could verify a "43" that the friend signed? None: no key matches.
    assert caught.value.reason == "unknown_sender_keys"


def test_an_impostors_key_change_is_not_learned(setup: Setup) -> None:
    impostor_chat = chat_xdk.Chat()
    generated = impostor_chat.generate_keypairs()
    impostor_chat.set_identity(FRIEND, str(generated.version))
    impostor = Friend(FRIEND, chat=impostor_chat)  # a new key pair claiming the friend's id
    conversation, forged_change = impostor.start_conversation(setup.identity.record())
    assert conversation == setup.conversation
    encoded, _ = impostor.write(conversation, "trust me")
    with pytest.raises(VerificationError):
        setup.crypto.decrypt(
            delivery(setup, encoded, key_change=forged_change), [setup.friend.record()]
        )
    assert not setup.crypto.has_conversation_key(setup.conversation)


def test_without_any_key_change_the_conversation_key_is_missing(setup: Setup) -> None:
    expect("no_conversation_key", ConversationKeyError, lambda: setup.crypto.decrypt(
        friend_says(setup, "hi", with_key_change=False), [setup.friend.record()]
    ))


def test_a_missed_key_change_is_recovered_from_history(setup: Setup) -> None:
    queued = friend_says(setup, "hello again", with_key_change=False)
    expect("no_conversation_key", ConversationKeyError,
           lambda: setup.crypto.decrypt(queued, [setup.friend.record()]))
    impostor = Friend("666")
    _, foreign_change = impostor.start_conversation(setup.identity.record())
    # History lists the real change and one by someone whose keys were not given: only the
    # verified one teaches a key.
    assert setup.crypto.apply_key_changes(
        [foreign_change, setup.key_change], [setup.friend.record()]
    ) == 1
    assert not setup.crypto.has_conversation_key(f"666:{BOT}")
    assert setup.crypto.decrypt(queued, [setup.friend.record()]).text == "hello again"
    assert setup.crypto.apply_key_changes([setup.key_change], [setup.friend.record()]) == 0


def test_a_wrong_configured_key_version_reads_as_a_missing_conversation_key() -> None:
    fresh = generate_identity()
    registered = load_identity(fresh.private_key, user_id=BOT,
                               key_version=fresh.registration.version)
    friend = Friend(FRIEND)
    conversation, key_change = friend.start_conversation(registered.record())
    misconfigured = XChatCrypto(load_identity(fresh.private_key, user_id=BOT, key_version="1"))
    encoded, _ = friend.write(conversation, "hi")
    payload = parse_chat_received(chat_received(
        sender_id=FRIEND, conversation_id=conversation, encoded_event=encoded,
        key_change=key_change, bot_id=BOT,
    ))
    expect("no_conversation_key", ConversationKeyError,
           lambda: misconfigured.decrypt(payload, [friend.record()]))


def test_a_wrong_key_of_the_right_version_does_not_open_the_event(setup: Setup) -> None:
    version = setup.friend.conversation_keys[setup.conversation][0]
    wrong = ConversationKeyring()
    wrong.add(setup.conversation, version, bytes(range(32)))
    setup.crypto.load_conversation_keys(
        {setup.conversation: wrong.seal(setup.conversation, setup.identity.seal_key())}
    )
    expect("bad_conversation_key", ConversationKeyError, lambda: setup.crypto.decrypt(
        friend_says(setup, "hi", with_key_change=False), [setup.friend.record()]
    ))


@pytest.mark.parametrize("encoded", [
    base64.b64encode(b"not thrift at all").decode(),
    base64.b64encode(b"\x0b\x00\x01\x00\x00\x00\x05ab").decode(),  # truncated string field
])
def test_an_event_that_does_not_parse_is_malformed(setup: Setup, encoded: str) -> None:
    expect("malformed", MalformedPayloadError, lambda: setup.crypto.decrypt(
        delivery(setup, encoded, key_change=setup.key_change), [setup.friend.record()]
    ))


def test_a_broken_key_change_is_the_reported_cause(setup: Setup) -> None:
    encoded, _ = setup.friend.write(setup.conversation, "hi")
    garbage = base64.b64encode(b"\x0c\x00\x07garbage").decode()
    expect("malformed", MalformedPayloadError, lambda: setup.crypto.decrypt(
        delivery(setup, encoded, key_change=garbage), [setup.friend.record()]
    ))


def test_a_reaction_is_verified_but_not_a_message(setup: Setup) -> None:
    setup.crypto.decrypt(friend_says(setup, "hi"), [setup.friend.record()])
    version, key = setup.friend.conversation_keys[setup.conversation]
    sent = setup.friend.chat.encrypt_add_reaction(
        None, "👍", conversation_id=setup.conversation, target_message_sequence_id="1",
        conversation_key=key, conversation_key_version=version,
    )
    encoded = wrap_posted(
        message_id=sent.message_id, encoded_message_create_event=sent.encrypted_content,
        encoded_message_event_signature=sent.encoded_event_signature,
        sender_id=FRIEND, conversation_id=setup.conversation,
    )
    expect("not_a_message", UnsupportedEventError,
           lambda: setup.crypto.decrypt(delivery(setup, encoded), [setup.friend.record()]))


def test_a_key_change_delivered_as_the_event_is_not_a_message(setup: Setup) -> None:
    expect("not_a_message", UnsupportedEventError, lambda: setup.crypto.decrypt(
        delivery(setup, setup.key_change), [setup.friend.record()]
    ))


def test_unrecognised_sdk_failures_keep_a_bounded_reason() -> None:
    assert _classify_message("Juicebox error: something new").reason == "sdk_error"
    assert _classify_message("").reason == "sdk_error"


def test_every_failure_reason_is_declared_once() -> None:
    assert len(DECRYPT_FAILURE_REASONS) == len(set(DECRYPT_FAILURE_REASONS))
    with pytest.raises(ValueError):
        VerificationError("x", reason="no_conversation_key")


# --- the restart case and the stored keys ---------------------------------------------


def test_learned_keys_survive_a_restart_through_the_store(setup: Setup) -> None:
    setup.crypto.decrypt(friend_says(setup, "first"), [setup.friend.record()])
    stored = setup.crypto.conversation_keys_to_store([setup.conversation])
    queued = friend_says(setup, "queued before the crash", with_key_change=False)

    restarted = XChatCrypto(setup.identity)
    expect("no_conversation_key", ConversationKeyError,
           lambda: restarted.decrypt(queued, [setup.friend.record()]))
    report = restarted.load_conversation_keys(stored)
    assert (report.conversations, report.keys, report.rejected) == (1, 1, ())
    assert restarted.decrypt(queued, [setup.friend.record()]).text == "queued before the crash"
    reply = restarted.encrypt_reply(setup.conversation, "still here")
    read = setup.friend.read(as_delivered_by_x(setup, reply), setup.identity.record())
    assert read["content"]["text"] == "still here"


def test_stored_keys_are_sealed(setup: Setup) -> None:
    setup.crypto.decrypt(friend_says(setup, "secret words"), [setup.friend.record()])
    blob = setup.crypto.conversation_keys_to_store()[f"{FRIEND}:{BOT}"]
    key = setup.friend.conversation_keys[setup.conversation][1]
    assert key not in blob
    assert base64.b64encode(key) not in blob
    assert b"secret words" not in blob


def test_sealed_keys_open_only_for_their_identity_and_conversation(setup: Setup) -> None:
    setup.crypto.decrypt(friend_says(setup, "hi"), [setup.friend.record()])
    blob = setup.crypto.conversation_keys_to_store()[setup.conversation]
    other = XChatCrypto(new_identity())
    assert other.load_conversation_keys({setup.conversation: blob}).rejected == (
        setup.conversation,
    )
    same = XChatCrypto(setup.identity)
    altered = blob[:-3] + (b"AAA" if blob[-3:] != b"AAA" else b"BBB")
    moved = {"7:1000": blob, setup.conversation: altered, "8:1000": b"not ours"}
    report = same.load_conversation_keys(moved)
    assert sorted(report.rejected) == sorted(moved)
    assert report.conversations == 0
    assert not same.has_conversation_key(setup.conversation)


def test_encrypting_without_a_conversation_key_is_refused(setup: Setup) -> None:
    expect("no_conversation_key", ConversationKeyError,
           lambda: setup.crypto.encrypt_reply(setup.conversation, "hello?"))


# --- plaintext stays out of reprs and stored payloads -----------------------------------


def test_plaintext_is_not_in_reprs_or_the_stored_send_payload(setup: Setup) -> None:
    message = setup.crypto.decrypt(friend_says(setup, "my PIN is 2580"), [setup.friend.record()])
    reply = setup.crypto.encrypt_reply(setup.conversation, "never log this reply")
    assert "2580" not in repr(message)
    assert "never log this reply" not in repr(reply)
    stored = reply.to_json()
    assert "never log this reply" not in stored
    assert SendPayload.from_json(stored) == reply
    assert "2580" not in repr(setup.identity) and setup.identity.fingerprint in repr(
        setup.identity
    )


def test_a_corrupt_stored_send_payload_is_malformed() -> None:
    with pytest.raises(MalformedPayloadError):
        SendPayload.from_json('{"path_id": "42"}')
    with pytest.raises(MalformedPayloadError):
        SendPayload.from_json("not json")


# --- threads --------------------------------------------------------------------------------


def test_one_instance_serves_several_threads(setup: Setup) -> None:
    setup.crypto.decrypt(friend_says(setup, "warm-up"), [setup.friend.record()])
    texts = [f"message {i}" for i in range(40)]
    deliveries = [friend_says(setup, t, with_key_change=False) for t in texts]
    results: dict[int, str] = {}
    failures: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for index in range(offset, len(deliveries), 4):
                got: DecryptedMessage = setup.crypto.decrypt(
                    deliveries[index], [setup.friend.record()]
                )
                setup.crypto.encrypt_reply(setup.conversation, "ok")
                results[index] = got.text
        except BaseException as exc:  # the assertion below reports it
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert [results[i] for i in range(len(texts))] == texts


def test_detail_union_field_three_alone_is_a_key_change_not_a_message(setup: Setup) -> None:
    """Cross-check of the test encoder itself: wrapping a MessageCreateEvent under union
    field 3 instead of 1 must not decrypt as a message."""
    _, sent = setup.friend.write(setup.conversation, "hi")
    encoded = message_event(
        message_id=sent.message_id, sender_id=FRIEND, conversation_id=setup.conversation,
        detail=t_end(t_struct(3, base64.b64decode(sent.encrypted_content))),
        signature=base64.b64decode(sent.encoded_event_signature),
    )
    with pytest.raises(XChatError):
        setup.crypto.decrypt(delivery(setup, encoded, key_change=setup.key_change),
                             [setup.friend.record()])
