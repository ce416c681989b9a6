"""Why an X Chat message could not be read, as a small fixed set of reasons.

Every exception carries `reason`, one of `DECRYPT_FAILURE_REASONS` (an `IdentityError`:
`bad_identity`), so the outbox can count failures by reason without a label explosion and
dead-letter with a message that holds neither plaintext nor key material. The SDK's own
message stays on `__cause__` for debugging: chatxdk 0.5.2 puts key versions and lengths
there, never text.
"""

from __future__ import annotations

from typing import ClassVar


class XChatError(Exception):
    """Base class. `reason` is bounded: a subclass accepts only the reasons it declares."""

    reasons: ClassVar[tuple[str, ...]] = ("sdk_error",)

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        chosen = reason or self.reasons[0]
        if chosen not in self.reasons:
            raise ValueError(f"{type(self).__name__} has no reason {chosen!r}")
        super().__init__(message)
        self.reason = chosen


class MalformedPayloadError(XChatError):
    """The delivery or an encoded event is not what X sends: a missing field, bad base64,
    Thrift that does not parse. Retrying cannot help."""

    reasons = ("malformed",)


class VerificationError(XChatError):
    """The event is not provably from its sender.

    - `unverified`: a signature does not match (tampered ciphertext, id or conversation).
    - `unknown_sender_keys`: no signing key of the sender's matches the signature's key
      version; fetching the sender's keys again may help once, then it is final.
    - `envelope_mismatch`: the signed event names another sender or conversation than the
      unsigned JSON around it.
    """

    reasons = ("unverified", "unknown_sender_keys", "envelope_mismatch")


class ConversationKeyError(XChatError):
    """No usable conversation key.

    - `no_conversation_key`: the bot holds no key of the version the event was encrypted
      under (the key change never reached it, or it was lost).
    - `bad_conversation_key`: a key of that version is held but does not open the event.
    """

    reasons = ("no_conversation_key", "bad_conversation_key")


class UnsupportedEventError(XChatError):
    """A verified event that is not a text message (reaction, edit, key change, media):
    nothing to answer, nothing wrong."""

    reasons = ("not_a_message",)


class IdentityError(XChatError, ValueError):
    """The configured identity is unusable. `setting` names the variable to fix; the message
    never repeats the secret value."""

    reasons = ("bad_identity",)

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


DECRYPT_FAILURE_REASONS: tuple[str, ...] = (
    *XChatError.reasons,
    *MalformedPayloadError.reasons,
    *VerificationError.reasons,
    *ConversationKeyError.reasons,
    *UnsupportedEventError.reasons,
)
