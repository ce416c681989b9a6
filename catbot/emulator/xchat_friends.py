"""The users' side of X Chat, and what X delivers to the bot.

Every emulated user (a friend) has an X Chat app: it makes the conversation key before its
first message, encrypts what `POST /_emulator/xchat` makes it write, and decrypts and
verifies the bot's key changes and replies as X's client would, so `/_emulator/messages`
shows the bot's replies as the friend reads them. X then delivers `chat.received` /
`chat.sent` to the matching X Activity API subscriptions. X's own routes are in
`catbot.emulator.xchat_api`; the control routes here are described in docs/emulator.md.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from catbot.emulator.control import PREFIX, ControlError, IncomingDm, parse_incoming
from catbot.emulator.delivery import DeliveryOutcome
from catbot.emulator.dispatch import deliver_envelopes
from catbot.emulator.payloads import Envelope, activity_data_envelope, audience_of
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state import EmulatorState
from catbot.emulator.state.common import now_ms
from catbot.emulator.state.xchat import ChatEvent, Conversation, EventKind, XChatState
from catbot.emulator.xchat_events import (
    EventSignature,
    KeyChange,
    MessageCreate,
    MessageEvent,
    b64decode,
    message_detail,
)
from catbot.emulator.xchat_identity import Friend, PublicKeyRecord, signing_entries

log = logging.getLogger("catbot.emulator.xchat")


# --- events in a conversation ----------------------------------------------------------


def chat_event(
    state: EmulatorState,
    conv: Conversation,
    *,
    kind: EventKind,
    sender: PublicKeyRecord,
    message_id: str,
    key_version: str,
    detail: bytes,
    signature: EventSignature,
    created_at_msec: str | None = None,
    create_raw: bytes = b"",
) -> ChatEvent:
    """An event as X stores it: numbered in the conversation, signed by `sender`'s key."""
    event = MessageEvent(
        sequence_id=state.ids.next(),
        message_id=message_id,
        sender_id=sender.user_id,
        conversation_id=conv.id,
        created_at_msec=created_at_msec or str(now_ms()),
        detail=detail,
        signature=signature,
    )
    return ChatEvent(
        event, event.to_base64(), kind, key_version, sender.signing_public_key, create_raw
    )


def add_key_change(
    state: EmulatorState,
    conv: Conversation,
    *,
    sender: PublicKeyRecord,
    message_id: str,
    change: KeyChange,
    signature: EventSignature,
) -> ChatEvent:
    stored = chat_event(
        state,
        conv,
        kind="key_change",
        sender=sender,
        message_id=message_id,
        key_version=change.conversation_key_version,
        detail=change.union,
        signature=signature,
    )
    conv.change_key(stored, {user: version for user, _key, version in change.participants})
    return stored


def signature_json(stored: ChatEvent) -> dict[str, str]:
    sig = stored.event.signature
    return {
        "public_key_version": sig.public_key_version,
        "signature": sig.signature,
        "signature_version": sig.signature_version,
        "signing_public_key": stored.signing_public_key,
    }


# --- the friend's app ------------------------------------------------------------------


def _friend_sets_key(
    state: EmulatorState, conv: Conversation, friend: Friend, bot: PublicKeyRecord
) -> ChatEvent:
    """The friend's app makes a conversation key for it and the bot, as X's client does
    before its first message to someone (x-api.md: prepare_conversation_key_change)."""
    prepared = friend.chat.prepare_conversation_key_change(
        [
            {
                "user_id": friend.user_id,
                "public_key": friend.record.public_key,
                "key_version": friend.record.version,
            },
            {"user_id": bot.user_id, "public_key": bot.public_key, "key_version": bot.version},
        ],
        conversation_id=conv.id,
    )
    action = prepared["action_signatures"][0]
    change = KeyChange.decode(b64decode(str(action["encoded_message_event_detail"])))
    friend.remember_key(
        conv.id, str(prepared["conversation_key_version"]), bytes(prepared["conversation_key"])
    )
    return add_key_change(
        state,
        conv,
        sender=friend.record,
        message_id=str(action["message_id"]),
        change=change,
        signature=EventSignature(
            str(action["signature"]),
            str(action["public_key_version"]),
            str(action["signature_version"]),
        ),
    )


def _needs_new_key(conv: Conversation, friend: Friend, bot: PublicKeyRecord) -> bool:
    if conv.key_version is None or friend.key(conv.id, conv.key_version) is None:
        return True
    wrapped_to = conv.key_recipients
    return (
        wrapped_to.get(bot.user_id) != bot.version
        or wrapped_to.get(friend.user_id) != friend.record.version
    )


def friend_learns_key(
    xs: XChatState, conv: Conversation, stored: ChatEvent, sender: PublicKeyRecord
) -> None:
    """The friend's app verifies the bot's key change and keeps the key, or cannot (then the
    bot's later messages show as unreadable, as they would on the friend's phone)."""
    friend = xs.friend(conv.other(sender.user_id))
    try:
        result = friend.chat.decrypt_events([stored.encoded], signing_entries([sender]))
        verified = any(m["event"].get("verified") for m in result.get("messages", []))
        keys = friend.chat.extract_conversation_keys([stored.encoded]) if verified else {}
    except ValueError as exc:
        log.warning("X Chat friend %s cannot use the key change: %s", friend.user_id, exc)
        return
    for version, key in dict(keys.get("keys", {})).items():
        friend.remember_key(conv.id, str(version), bytes(key))


def friend_reads(
    friend: Friend, conv: Conversation, stored: ChatEvent, sender: PublicKeyRecord
) -> str:
    """The text as the friend's app shows it, decrypted and verified like any X Chat client."""
    version = stored.conversation_key_version
    key = friend.key(conv.id, version)
    if key is None:
        return f"(cannot decrypt: no conversation key {version})"
    try:
        event = friend.chat.decrypt_event(stored.encoded, {version: key}, signing_entries([sender]))
    except ValueError as exc:
        log.warning(
            "X Chat friend %s cannot read %s: %s", friend.user_id, stored.event.message_id, exc
        )
        return "(cannot decrypt)"
    content = event.get("content") or {}
    if event.get("type") != "Message" or not isinstance(content.get("text"), str):
        return f"({event.get('type', 'unknown')} event)"
    text: str = content["text"]
    return text


# --- deliveries ------------------------------------------------------------------------


def chat_payload(
    xs: XChatState, conv: Conversation, stored: ChatEvent, for_user: str
) -> dict[str, Any]:
    """`payload` of `chat.received` / `chat.sent`, field for field as X's example
    (x-api/activity/event-payloads, "Chat events"). Its `id` is a UUID there; the client's
    message id is one, so it stands in (X does not say what its `id` is). The latest key
    change rides along every time, as in both documented examples."""
    payload: dict[str, Any] = {
        "conversation_token": xs.conversation_token(conv.id, for_user),
        "id": stored.event.message_id,
        "created_at_msec": stored.event.created_at_msec,
        "sender_id": stored.event.sender_id,
        "conversation_id": conv.id,
        "conversation_key_version": stored.conversation_key_version,
        "encoded_event": stored.encoded,
    }
    key_change = conv.latest_key_change()
    if key_change is not None:
        payload["conversation_key_change_event"] = key_change.encoded
    payload["message_event_signature"] = signature_json(stored)
    return payload


async def deliver_chat(
    runtime: Runtime, event_type: str, user_id: str, conv: Conversation, stored: ChatEvent
) -> list[DeliveryOutcome]:
    """One signed X Activity API delivery per matching subscription with a webhook, through
    the same pipeline (spreading, faults, redelivery) as every other delivery."""
    state = runtime.state
    event_id = stored.event.message_id
    # The X Activity API envelope every event type shares (event_uuid as X's chat examples
    # show it too: a signed 64-bit decimal, "8511582263942905822").
    envelopes = [
        Envelope(
            sub.webhook_id,
            activity_data_envelope(sub, chat_payload(state.xchat, conv, stored, user_id)),
            audience_of(sub, event_id),
            (event_id,),
        )
        for sub in state.subscriptions.delivering(event_type, user_id)
        if sub.webhook_id is not None
    ]
    return await deliver_envelopes(runtime, envelopes, [event_id])


# --- control: a user writes to the bot -------------------------------------------------


def no_key_reason(bot_user_id: str) -> str:
    """Why nobody can write to the bot on X Chat yet (the 409 of `POST /_emulator/xchat`)."""
    return (
        f"the bot ({bot_user_id}) has no X Chat public key yet: register one with "
        f"POST /2/users/{bot_user_id}/public_keys (`catbot xchat register`)"
    )


def xchat_status(runtime: Runtime) -> dict[str, Any]:
    """Whether friends can write to the bot on X Chat, for the chat page: the bot's current
    key version (null: none registered, and `reason` says what to do) and whether any webhook
    is subscribed to the bot's `chat.received` (else nobody hears the messages)."""
    state = runtime.state
    bot = state.bot_user_id
    record = state.xchat.directory.latest(bot)
    return {
        "bot_key_version": record.version if record is not None else None,
        "subscribed": bool(state.subscriptions.delivering("chat.received", bot)),
        "reason": None if record is not None else no_key_reason(bot),
    }


async def get_xchat(request: web.Request) -> web.Response:
    return web.json_response(xchat_status(request.app[RUNTIME]))


async def _incoming(request: web.Request, runtime: Runtime) -> IncomingDm:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ControlError(f"body is not valid JSON: {exc}") from None
    return parse_incoming(data, runtime.state.bot_user_id, runtime.config.max_text_length)


def _friend_writes(
    state: EmulatorState, incoming: IncomingDm, bot: PublicKeyRecord
) -> tuple[Conversation, ChatEvent]:
    """The friend's app encrypts the text to the bot (making the conversation key first
    when needed) and X stores the message."""
    xs = state.xchat
    friend = xs.friend(incoming.sender_id)
    state.users.ensure(incoming.sender_id, incoming.sender_name)
    conv = xs.conversation(incoming.sender_id, bot.user_id)
    if _needs_new_key(conv, friend, bot):
        _friend_sets_key(state, conv, friend, bot)
    assert conv.key_version is not None
    key = friend.key(conv.id, conv.key_version)
    assert key is not None
    sent = friend.chat.encrypt_message(
        conv.id, incoming.text, conversation_key=key, conversation_key_version=conv.key_version
    )
    create = MessageCreate.decode(b64decode(sent.encrypted_content))
    stored = chat_event(
        state,
        conv,
        kind="message",
        sender=friend.record,
        message_id=sent.message_id,
        key_version=conv.key_version,
        detail=message_detail(create),
        signature=EventSignature.decode(b64decode(sent.encoded_event_signature)),
        created_at_msec=incoming.created_timestamp,
        create_raw=create.raw,
    )
    conv.events.append(stored)
    return conv, stored


async def post_xchat(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    state = runtime.state
    incoming = await _incoming(request, runtime)
    bot = state.xchat.directory.latest(state.bot_user_id)
    if bot is None:
        raise ControlError(no_key_reason(state.bot_user_id), status=409)
    conv, stored = _friend_writes(state, incoming, bot)
    state.stats.events_received += 1
    state.stats.xchat_received += 1
    message = state.messages.record(
        sender_id=stored.event.sender_id,
        recipient_id=bot.user_id,
        text=incoming.text,
        direction="in",
        created_timestamp=stored.event.created_at_msec,
        channel="xchat",
        message_id=stored.event.message_id,
    )
    outcomes = await deliver_chat(runtime, "chat.received", bot.user_id, conv, stored)
    return web.json_response(
        {
            "event_id": message.id,
            "conversation_id": conv.id,
            "sequence_id": stored.event.sequence_id,
            "deliveries": [o.to_json() for o in outcomes],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/xchat", post_xchat)
    app.router.add_get(f"{PREFIX}/xchat", get_xchat)
