"""X Chat (end-to-end encrypted DMs) for the bot, on X's own crypto SDK `chatxdk`.

One job per module, pure parts apart from I/O:
- `errors`: the failure classes, each with a bounded `reason` usable as a metric label.
- `wire`: X's JSON shapes (`chat.received`, public-key records, answers), parsed and checked.
- `identity`: the bot's key pair: generate, load from the secret setting, the registration
  body, "does X have this key".
- `keyring`: conversation keys the bot has learned, sealed for the store.
- `crypto`: the SDK adapter: decrypt a delivery, encrypt a reply.
- `keycache`: senders' public keys, cached with a TTL and a size bound.
- `client`: the HTTP calls (OAuth 1.0a through tweepy, like the DM sender).

Plaintext exists only inside `crypto.DecryptedMessage.text` and the caller's reply text; no
module here logs, stores or puts it in an exception message.
"""

from __future__ import annotations

from catbot.xchat.client import Registration, SentChat, XChatClient
from catbot.xchat.crypto import DecryptedMessage, SendPayload, XChatCrypto
from catbot.xchat.errors import (
    DECRYPT_FAILURE_REASONS,
    ConversationKeyError,
    IdentityError,
    MalformedPayloadError,
    UnsupportedEventError,
    VerificationError,
    XChatError,
)
from catbot.xchat.identity import (
    KEY_VERSION_SETTING,
    PRIVATE_KEY_SETTING,
    BotIdentity,
    NewIdentity,
    check_registered,
    generate_identity,
    load_identity,
)
from catbot.xchat.keycache import SigningKeyCache
from catbot.xchat.wire import (
    ChatReceived,
    PublicKeyRecord,
    canonical_conversation_id,
    conversation_participants,
    parse_chat_received,
    send_path_id,
)

__all__ = [
    "DECRYPT_FAILURE_REASONS",
    "KEY_VERSION_SETTING",
    "PRIVATE_KEY_SETTING",
    "BotIdentity",
    "ChatReceived",
    "ConversationKeyError",
    "DecryptedMessage",
    "IdentityError",
    "MalformedPayloadError",
    "NewIdentity",
    "PublicKeyRecord",
    "Registration",
    "SendPayload",
    "SentChat",
    "SigningKeyCache",
    "UnsupportedEventError",
    "VerificationError",
    "XChatClient",
    "XChatCrypto",
    "XChatError",
    "canonical_conversation_id",
    "check_registered",
    "conversation_participants",
    "generate_identity",
    "load_identity",
    "parse_chat_received",
    "send_path_id",
]
