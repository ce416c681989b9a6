"""The bot's side of X Chat crypto: one `chat.received` delivery in, plaintext out; a reply
text in, the send body out. A typed adapter over chatxdk 0.5.2 (import `chat_xdk`).

Decrypting follows xchat/real-time-events ("Decrypt with the Chat XDK"): apply the payload's
`conversation_key_change_event` first with `decrypt_events`, then `decrypt_event` the
message. Keys are passed per call, never through the SDK's session stores, as
xchat/xchat-xdk ("Decrypt") recommends for multi-instance deployments: the keyring and the
signing keys are the caller's, so two replicas or a restart see the same state.

Two SDK behaviours shape the code (checked against 0.5.2 in tests/test_xchat_crypto.py):
- `decrypt_events` reports a key change that fails verification in `errors` but still
  returns its keys in `conversation_keys`; only the keys of a KeyChange event with
  `verified: true` are taken.
- Failures are `ValueError`s told apart only by their message; `_classify` maps them to the
  bounded reasons of `catbot.xchat.errors`.

Threads and asyncio: chatxdk holds the GIL for the whole call (≈0.6 ms to decrypt a
message, ≈0.2 ms to encrypt a reply on the 2-core dev machine), so a worker thread buys
no parallelism. Call `XChatCrypto` directly from the event loop; it is also safe from several
threads (one internal lock guards the SDK instance and the keyring).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from catbot.xchat.errors import (
    ConversationKeyError,
    MalformedPayloadError,
    UnsupportedEventError,
    VerificationError,
    XChatError,
)
from catbot.xchat.identity import BotIdentity
from catbot.xchat.keyring import ConversationKeyring, LoadReport, seal_all, unseal_all
from catbot.xchat.wire import (
    ChatReceived,
    PublicKeyRecord,
    canonical_conversation_id,
    conversation_participants,
    send_path_id,
)


@dataclass(frozen=True)
class DecryptedMessage:
    """A verified text message. `text` is the only plaintext and is kept out of `repr`, so
    logging the object (or an exception holding it) cannot leak it."""

    text: str = field(repr=False)
    sender_id: str
    conversation_id: str
    message_id: str
    key_version: str
    sequence_id: str | None
    created_at_msec: int | None
    # The encoded event as delivered (ciphertext), for a threaded reply that quotes it.
    encoded_event: str = field(repr=False)
    # The delivery's key change added a key: the caller should persist the keyring.
    learned_keys: bool


@dataclass(frozen=True)
class SendPayload:
    """One encrypted reply, ready for `POST /2/chat/conversations/{path_id}/messages`
    (x-api/chat/send-chat-message). Ciphertext only: safe to store with the job, and it
    must be: X's SDK mints `message_id` inside the signed event, so a retry resends this
    same payload rather than encrypting again (xchat/xchat-xdk, "Encrypt and send helpers")."""

    path_id: str
    message_id: str
    encoded_message_create_event: str = field(repr=False)
    encoded_message_event_signature: str = field(repr=False)
    conversation_key_version: str
    conversation_token: str | None = field(default=None, repr=False)

    def body(self) -> dict[str, str]:
        out = {
            "message_id": self.message_id,
            "encoded_message_create_event": self.encoded_message_create_event,
            "encoded_message_event_signature": self.encoded_message_event_signature,
        }
        if self.conversation_token:
            out["conversation_token"] = self.conversation_token
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SendPayload:
        try:
            raw = json.loads(text)
            return cls(**{name: raw[name] for name in
                          ("path_id", "message_id", "encoded_message_create_event",
                           "encoded_message_event_signature", "conversation_key_version")},
                       conversation_token=raw.get("conversation_token"))
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedPayloadError("not a stored X Chat send payload") from exc


class XChatCrypto:
    """One bot identity, its SDK instance and the conversation keys it has learned."""

    def __init__(self, identity: BotIdentity, *, max_key_versions: int = 16) -> None:
        self._identity = identity
        self._chat = identity.new_chat()
        self._own = identity.record()
        self._seal_key = identity.seal_key()
        self._keyring = ConversationKeyring(max_key_versions)
        self._lock = threading.Lock()

    @property
    def identity(self) -> BotIdentity:
        return self._identity

    # --- receiving -------------------------------------------------------------------

    def decrypt(
        self, delivery: ChatReceived, sender_keys: Sequence[PublicKeyRecord]
    ) -> DecryptedMessage:
        """Verify and decrypt one delivery. `sender_keys` are the sender's records from
        `GET /2/users/{id}/public_keys` (see `keycache`); the bot's own keys are added.

        Raises `MalformedPayloadError`, `VerificationError`, `ConversationKeyError` or
        `UnsupportedEventError`, each with a bounded `reason`."""
        entries = self._signing_entries(sender_keys)
        conversation = canonical_conversation_id(delivery.conversation_id)
        with self._lock:
            # X puts the conversation's latest key change on every message, and verifying
            # it again is half the cost of a reply: when the message names a key version
            # the bot holds, open it first (the message itself is verified either way) and
            # read the key change only if that key does not open it.
            if delivery.conversation_key_version in self._keyring.keys_for(conversation):
                try:
                    event = self._open(delivery, conversation, entries)
                except ConversationKeyError:
                    pass
                else:
                    return self._message(event, delivery, conversation, False)
            learned = False
            key_change_failure: XChatError | None = None
            if delivery.key_change_event:
                try:
                    learned = self._apply_key_change(delivery.key_change_event, entries)
                except XChatError as exc:
                    # Its keys are not taken. The message may still open with a key the
                    # bot already holds; if not, this failure is the real cause.
                    key_change_failure = exc
            try:
                event = self._open(delivery, conversation, entries)
            except ConversationKeyError as failure:
                if key_change_failure:
                    raise key_change_failure from failure
                raise
        return self._message(event, delivery, conversation, learned)

    def _open(
        self, delivery: ChatReceived, conversation: str, entries: list[dict[str, str]]
    ) -> Mapping[str, Any]:
        keys = self._keyring.keys_for(conversation)
        try:
            event: Mapping[str, Any] = self._chat.decrypt_event(
                delivery.encoded_event, keys, entries
            )
        except ValueError as exc:
            raise _classify(exc) from exc
        return event

    def _apply_key_change(self, encoded: str, entries: list[dict[str, str]]) -> bool:
        try:
            result = self._chat.decrypt_events([encoded], entries)
        except ValueError as exc:
            raise _classify(exc) from exc
        errors = result.get("errors") or {}
        if errors:
            failure = _classify_message(str(next(iter(errors.values()))))
            if failure.reason == "unknown_sender_keys" and not self._addressed_to_us(encoded):
                # chatxdk reports a change with no entry for the bot's registered key
                # version as an unknown signer; the real cause is a wrong
                # CATBOT_XCHAT_KEY_VERSION, or a change meant for another key of the bot.
                raise ConversationKeyError(
                    "the key change holds no key for this bot's key version",
                    reason="no_conversation_key",
                )
            raise failure
        messages = result.get("messages") or []
        event = messages[0].get("event") if messages and isinstance(messages[0], dict) else None
        if not isinstance(event, dict) or event.get("type") != "KeyChange":
            raise MalformedPayloadError("conversation_key_change_event is not a key change")
        if event.get("verified") is not True:
            raise VerificationError("the key change is not verified", reason="unverified")
        conversation_id = event.get("conversation_id")
        bundle = result.get("conversation_keys") or {}
        keys = bundle.get("keys") if isinstance(bundle, dict) else None
        if not isinstance(conversation_id, str) or not isinstance(keys, dict):
            raise MalformedPayloadError("the key change names no conversation")
        conversation = canonical_conversation_id(conversation_id)
        learned = False
        for version, key in keys.items():
            # Only this identity's entry (at its registered version) unwraps: an empty map
            # means the change was addressed to another key version of the bot.
            learned |= self._keyring.add(conversation, str(version), bytes(key))
        return learned

    def _addressed_to_us(self, encoded: str) -> bool:
        """Whether the change wraps a key for this identity at its version. Only the
        emptiness of the answer is used: `extract_conversation_keys` does not verify."""
        try:
            bundle = self._chat.extract_conversation_keys([encoded])
        except ValueError:
            return False
        return bool(bundle.get("keys"))

    def _message(
        self, event: Mapping[str, Any], delivery: ChatReceived, conversation: str, learned: bool
    ) -> DecryptedMessage:
        if event.get("verified") is not True:
            raise VerificationError("the SDK did not verify the event", reason="unverified")
        sender = event.get("sender_id")
        event_conversation = event.get("conversation_id")
        if (sender != delivery.sender_id or not isinstance(event_conversation, str)
                or conversation_participants(event_conversation)
                != conversation_participants(conversation)):
            raise VerificationError(
                "the signed event names another sender or conversation than its delivery",
                reason="envelope_mismatch",
            )
        if event.get("type") != "Message":
            raise UnsupportedEventError(f"event type {str(event.get('type'))[:32]}")
        content = event.get("content")
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(content, dict) or content.get("content_type") != "Text" or not (
            isinstance(text, str)
        ):
            raise UnsupportedEventError("a message without text")
        message_id = event.get("id")
        created = event.get("created_at_msec")
        sequence = event.get("sequence_id")
        return DecryptedMessage(
            text=text,
            sender_id=str(sender),
            conversation_id=conversation,
            message_id=str(message_id) if message_id is not None else "",
            key_version=str(event.get("key_version") or ""),
            sequence_id=str(sequence) if sequence is not None else None,
            created_at_msec=created if isinstance(created, int) else None,
            encoded_event=delivery.encoded_event,
            learned_keys=learned,
        )

    def _signing_entries(self, sender_keys: Sequence[PublicKeyRecord]) -> list[dict[str, str]]:
        # The bot never wraps a key to these records (it makes no key changes), so the
        # binding check xchat/xchat-xdk asks for before wrapping is not needed here; chatxdk
        # itself ignores an entry whose identity and signing keys are not bound (tested).
        own = self._own.user_id
        return [self._own.signing_entry()] + [
            record.signing_entry() for record in sender_keys if record.user_id != own
        ]

    def apply_key_changes(
        self, key_change_events: Sequence[str], signer_keys: Sequence[PublicKeyRecord]
    ) -> int:
        """Learn keys from encoded key changes fetched later, for a message that failed
        with `no_conversation_key`: `GET /2/chat/conversations/{id}/events` lists them in
        `meta.conversation_key_events` (xchat/getting-started, step 6). Each change must
        verify against `signer_keys` (those of the users who made them); one that does not
        is skipped. Returns how many keys were new."""
        entries = self._signing_entries(signer_keys)
        learned = 0
        with self._lock:
            for encoded in key_change_events:
                before = self._keyring.total()
                try:
                    self._apply_key_change(encoded, entries)
                except XChatError:
                    continue
                learned += self._keyring.total() - before
        return learned

    # --- replying --------------------------------------------------------------------

    def encrypt_reply(
        self,
        conversation_id: str,
        text: str,
        *,
        in_reply_to: DecryptedMessage | None = None,
        conversation_token: str | None = None,
    ) -> SendPayload:
        """Encrypt and sign `text` for the conversation under its newest known key.

        With `in_reply_to` the reply quotes that message (chatxdk `encrypt_reply`, which
        embeds the signed original so the friend's client can validate the quote), as long as
        it was encrypted under that same key version; otherwise, and by default, a plain
        message (`encrypt_message`)."""
        conversation = canonical_conversation_id(conversation_id)
        path_id = send_path_id(conversation, self._identity.user_id)
        with self._lock:
            latest = self._keyring.latest(conversation)
            if latest is None:
                raise ConversationKeyError(
                    "no key for this conversation", reason="no_conversation_key"
                )
            version, key = latest
            try:
                if in_reply_to is not None and in_reply_to.key_version == version:
                    sent = self._chat.encrypt_reply(
                        conversation, text, in_reply_to.encoded_event,
                        conversation_key=key, conversation_key_version=version,
                    )
                else:
                    sent = self._chat.encrypt_message(
                        conversation, text, conversation_key=key, conversation_key_version=version
                    )
            except ValueError as exc:
                raise _classify(exc) from exc
        return SendPayload(
            path_id=path_id,
            message_id=sent.message_id,
            encoded_message_create_event=sent.encrypted_content,
            encoded_message_event_signature=sent.encoded_event_signature,
            conversation_key_version=sent.conversation_key_version,
            conversation_token=conversation_token,
        )

    # --- the keyring, durably ----------------------------------------------------------

    def has_conversation_key(self, conversation_id: str) -> bool:
        with self._lock:
            return self._keyring.latest(canonical_conversation_id(conversation_id)) is not None

    def conversation_keys_to_store(
        self, conversation_ids: Iterable[str] | None = None
    ) -> dict[str, bytes]:
        """Sealed blobs to save, by canonical conversation id (all, or just those named —
        after a decrypt with `learned_keys`, just that conversation). Opaque secrets: store
        them as they are, never log them."""
        wanted = None if conversation_ids is None else [
            canonical_conversation_id(cid) for cid in conversation_ids
        ]
        with self._lock:
            return seal_all(self._keyring, self._seal_key, wanted)

    def load_conversation_keys(self, stored: Mapping[str, bytes]) -> LoadReport:
        """Restore blobs saved by `conversation_keys_to_store` (at start-up, or when another
        replica learned a key). Rows sealed by another identity or altered are reported in
        `rejected`, not raised: one bad row must not keep the bot from starting."""
        with self._lock:
            return unseal_all(self._keyring, stored, self._seal_key)


def _classify(exc: ValueError) -> XChatError:
    return _classify_message(str(exc))


def _classify_message(message: str) -> XChatError:
    """chatxdk 0.5.2's error texts as observed (X documents only that Python raises
    `ValueError`, xchat/xchat-xdk "Errors"): "Serialization error"/"Parse error" for bad
    base64 or Thrift, "Crypto error: Signature verification failed" (… "no matching signing
    key" when no key of the signer's version is known), "Crypto error: Decryption failed"
    (… "no matching key found" when the conversation key version is unknown). The tests
    provoke each with the real SDK, so a release that rewords them fails there first."""
    first = message.splitlines()[0] if message else ""
    if first.startswith(("Serialization error", "Parse error")):
        return MalformedPayloadError("the encoded event does not parse")
    if "Signature verification failed" in first:
        if "no matching signing key" in first or "signature missing" in first:
            return VerificationError(
                "no signing key of the sender matches the signature",
                reason="unknown_sender_keys",
            )
        return VerificationError("the signature does not match the event", reason="unverified")
    if "Decryption failed" in first:
        if "no matching key found" in first:
            return ConversationKeyError(
                "no conversation key of the event's version", reason="no_conversation_key"
            )
        return ConversationKeyError(
            "the conversation key does not open the event", reason="bad_conversation_key"
        )
    return XChatError("the SDK refused the event", reason="sdk_error")
