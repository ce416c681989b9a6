"""X Chat identities: the public key directory and the emulated users' own X Chat clients.

The directory is what `POST`/`GET /2/users/{id}/public_keys` and `GET /2/users/public_keys`
read and write (docs.x.com x-api/chat/add-public-key, x-api/chat/get-user-public-keys,
x-api/users/get-public-keys-for-multiple-users; OpenAPI `AddUserPublicKeyRequest`,
`AddUserPublicKeyResponseData`, `PublicKey`). Keys are kept exactly as uploaded (X "stores
and returns the key exactly as registration uploaded it": xchat/troubleshooting).

Every emulated user other than the bot gets an X Chat client of its own the first time it is
needed: a `chat_xdk.Chat` with fresh keypairs registered in the directory, as the X app does
for a person. It encrypts what the user writes and decrypts what the bot answers, so the
emulator shows the bot's replies as the friend reads them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

from chat_xdk import Chat

# "X allows only a few such writes per 24 h" (x-api.md, "X Chat"); X documents neither the
# number nor the error, so both are a guess kept in one place: 3 writes per user per rolling
# 24 hours, then 429 rate-limit-exceeded with X's rate-limit headers.
PUBLIC_KEY_WRITES_PER_DAY: Final = 3
PUBLIC_KEY_WRITE_WINDOW: Final = 24 * 3600.0

REGISTRATION_FIELDS: Final = (
    "public_key",
    "signing_public_key",
    "identity_public_key_signature",
    "signing_public_key_signature",
    "public_key_fingerprint",
    "registration_method",
)
# Without these three nobody can encrypt to the key or verify what it signs.
REQUIRED_FIELDS: Final = ("public_key", "signing_public_key", "identity_public_key_signature")


@dataclass(frozen=True)
class PublicKeyRecord:
    user_id: str
    version: str
    public_key: str  # identity key, base64 DER (SPKI) as uploaded
    signing_public_key: str
    identity_public_key_signature: str
    signing_public_key_signature: str | None = None
    public_key_fingerprint: str | None = None
    registration_method: str | None = None

    def to_json(self) -> dict[str, Any]:
        """One `PublicKey` row (x-api.md: `public_key`, `signing_public_key`,
        `identity_public_key_signature`, `public_key_version`); `user_id` too, since the
        multi-user route mixes several users' rows in one list."""
        data: dict[str, Any] = {
            "user_id": self.user_id,
            "public_key_version": self.version,
            "public_key": self.public_key,
            "signing_public_key": self.signing_public_key,
            "identity_public_key_signature": self.identity_public_key_signature,
        }
        for name in ("signing_public_key_signature", "public_key_fingerprint"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.registration_method is not None:
            data["registration_method"] = self.registration_method
        return data

    def signing_key_entry(self) -> dict[str, str]:
        """The entry `Chat.set_signing_keys` / `decrypt_*` take (x-api.md: `public_key` is
        the signing key there, `identity_public_key` the identity key)."""
        return {
            "user_id": self.user_id,
            "public_key_version": self.version,
            "public_key": self.signing_public_key,
            "identity_public_key": self.public_key,
            "identity_public_key_signature": self.identity_public_key_signature,
        }

    def same_keys(self, other: PublicKeyRecord) -> bool:
        return (self.public_key, self.signing_public_key) == (
            other.public_key,
            other.signing_public_key,
        )


class WriteLimitReached(Exception):
    def __init__(self, limit: int, reset_at: float) -> None:
        super().__init__(f"{limit} public key writes per 24 hours")
        self.limit = limit
        self.reset_at = reset_at


@dataclass
class KeyDirectory:
    records: dict[str, list[PublicKeyRecord]] = field(default_factory=dict)
    writes: dict[str, deque[float]] = field(default_factory=dict)
    writes_per_day: int = PUBLIC_KEY_WRITES_PER_DAY
    # Versions are millisecond timestamps (xchat/troubleshooting: "versions are millisecond
    # timestamps"); kept strictly increasing so two writes in one millisecond differ.
    _last_version: int = 0

    def new_version(self) -> str:
        self._last_version = max(self._last_version + 1, int(time.time() * 1000))
        return str(self._last_version)

    def spend_write(self, user_id: str, now: float) -> tuple[int, float]:
        """Count one write against the user's 24-hour allowance: (remaining, window reset)."""
        log = self.writes.setdefault(user_id, deque())
        while log and log[0] <= now - PUBLIC_KEY_WRITE_WINDOW:
            log.popleft()
        if len(log) >= self.writes_per_day:
            raise WriteLimitReached(self.writes_per_day, log[0] + PUBLIC_KEY_WRITE_WINDOW)
        log.append(now)
        return self.writes_per_day - len(log), log[0] + PUBLIC_KEY_WRITE_WINDOW

    def register(self, record: PublicKeyRecord) -> PublicKeyRecord:
        """Add a record; the same keys again keep the version they were registered under."""
        held = self.records.setdefault(record.user_id, [])
        for existing in held:
            if existing.same_keys(record):
                return existing
        held.append(record)
        return record

    def latest(self, user_id: str) -> PublicKeyRecord | None:
        held = self.records.get(user_id)
        return max(held, key=lambda r: int(r.version)) if held else None

    def find(self, user_id: str, version: str) -> PublicKeyRecord | None:
        return next((r for r in self.records.get(user_id, ()) if r.version == version), None)

    def rows(self, user_id: str) -> list[dict[str, Any]]:
        """Newest first: the current key leads, as a client picking `[0]` expects."""
        held = sorted(self.records.get(user_id, ()), key=lambda r: int(r.version), reverse=True)
        return [r.to_json() for r in held]

    def forget_writes(self) -> None:
        self.writes.clear()


def record_from_registration(user_id: str, version: str, fields: dict[str, Any]) -> PublicKeyRecord:
    return PublicKeyRecord(
        user_id=user_id,
        version=version,
        public_key=str(fields["public_key"]),
        signing_public_key=str(fields["signing_public_key"]),
        identity_public_key_signature=str(fields["identity_public_key_signature"]),
        signing_public_key_signature=_optional(fields.get("signing_public_key_signature")),
        public_key_fingerprint=_optional(fields.get("public_key_fingerprint")),
        registration_method=_optional(fields.get("registration_method")),
    )


def _optional(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass
class Friend:
    """One emulated user's X Chat app: its SDK instance, registered key and the conversation
    keys it holds (raw keys: the emulator plays the user's device, where they live)."""

    user_id: str
    chat: Chat
    record: PublicKeyRecord
    keys: dict[str, dict[str, bytes]] = field(default_factory=dict)  # conversation -> versions

    def remember_key(self, conversation: str, version: str, key: bytes) -> None:
        self.keys.setdefault(conversation, {})[version] = bytes(key)

    def key(self, conversation: str, version: str) -> bytes | None:
        return self.keys.get(conversation, {}).get(version)


def new_friend(user_id: str, directory: KeyDirectory) -> Friend:
    """A user's first X Chat session: keypairs made and registered, identity set.

    X's own app registers these; it is not the app's API call, so no write is counted.
    """
    chat = Chat()
    registration = chat.generate_keypairs()
    keys = registration.public_key
    record = directory.register(
        PublicKeyRecord(
            user_id=user_id,
            version=directory.new_version(),
            public_key=keys.public_key,
            signing_public_key=keys.signing_public_key,
            identity_public_key_signature=keys.identity_public_key_signature,
            signing_public_key_signature=keys.signing_public_key_signature,
            public_key_fingerprint=keys.public_key_fingerprint,
            registration_method=keys.registration_method,
        )
    )
    chat.set_identity(user_id, record.version)
    return Friend(user_id, chat, record)


def signing_entries(records: Iterable[PublicKeyRecord]) -> list[dict[str, str]]:
    return [r.signing_key_entry() for r in records]


@cache
def _verifier() -> Chat:
    # Verifying needs no keys of the instance's own: one instance serves every check.
    return Chat()


def verify_signature(signing_public_key: str, signature: bytes, payload: bytes) -> bool:
    """ECDSA P-256 check with X's SDK, the same primitive it signs with; a malformed key or
    signature is simply not a valid signature."""
    try:
        return bool(_verifier().verify(signing_public_key, signature, payload))
    except (ValueError, TypeError):
        return False


def key_binding_holds(public_key: str, signing_public_key: str, binding: str) -> bool:
    """Whether the identity key's signature binds the signing key, which every client checks
    before wrapping a conversation key to a record (xchat/cryptography-primer, "Key
    binding")."""
    try:
        return bool(_verifier().verify_key_binding(public_key, signing_public_key, binding))
    except (ValueError, TypeError):
        return False
