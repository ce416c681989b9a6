"""Test-side X Chat actors: a friend with a real chatxdk identity, and what X's server builds.

X's server wraps what a client posts into the `encoded_event` it delivers. X does not document
that layout; x-api.md ("X Chat", last bullet) records it as read from chatxdk's own test
vectors: a Thrift binary-protocol struct `MessageEvent` with 1 sequence_id, 2 message_id,
3 sender_id, 4 conversation_id, 6 created_at_msec (all strings), 7 detail (a union: field 1
the client's MessageCreateEvent, field 3 a ConversationKeyChangeEvent) and 9 the signature
struct {1 signature, 2 public_key_version, 3 signature_version}.

This is the daemon tests' own encoder, written from that description with nothing but
`struct`; the emulator has its own. Both meeting the SDK is the point.
"""

from __future__ import annotations

import base64
import itertools
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import chat_xdk

from catbot.xchat.wire import PublicKeyRecord

# Thrift binary protocol type ids (Apache Thrift, TBinaryProtocol).
T_STOP, T_STRING, T_STRUCT = 0, 11, 12

_sequence = itertools.count(1)


def t_string(field_id: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack(">bhi", T_STRING, field_id, len(data)) + data


def t_struct(field_id: int, encoded_struct: bytes) -> bytes:
    """`encoded_struct` is a whole struct, already ending with its stop byte."""
    return struct.pack(">bh", T_STRUCT, field_id) + encoded_struct


def t_end(*fields: bytes) -> bytes:
    return b"".join(fields) + bytes([T_STOP])


def message_event(
    *,
    message_id: str,
    sender_id: str,
    conversation_id: str,
    detail: bytes,
    signature: bytes,
    sequence_id: str | None = None,
    created_at_msec: int | None = None,
) -> str:
    """A server-built `MessageEvent`, base64 as delivered in `encoded_event`."""
    event = t_end(
        t_string(1, sequence_id or str(next(_sequence))),
        t_string(2, message_id),
        t_string(3, sender_id),
        t_string(4, conversation_id),
        t_string(6, str(created_at_msec or int(time.time() * 1000))),
        t_struct(7, detail),
        t_struct(9, signature),
    )
    return base64.b64encode(event).decode("ascii")


def signature_struct(signature: str, public_key_version: str, signature_version: str) -> bytes:
    return t_end(
        t_string(1, signature), t_string(2, public_key_version), t_string(3, signature_version)
    )


@dataclass
class Friend:
    """Someone writing to the bot from X Chat, with real keys made by chatxdk."""

    user_id: str
    chat: chat_xdk.Chat = field(default_factory=chat_xdk.Chat)
    conversation_keys: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        generated = self.chat.generate_keypairs()
        self.version = str(generated.version)
        self.keys = generated.public_key
        self.chat.set_identity(self.user_id, self.version)

    def record(self) -> PublicKeyRecord:
        """This friend's key as `GET /2/users/{id}/public_keys` returns it."""
        return PublicKeyRecord(self.user_id, self.version, self.keys.public_key,
                               self.keys.signing_public_key,
                               self.keys.identity_public_key_signature)

    def start_conversation(self, bot: PublicKeyRecord) -> tuple[str, str]:
        """Create a conversation key for the friend and the bot (`prepare_conversation_key
        _change`, as the friend's client does before posting it to X) and return the
        conversation id and the key change X would deliver, server-wrapped."""
        prepared: dict[str, Any] = self.chat.prepare_conversation_key_change([
            {"user_id": self.user_id, "public_key": self.keys.public_key,
             "key_version": self.version},
            {"user_id": bot.user_id, "public_key": bot.public_key, "key_version": bot.version},
        ])
        conversation_id = str(prepared["conversation_id"])
        self.conversation_keys[conversation_id] = (
            str(prepared["conversation_key_version"]), bytes(prepared["conversation_key"])
        )
        action = prepared["action_signatures"][0]
        key_change = message_event(
            message_id=action["message_id"],
            sender_id=self.user_id,
            conversation_id=conversation_id,
            detail=base64.b64decode(action["encoded_message_event_detail"]),
            signature=signature_struct(
                action["signature"], action["public_key_version"], action["signature_version"]
            ),
        )
        return conversation_id, key_change

    def write(self, conversation_id: str, text: str) -> tuple[str, chat_xdk.SendPayload]:
        """The friend's client encrypts `text`; X wraps it into the delivered event."""
        version, key = self.conversation_keys[conversation_id]
        sent = self.chat.encrypt_message(
            conversation_id, text, conversation_key=key, conversation_key_version=version
        )
        delivered = wrap_posted(
            message_id=sent.message_id,
            encoded_message_create_event=sent.encrypted_content,
            encoded_message_event_signature=sent.encoded_event_signature,
            sender_id=self.user_id,
            conversation_id=conversation_id,
        )
        return delivered, sent

    def read(self, encoded_event: str, sender: PublicKeyRecord) -> dict[str, Any]:
        """The friend's client decrypting and verifying an event from `sender`."""
        keys = {version: key for version, key in self.conversation_keys.values()}
        # The friend's own entry too: a threaded reply embeds the friend's signed original.
        entries = [sender.signing_entry(), self.record().signing_entry()]
        return dict(self.chat.decrypt_event(encoded_event, keys, entries))


def wrap_posted(
    *,
    message_id: str,
    encoded_message_create_event: str,
    encoded_message_event_signature: str,
    sender_id: str,
    conversation_id: str,
) -> str:
    """What X's server makes of a `POST .../messages` body: detail union field 1 holds the
    posted MessageCreateEvent, field 9 the posted MessageEventSignature, both as they are."""
    return message_event(
        message_id=message_id,
        sender_id=sender_id,
        conversation_id=conversation_id,
        detail=t_end(t_struct(1, base64.b64decode(encoded_message_create_event))),
        signature=base64.b64decode(encoded_message_event_signature),
    )


def chat_received(
    *,
    sender_id: str,
    conversation_id: str,
    encoded_event: str,
    key_change: str | None = None,
    bot_id: str,
    event_id: str = "e4f4d3fc-8bbf-4928-92eb-e5058d6bb6f6",
    conversation_key_version: str | None = None,
) -> dict[str, Any]:
    """An X Activity API `chat.received` delivery shaped like X's documented example
    (x-api/activity/event-payloads, "Chat events (XChat)")."""
    payload: dict[str, Any] = {
        "conversation_token": "eyJhbGciOiJIUzI1NiJ9.e30.sig",
        "id": event_id,
        "created_at_msec": str(int(time.time() * 1000)),
        "sender_id": sender_id,
        "conversation_id": conversation_id,
        "encoded_event": encoded_event,
    }
    if key_change:
        payload["conversation_key_change_event"] = key_change
    if conversation_key_version is not None:
        payload["conversation_key_version"] = conversation_key_version
    return {
        "data": {
            "event_uuid": "8511582263942905822",
            "filter": {"user_id": bot_id},
            "event_type": "chat.received",
            "tag": "chat-inbound",
            "payload": payload,
        }
    }
