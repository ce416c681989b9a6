"""The X Chat events X's server builds around what clients send, as Thrift binary structs.

X documents the JSON that carries these blobs but not their layout:
- `chat.received` / `chat.sent` deliveries carry `encoded_event` and
  `conversation_key_change_event` (docs.x.com x-api/activity/event-payloads, "Chat events");
- `POST /2/chat/conversations/{id}/messages` takes the client's `encoded_message_create_event`
  and `encoded_message_event_signature` and answers `encoded_message_event`
  (docs.x.com x-api/chat/send-chat-message, OpenAPI `SendChatMessageRequest`);
- `POST /2/chat/conversations/{id}/keys` takes `action_signatures[].encoded_message_event_detail`
  (docs.x.com x-api/chat/add-conversation-keys, OpenAPI `AddConversationKeysActionSignatures`).

The layout below is x-api.md's ("X Chat", read from the SDK's test vectors and confirmed by the
SDK accepting rebuilt events), the same field numbers as X's SDK source (chat-xdk
crates/core/src/thrift/event.rs): `MessageEvent` {1 sequence_id, 2 message_id, 3 sender_id,
4 conversation_id, 6 created_at_msec, 7 detail, 9 signature}, the `detail` union {1 the
client's MessageCreateEvent, 3 a ConversationKeyChangeEvent}, `MessageEventSignature`
{1 signature, 2 public_key_version, 3 signature_version}, and the client's `MessageCreateEvent`
{100 ciphertext, 101 conversation_key_version, 102 should_notify}.

What a message signature covers is not on docs.x.com either (xchat/cryptography-primer only
says X "rejects events it cannot verify"); X's SDK signs, with ECDSA P-256,
`MessageCreateEvent,<message_id>,<sender_id>,<conversation_id min:max>,<key version>,
<base64 of the ciphertext, no padding>` (chat-xdk crates/core/src/pipeline.rs,
`encrypt_and_sign`), which `message_signature_payload` rebuilds.

Thrift's binary protocol is Apache Thrift's doc/specs/thrift-binary-protocol.md: a field is a
type byte, a big-endian i16 id and its value; a struct ends with a 0 byte. Small enough to
write here rather than pull in the `thrift` package for five string fields.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# Thrift type ids (thrift-binary-protocol.md, "Field types").
T_STOP: Final = 0
T_BOOL: Final = 2
T_BYTE: Final = 3
T_DOUBLE: Final = 4
T_I16: Final = 6
T_I32: Final = 8
T_I64: Final = 10
T_STRING: Final = 11
T_STRUCT: Final = 12
T_MAP: Final = 13
T_SET: Final = 14
T_LIST: Final = 15

_FIXED_WIDTH: Final = {T_BOOL: 1, T_BYTE: 1, T_DOUBLE: 8, T_I16: 2, T_I32: 4, T_I64: 8}
# Deeper nesting than any X Chat struct has: a bound so hostile bytes cannot recurse forever.
_MAX_DEPTH: Final = 32

# The signature version X's SDK writes and the only payload layout documented anywhere.
SIGNATURE_VERSION: Final = "7"

_USER_ID = re.compile(r"^[0-9]{1,19}$")

ThriftValue = bytes | bool | int | float | dict[int, "ThriftValue"] | list["ThriftValue"]


class ThriftError(ValueError):
    """Bytes that are not the Thrift struct they claim to be."""


# --- writing ---------------------------------------------------------------------------


def string_field(field_id: int, value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack(">bhi", T_STRING, field_id, len(raw)) + raw


def struct_field(field_id: int, body: bytes) -> bytes:
    """A struct-typed field; `body` is a whole struct, its closing stop byte included."""
    return struct.pack(">bh", T_STRUCT, field_id) + body


def end_struct(*fields: bytes) -> bytes:
    return b"".join(fields) + bytes([T_STOP])


# --- reading ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise ThriftError("truncated Thrift data")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        values: tuple[int, ...] = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return values

    def value(self, ttype: int, depth: int) -> ThriftValue:
        if depth > _MAX_DEPTH:
            raise ThriftError("Thrift data nested too deeply")
        if ttype == T_STRING:
            (length,) = self.unpack(">i")
            return self.take(length)
        if ttype == T_STRUCT:
            return self.fields(depth + 1)
        if ttype == T_BOOL:
            return self.take(1) != b"\x00"
        if ttype == T_DOUBLE:
            (number,) = struct.unpack(">d", self.take(8))
            return float(number)
        if ttype in _FIXED_WIDTH:
            width = _FIXED_WIDTH[ttype]
            return int.from_bytes(self.take(width), "big", signed=True)
        if ttype in (T_LIST, T_SET):
            element, size = self.unpack(">bi")
            return [self.value(element, depth + 1) for _ in range(self._bounded(size))]
        if ttype == T_MAP:
            key, val, size = self.unpack(">bbi")
            items: list[ThriftValue] = []
            for _ in range(self._bounded(size)):
                items.append([self.value(key, depth + 1), self.value(val, depth + 1)])
            return items
        raise ThriftError(f"unknown Thrift type {ttype}")

    def _bounded(self, size: int) -> int:
        # Every element takes at least one byte: a larger count is a lie, not a big list.
        if size < 0 or size > len(self.data) - self.pos:
            raise ThriftError("Thrift container size exceeds the data")
        return size

    def fields(self, depth: int = 0) -> dict[int, ThriftValue]:
        found: dict[int, ThriftValue] = {}
        while True:
            (ttype,) = self.unpack(">b")
            if ttype == T_STOP:
                return found
            (field_id,) = self.unpack(">h")
            found[field_id] = self.value(ttype, depth)


def read_struct(data: bytes) -> dict[int, ThriftValue]:
    """One whole struct, nothing after it: field id -> value (strings stay bytes)."""
    reader = _Reader(data)
    fields = reader.fields()
    if reader.pos != len(data):
        raise ThriftError("bytes after the end of the Thrift struct")
    return fields


def _text(fields: Mapping[int, ThriftValue], field_id: int, name: str) -> str:
    value = fields.get(field_id)
    if not isinstance(value, bytes):
        raise ThriftError(f"{name} (field {field_id}) is missing or not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ThriftError(f"{name} (field {field_id}) is not UTF-8") from None


# --- base64 as X's JSON carries it -----------------------------------------------------


def b64decode(text: str) -> bytes:
    """X's base64 fields, with or without padding, standard or URL-safe alphabet (X's
    OpenAPI pattern for these fields is `^[A-Za-z0-9+/=_-]+$`)."""
    cleaned = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ThriftError("not base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64encode_unpadded(data: bytes) -> str:
    return b64encode(data).rstrip("=")


# --- the structs -----------------------------------------------------------------------


@dataclass(frozen=True)
class EventSignature:
    """`MessageEventSignature`; also the JSON `message_event_signature` of deliveries."""

    signature: str  # base64 of the 64-byte ECDSA P-256 signature, unpadded
    public_key_version: str
    signature_version: str

    def encode(self) -> bytes:
        return end_struct(
            string_field(1, self.signature),
            string_field(2, self.public_key_version),
            string_field(3, self.signature_version),
        )

    @classmethod
    def decode(cls, data: bytes) -> EventSignature:
        fields = read_struct(data)
        return cls(
            _text(fields, 1, "signature"),
            _text(fields, 2, "public_key_version"),
            _text(fields, 3, "signature_version"),
        )


@dataclass(frozen=True)
class MessageCreate:
    """The client's `MessageCreateEvent` (`encoded_message_create_event`), as X reads it:
    ciphertext and the conversation key version; the rest stays opaque."""

    raw: bytes
    ciphertext: bytes
    conversation_key_version: str

    @classmethod
    def decode(cls, data: bytes) -> MessageCreate:
        fields = read_struct(data)
        ciphertext = fields.get(100)
        if not isinstance(ciphertext, bytes) or not ciphertext:
            raise ThriftError("the encrypted contents (field 100) are missing")
        return cls(data, ciphertext, _text(fields, 101, "conversation_key_version"))


@dataclass(frozen=True)
class KeyChange:
    """A `ConversationKeyChangeEvent` detail (`encoded_message_event_detail`, union field 3):
    {1 conversation_key_version, 2 [{1 user_id, 2 encrypted key, 3 public_key_version}]}."""

    union: bytes  # the whole detail union, as it goes into field 7 of the MessageEvent
    conversation_key_version: str
    participants: tuple[tuple[str, str, str], ...]  # (user_id, encrypted key, key version)

    @classmethod
    def decode(cls, data: bytes) -> KeyChange:
        union = read_struct(data)
        change = union.get(3)
        if set(union) != {3} or not isinstance(change, dict):
            raise ThriftError("the detail is not a conversation key change (union field 3)")
        entries = change.get(2)
        if not isinstance(entries, list):
            raise ThriftError("the key change lists no participant keys (field 2)")
        participants = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise ThriftError("a participant key is not a struct")
            participants.append(
                (
                    _text(entry, 1, "user_id"),
                    _text(entry, 2, "encrypted_conversation_key"),
                    _text(entry, 3, "public_key_version"),
                )
            )
        return cls(data, _text(change, 1, "conversation_key_version"), tuple(participants))


def message_detail(create: MessageCreate) -> bytes:
    """The detail union holding a message: the client's own bytes, untouched, in field 1 (the
    signature covers the ciphertext inside them, so X passes them on as they came)."""
    return end_struct(struct_field(1, create.raw))


@dataclass(frozen=True)
class MessageEvent:
    """The `MessageEvent` X hands out: `encoded_event`, `conversation_key_change_event`,
    `encoded_message_event` and `meta.conversation_key_events` are its base64."""

    sequence_id: str  # assigned by X; not signed
    message_id: str  # the client's; signed
    sender_id: str
    conversation_id: str  # "<min id>:<max id>", the form signatures cover
    created_at_msec: str  # not signed
    detail: bytes  # the detail union, stop byte included
    signature: EventSignature

    def encode(self) -> bytes:
        return end_struct(
            string_field(1, self.sequence_id),
            string_field(2, self.message_id),
            string_field(3, self.sender_id),
            string_field(4, self.conversation_id),
            string_field(6, self.created_at_msec),
            struct_field(7, self.detail),
            struct_field(9, self.signature.encode()),
        )

    def to_base64(self) -> str:
        return b64encode(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> MessageEvent:
        fields = read_struct(data)
        detail = fields.get(7)
        signature = fields.get(9)
        if not isinstance(detail, dict) or not isinstance(signature, dict):
            raise ThriftError("a MessageEvent needs a detail (7) and a signature (9)")
        # Re-encoding a parsed union would need every nested type; slice the bytes instead.
        return cls(
            _text(fields, 1, "sequence_id"),
            _text(fields, 2, "message_id"),
            _text(fields, 3, "sender_id"),
            _text(fields, 4, "conversation_id"),
            _text(fields, 6, "created_at_msec"),
            _detail_bytes(data),
            EventSignature(
                _text(signature, 1, "signature"),
                _text(signature, 2, "public_key_version"),
                _text(signature, 3, "signature_version"),
            ),
        )


def _detail_bytes(event: bytes) -> bytes:
    reader = _Reader(event)
    while True:
        (ttype,) = reader.unpack(">b")
        if ttype == T_STOP:
            raise ThriftError("no detail field")
        (field_id,) = reader.unpack(">h")
        start = reader.pos
        reader.value(ttype, 0)
        if field_id == 7:
            return event[start : reader.pos]


# --- conversations and signatures ------------------------------------------------------


def conversation_id(a: str, b: str) -> str:
    """A 1:1 conversation's canonical id: both user ids, numerically ordered, colon-joined
    (x-api.md "X Chat"; chat-xdk pipeline.rs `join_sorted_pair`). X's event-payloads example
    shows the larger id first; its ids are stand-ins and the SDK signs this form."""
    low, high = sorted((a, b), key=int)
    return f"{low}:{high}"


def conversation_from_path(path_id: str, caller_id: str) -> str | None:
    """The conversation a `/2/chat/conversations/{id}/...` path names for the caller, or None.

    The path takes the recipient's bare user id or `A-B` in either order (OpenAPI pattern
    `^([0-9]{1,19}|[0-9]{1,19}-[0-9]{1,19}|g[0-9]{1,19})$`; "the server constructs the
    canonical conversation ID from the authenticated user and recipient"). Groups (`g...`)
    are not emulated, and a pair must include the caller.
    """
    if _USER_ID.match(path_id):
        return None if path_id == caller_id else conversation_id(path_id, caller_id)
    first, sep, second = path_id.partition("-")
    pair = (first, second)
    if sep and all(_USER_ID.match(i) for i in pair) and first != second and caller_id in pair:
        return conversation_id(first, second)
    return None


def message_signature_payload(
    message_id: str,
    sender_id: str,
    conversation: str,
    conversation_key_version: str,
    ciphertext: bytes,
) -> bytes:
    """The bytes a version-7 message signature covers (chat-xdk pipeline.rs)."""
    parts = (
        "MessageCreateEvent",
        message_id,
        sender_id,
        conversation,
        conversation_key_version,
        b64encode_unpadded(ciphertext),
    )
    return ",".join(parts).encode("utf-8")
