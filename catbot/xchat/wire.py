"""X's JSON shapes for X Chat, parsed and checked. Pure: no SDK, no I/O.

Sources (docs.x.com, repository xdevplatform/docs):
- `chat.received` delivery: x-api/activity/event-payloads ("Chat events (XChat)") and
  xchat/real-time-events ("Payload shape (live)").
- public-key records: x-api/users/get-user-public-keys, x-api/users/get-public-keys-for-
  multiple-users and the OpenAPI `PublicKey` schema (openapi.json v2.168).
- registration answer: x-api/chat/add-public-key.
- send answer: x-api/chat/send-chat-message (`SendChatMessageResponse`).
- history: x-api/chat/get-chat-conversation-events and xchat/getting-started step 6.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from catbot.xchat.errors import MalformedPayloadError

USER_ID = re.compile(r"^[0-9]{1,19}$")
# 1:1 ids come as "A:B" in deliveries and signed events, "A-B" in listings and URL paths
# (xchat/xchat-xdk, "Encrypt and send helpers"); group ids are "g" + digits.
_ONE_TO_ONE = re.compile(r"^([0-9]{1,19})[:-]([0-9]{1,19})$")
_GROUP = re.compile(r"^g[0-9]{1,19}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
# A delivery is capped at 1 MiB by the webhook; one encoded event well below that.
_MAX_ENCODED_CHARS = 512 * 1024


@dataclass(frozen=True)
class ChatReceived:
    """One `chat.received` delivery: ciphertext and routing, nothing decrypted.

    `signer_key_hint` is the `message_event_signature.signing_public_key` X puts beside
    the event. It is unsigned, so it is only ever a hint to refresh a stale key cache,
    never a key to verify with (xchat/xchat-xdk, "Decrypt": keys enter only via the
    public-key routes).
    """

    sender_id: str
    conversation_id: str
    encoded_event: str = field(repr=False)
    key_change_event: str | None = field(default=None, repr=False)
    event_id: str | None = None
    event_uuid: str | None = None
    conversation_key_version: str | None = None
    conversation_token: str | None = field(default=None, repr=False)
    created_at_msec: int | None = None
    signer_key_hint: str | None = field(default=None, repr=False)

    @property
    def dedupe_id(self) -> str | None:
        """The delivery's id for deduplication: the payload `id`, else the envelope's
        `event_uuid` (xchat/real-time-events, "Practices")."""
        return self.event_id or self.event_uuid


def parse_chat_received(body: Mapping[str, Any]) -> ChatReceived:
    """A `chat.received` delivery: the X Activity API envelope `{"data": {"event_type",
    "event_uuid", "payload": {...}}}` or the bare `payload` object."""
    envelope_uuid: str | None = None
    payload: Any = body
    data = body.get("data")
    if isinstance(data, Mapping) and "payload" in data:
        event_type = data.get("event_type")
        if event_type is not None and event_type != "chat.received":
            raise MalformedPayloadError(f"event_type is not chat.received: {_short(event_type)}")
        envelope_uuid = _optional_str(data, "event_uuid")
        payload = data.get("payload")
    if not isinstance(payload, Mapping):
        raise MalformedPayloadError("payload is not an object")

    sender_id = _required_str(payload, "sender_id")
    if not USER_ID.match(sender_id):
        raise MalformedPayloadError("sender_id is not a user id")
    conversation_id = _required_str(payload, "conversation_id")
    if not is_conversation_id(conversation_id):
        raise MalformedPayloadError("conversation_id has no known form")
    encoded_event = _encoded(payload, "encoded_event")
    if encoded_event is None:
        raise MalformedPayloadError("encoded_event is missing")
    signature = payload.get("message_event_signature")
    hint = None
    if isinstance(signature, Mapping):
        hint = _optional_str(signature, "signing_public_key")
    return ChatReceived(
        sender_id=sender_id,
        conversation_id=conversation_id,
        encoded_event=encoded_event,
        key_change_event=_encoded(payload, "conversation_key_change_event"),
        event_id=_optional_str(payload, "id"),
        event_uuid=envelope_uuid,
        conversation_key_version=_optional_str(payload, "conversation_key_version"),
        conversation_token=_optional_str(payload, "conversation_token"),
        created_at_msec=_optional_int(payload, "created_at_msec"),
        signer_key_hint=hint,
    )


def is_conversation_id(value: str) -> bool:
    return bool(_ONE_TO_ONE.match(value) or _GROUP.match(value))


def conversation_participants(conversation_id: str) -> frozenset[str]:
    """The two user ids of a 1:1 conversation, in whichever form or order it is written.

    X's examples write the same 1:1 conversation sorted ("A-B" on xchat/real-time-events)
    and sender first ("B:A" on x-api/activity/event-payloads), so ids are compared as sets.
    A group id is its own single member.
    """
    match = _ONE_TO_ONE.match(conversation_id)
    if match:
        return frozenset(match.groups())
    if _GROUP.match(conversation_id):
        return frozenset({conversation_id})
    raise MalformedPayloadError("conversation_id has no known form")


def canonical_conversation_id(conversation_id: str) -> str:
    """One key per conversation for the keyring: "min:max" by numeric value for 1:1 (the
    form chatxdk derives, e.g. "42:1000"), a group id unchanged."""
    match = _ONE_TO_ONE.match(conversation_id)
    if not match:
        if _GROUP.match(conversation_id):
            return conversation_id
        raise MalformedPayloadError("conversation_id has no known form")
    low, high = sorted(match.groups(), key=int)
    return f"{low}:{high}"


def send_path_id(conversation_id: str, bot_user_id: str) -> str:
    """The `{id}` of `POST /2/chat/conversations/{id}/messages`: the recipient's user id for
    a 1:1 (x-api/chat/send-chat-message: the path takes a user id, "A-B" or a group id,
    never the colon form), the group id for a group."""
    if _GROUP.match(conversation_id):
        return conversation_id
    others = conversation_participants(conversation_id) - {bot_user_id}
    if len(others) != 1:
        raise MalformedPayloadError("the bot is not one of this conversation's two users")
    return next(iter(others))


@dataclass(frozen=True)
class PublicKeyRecord:
    """One registered X Chat key of a user: the identity key (`public_key`, SPKI base64),
    the signing key and the signature binding them, under a `version`."""

    user_id: str
    version: str
    public_key: str
    signing_public_key: str
    identity_public_key_signature: str

    def signing_entry(self) -> dict[str, str]:
        """chatxdk's `SigningKeyEntry` (xchat/xchat-xdk, "Decrypt": `signing_public_key` →
        `public_key`, `public_key` → `identity_public_key`)."""
        return {
            "user_id": self.user_id,
            "public_key_version": self.version,
            "public_key": self.signing_public_key,
            "identity_public_key": self.public_key,
            "identity_public_key_signature": self.identity_public_key_signature,
        }


def parse_public_keys(body: Any, user_id: str) -> list[PublicKeyRecord]:
    """`GET /2/users/{id}/public_keys`: `data` is a list of records (a single object is
    accepted too). Records lacking a key part are skipped: they cannot verify anything."""
    return [record for item in _data_items(body) if (record := _record(item, user_id))]


def parse_registered_version(body: Any) -> str | None:
    """`POST /2/users/{id}/public_keys` answer: the new key's version. The reference page
    shows `data.version`, x-api.md and X's sample bot read `data.public_key_version`."""
    data = body.get("data") if isinstance(body, Mapping) else None
    if isinstance(data, list):
        data = data[0] if data else None
    if not isinstance(data, Mapping):
        return None
    value = data.get("public_key_version", data.get("version"))
    return None if value is None else str(value)


def parse_sent_event(body: Any) -> str | None:
    """`POST /2/chat/conversations/{id}/messages` answer: `data.encoded_message_event`."""
    data = body.get("data") if isinstance(body, Mapping) else None
    value = data.get("encoded_message_event") if isinstance(data, Mapping) else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ConversationEvents:
    """One page of `GET /2/chat/conversations/{id}/events`: the encoded events and the key
    changes X lists apart in `meta.conversation_key_events` (xchat/getting-started step 6)."""

    events: tuple[str, ...]
    key_change_events: tuple[str, ...]
    next_token: str | None


def parse_conversation_events(body: Any) -> ConversationEvents:
    """X documents the item field (`encoded_event`, per X's sample bot) but not every
    detail; items may also be bare base64 strings, and `meta` may name the next page
    `next_token` (X's v2 convention) or `pagination_token`."""
    events = tuple(_encoded_items(body.get("data") if isinstance(body, Mapping) else None))
    meta = body.get("meta") if isinstance(body, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    keys = tuple(_encoded_items(meta.get("conversation_key_events")))
    token = meta.get("next_token", meta.get("pagination_token"))
    return ConversationEvents(events, keys, token if isinstance(token, str) and token else None)


def _encoded_items(value: Any) -> list[str]:
    items = value if isinstance(value, list) else []
    out: list[str] = []
    for item in items:
        raw = item.get("encoded_event") if isinstance(item, Mapping) else item
        if isinstance(raw, str) and _is_base64(raw):
            out.append(raw)
    return out


def _data_items(body: Any) -> list[Mapping[str, Any]]:
    data = body.get("data") if isinstance(body, Mapping) else None
    if isinstance(data, Mapping):
        data = [data]
    return [item for item in data or [] if isinstance(item, Mapping)]


def _record(item: Mapping[str, Any], user_id: str) -> PublicKeyRecord | None:
    # Reference pages of different dates name the version `version` or `public_key_version`.
    version = item.get("public_key_version", item.get("version"))
    parts = [item.get(name) for name in
             ("public_key", "signing_public_key", "identity_public_key_signature")]
    if version is None or not all(isinstance(p, str) and p for p in parts):
        return None
    public_key, signing_public_key, binding = (str(p) for p in parts)
    return PublicKeyRecord(user_id, str(version), public_key, signing_public_key, binding)


def _is_base64(value: str) -> bool:
    return 0 < len(value) <= _MAX_ENCODED_CHARS and bool(_BASE64.match(value))


def _encoded(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _is_base64(value):
        raise MalformedPayloadError(f"{name} is not base64 of a sane size")
    return value


def _required_str(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise MalformedPayloadError(f"{name} is missing")
    return value


def _optional_str(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _optional_int(payload: Mapping[str, Any], name: str) -> int | None:
    # `created_at_msec` is a string on x-api/activity/event-payloads.
    value = payload.get(name)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _short(value: Any) -> str:
    return repr(value)[:40]


def same_key(a: str, b: str) -> bool:
    """Whether two base64 texts hold the same key bytes: X and the SDK may differ in padding
    or alphabet for the same key."""
    try:
        return _b64any(a) == _b64any(b)
    except (binascii.Error, ValueError):
        return False


def _b64any(text: str) -> bytes:
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
