"""X Chat as X keeps it: the public-key directory, the emulated users' devices (friends) and
the 1:1 conversations with their events (key changes and encrypted messages)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Literal

from catbot.emulator.xchat_events import MessageEvent, b64encode_unpadded, conversation_id
from catbot.emulator.xchat_identity import Friend, KeyDirectory, new_friend

EventKind = Literal["message", "key_change"]


@dataclass(frozen=True)
class ChatEvent:
    event: MessageEvent
    encoded: str  # base64, as every route and delivery hands it out
    kind: EventKind
    conversation_key_version: str
    signing_public_key: str
    # A message's encoded_message_create_event exactly as sent: a retry with the same
    # message id must carry the same bytes to be answered as the original.
    create_raw: bytes = b""


@dataclass
class Conversation:
    id: str  # "<min id>:<max id>"
    members: tuple[str, str]
    events: list[ChatEvent] = field(default_factory=list)
    key_version: str | None = None
    # Whose public key version the current conversation key was wrapped to.
    key_recipients: dict[str, str] = field(default_factory=dict)

    def other(self, user_id: str) -> str:
        return self.members[1] if self.members[0] == user_id else self.members[0]

    def latest_key_change(self) -> ChatEvent | None:
        return next((e for e in reversed(self.events) if e.kind == "key_change"), None)

    def key_changes(self) -> list[ChatEvent]:
        return [e for e in self.events if e.kind == "key_change"]

    def message(self, message_id: str) -> ChatEvent | None:
        return next(
            (e for e in self.events if e.kind == "message" and e.event.message_id == message_id),
            None,
        )

    def messages_newest_first(self) -> list[ChatEvent]:
        return [e for e in reversed(self.events) if e.kind == "message"]

    def change_key(self, stored: ChatEvent, recipients: dict[str, str]) -> None:
        """A key change takes effect: later messages must be encrypted under its key."""
        self.events.append(stored)
        self.key_version = stored.conversation_key_version
        self.key_recipients = recipients


@dataclass
class XChatState:
    directory: KeyDirectory = field(default_factory=KeyDirectory)
    friends: dict[str, Friend] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    # Keys `conversation_token`s: opaque to clients, checked when one is sent back.
    token_secret: bytes = field(default_factory=lambda: os.urandom(32))

    def friend(self, user_id: str) -> Friend:
        """The user's X Chat app, set up (keys made and registered) the first time."""
        friend = self.friends.get(user_id)
        if friend is None:
            friend = new_friend(user_id, self.directory)
            self.friends[user_id] = friend
        return friend

    def conversation(self, a: str, b: str) -> Conversation:
        cid = conversation_id(a, b)
        conv = self.conversations.get(cid)
        if conv is None:
            low, high = cid.split(":")
            conv = Conversation(cid, (low, high))
            self.conversations[cid] = conv
        return conv

    def conversation_token(self, conversation: str, user_id: str) -> str:
        """X's `conversation_token` is an opaque JWT (event-payloads: "eyJhbGciOiJIUzI1NiJ9.
        eyJyZXF1ZXN0aW5nVXN…"); this one has the same HS256 form, keyed by an emulator
        secret."""
        header = _b64url(b'{"alg":"HS256"}')
        claims = json.dumps(
            {"requestingUserId": user_id, "conversationId": conversation}, separators=(",", ":")
        )
        body = _b64url(claims.encode())
        mac = hmac.new(self.token_secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64url(mac)}"

    def reset(self) -> None:
        """`/_emulator/reset` refills budgets: the key-write allowance is one. Keys and
        conversation keys stay, as registrations and webhooks do."""
        self.directory.forget_writes()


def _b64url(data: bytes) -> str:
    return b64encode_unpadded(data).replace("+", "-").replace("/", "_")
