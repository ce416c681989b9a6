"""The outbox's X Chat side: read a stored `chat.received` job, keep what it teaches durable,
and carry the encrypted reply from one attempt to the next.

Reading follows xchat/real-time-events ("Decrypt with the Chat XDK"): the sender's signing
keys come from `GET /2/users/{id}/public_keys` through a cache (x-api/users/get-user-public-
keys); the delivery's key change is applied before its message (`XChatCrypto.decrypt`). Two
misses are worth one more try each, then the failure is final:
- `unknown_sender_keys`: the sender registered a key the cache has not seen; ask X again.
- `no_conversation_key`: another replica may have learned the key (the store has it), else the
  key change never reached the bot and X's history lists it (`GET /2/chat/conversations/{id}/
  events`, `meta.conversation_key_events`: xchat/getting-started, step 6).

The plaintext exists only in the `DecryptedMessage` returned to the outbox, in memory; the
store gets sealed conversation keys and, once made, the encrypted reply (`PreparedReply`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catbot.brain import Action
from catbot.logs import get_logger
from catbot.models import InboundDM, UserState
from catbot.observability import Metrics
from catbot.store import Store
from catbot.x.dm import TransientSendError
from catbot.xchat.client import XChatClient
from catbot.xchat.crypto import DecryptedMessage, SendPayload, XChatCrypto
from catbot.xchat.errors import (
    ConversationKeyError,
    MalformedPayloadError,
    VerificationError,
)
from catbot.xchat.keycache import SigningKeyCache
from catbot.xchat.wire import (
    ChatReceived,
    PublicKeyRecord,
    canonical_conversation_id,
    parse_chat_received,
    send_path_id,
)

log = get_logger("catbot.xchat")


class SenderKeysNotRefreshed(TransientSendError):
    """The sender's keys lack the one that signed, but were fetched too recently to be asked
    for again: a friend who just registered a new key is answered on a later attempt."""


@dataclass(frozen=True)
class PreparedReply:
    """An encrypted reply and the user state its decision leaves, kept with the job before
    the first send: X's SDK mints the `message_id` inside the signed event, and a retry must
    resend that same message (xchat/troubleshooting: "On retries, reuse the same encrypted
    payload so the id is never minted twice"). Ciphertext and counters only."""

    payload: SendPayload
    state: UserState
    action: Action

    def to_json(self) -> dict[str, Any]:
        state = self.state
        return {
            "payload": self.payload.to_json(),
            "action": self.action.value,
            "state": {
                "user_id": state.user_id,
                "opted_out": state.opted_out,
                "last_fact_at": state.last_fact_at,
                "day": state.day,
                "replies_today": state.replies_today,
                "seen_facts": sorted(state.seen_facts),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreparedReply:
        try:
            raw = data["state"]
            last = raw["last_fact_at"]
            state = UserState(
                user_id=str(raw["user_id"]),
                opted_out=bool(raw["opted_out"]),
                last_fact_at=None if last is None else float(last),
                day=str(raw["day"]),
                replies_today=int(raw["replies_today"]),
                seen_facts=frozenset(str(f) for f in raw["seen_facts"]),
            )
            return cls(SendPayload.from_json(str(data["payload"])), state,
                       Action(data["action"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedPayloadError("not a stored X Chat reply") from exc


@dataclass
class XChatSide:
    """What the outbox needs for X Chat jobs, built once by the daemon when X Chat is on."""

    crypto: XChatCrypto
    client: XChatClient
    keys: SigningKeyCache
    store: Store
    metrics: Metrics

    @property
    def bot_user_id(self) -> str:
        return self.crypto.identity.user_id

    @staticmethod
    def delivery_of(event: InboundDM) -> ChatReceived:
        """The stored delivery, checked again (the row may be older than this code)."""
        if event.xchat is None:
            raise MalformedPayloadError("the job holds no X Chat delivery")
        return parse_chat_received(event.xchat)

    async def read(self, delivery: ChatReceived) -> DecryptedMessage:
        """Verify and decrypt; new conversation keys are saved before returning. Raises an
        `XChatError` (bounded `reason`) when the message cannot be read, or the client's
        send errors when X could not be asked for keys."""
        conversation = canonical_conversation_id(delivery.conversation_id)
        keys = await self.keys.get(delivery.sender_id, signing_key_hint=delivery.signer_key_hint)
        asked_again = looked_in_store = looked_at_x = False
        found_in: str | None = None
        while True:
            try:
                message = self.crypto.decrypt(delivery, keys)
            except VerificationError as exc:
                if exc.reason != "unknown_sender_keys" or asked_again:
                    raise
                asked_again = True
                fetched = self.keys.fetches
                keys = await self.keys.get(delivery.sender_id, refresh=True)
                if self.keys.fetches == fetched:
                    # The cache asked X moments ago and will not ask again yet (forged
                    # signatures must not make it a request pump): try later, not never.
                    raise SenderKeysNotRefreshed(
                        "no signing key of the sender matches, and X was asked for them "
                        "moments ago; the job comes back") from exc
                continue
            except ConversationKeyError as exc:
                if exc.reason != "no_conversation_key":
                    raise
                if not looked_in_store:
                    looked_in_store = True
                    if await self._keys_from_store(conversation):
                        found_in = "store"
                        continue
                if not looked_at_x:
                    looked_at_x = True
                    if await self._keys_from_x(conversation, keys):
                        found_in = "x"
                        continue
                self.metrics.xchat_key_recoveries.labels("missing").inc()
                raise
            if found_in is not None:
                self.metrics.xchat_key_recoveries.labels(found_in).inc()
            if message.learned_keys:
                await self.save_keys(conversation)
            return message

    async def save_keys(self, conversation: str) -> None:
        """Keep the conversation's keys durable, merged with what the store has: a 1:1
        conversation is one user's, whose jobs no two workers (or replicas) hold at once,
        so the read-merge-write cannot race with another writer of the same row."""
        self.crypto.load_conversation_keys(await self.store.load_conversation_keys([conversation]))
        await self.store.save_conversation_keys(
            self.crypto.conversation_keys_to_store([conversation])
        )

    async def load_all(self) -> None:
        """At start-up: every conversation key the store holds."""
        report = self.crypto.load_conversation_keys(await self.store.load_conversation_keys())
        # Counts only: neither blobs nor conversation ids (they name users) go to the log.
        log.info("xchat_keys_loaded", conversations=report.conversations, keys=report.keys,
                 rejected=len(report.rejected))
        if report.rejected:
            log.warning("xchat_keys_not_opened", conversations=len(report.rejected),
                        hint="sealed by another CATBOT_XCHAT_PRIVATE_KEY, or altered")

    async def _keys_from_store(self, conversation: str) -> bool:
        # Another replica may have saved a key this one lacks (the count includes keys
        # already held: at worst one more decrypt that fails the same way).
        report = self.crypto.load_conversation_keys(
            await self.store.load_conversation_keys([conversation])
        )
        return report.keys > 0

    async def _keys_from_x(self, conversation: str, sender_keys: list[PublicKeyRecord]) -> bool:
        # One page is enough: every page's meta lists all of the conversation's key changes.
        history = await self.client.get_conversation_events(
            send_path_id(conversation, self.bot_user_id), max_results=1
        )
        if not self.crypto.apply_key_changes(history.key_change_events, sender_keys):
            return False
        await self.save_keys(conversation)
        return True
