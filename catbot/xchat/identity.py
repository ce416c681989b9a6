"""The bot's X Chat identity: generate it, load it from the secret setting, describe it to X.

The secret is chatxdk's `export_keys()` blob, base64: 64 bytes, the identity private key then
the signing private key (X's sample bot, chat-xdk examples/python/chat_core.py `load_keys`).
`catbot xchat keygen` prints it once; the daemon reads it from `CATBOT_XCHAT_PRIVATE_KEY`
(a Kubernetes Secret) and the registered version from `CATBOT_XCHAT_KEY_VERSION`.

`catbot xchat register` needs the public registration body again, later, from the blob alone.
chatxdk has no call for that (only `generate_keypairs`, which mints new keys), so it is
rebuilt here from the SDK's own primitives and checked by the SDK before use:
- `public_key` / `signing_public_key`: the P-256 points `get_public_keys()` gives, in the
  SubjectPublicKeyInfo DER form `generate_keypairs` uses (a fixed 26-byte header + point).
- `identity_public_key_signature`: the signing key's signature over the identity SPKI
  (`Chat.sign` signs with the signing key; `verify_key_binding` must accept it).
- `signing_public_key_signature`: the identity key's signature over the signing SPKI, made by
  an SDK instance loaded with the two halves swapped, so that `sign` uses the identity key.
- `public_key_fingerprint`: `get_public_key_fingerprint()`.
chatxdk 0.5.2 signs deterministically, so the rebuilt body equals the one `generate_keypairs`
returned (tests/test_xchat_identity.py holds it to that).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import chat_xdk

from catbot.xchat.errors import IdentityError
from catbot.xchat.wire import USER_ID, PublicKeyRecord, same_key

PRIVATE_KEY_SETTING = "CATBOT_XCHAT_PRIVATE_KEY"
KEY_VERSION_SETTING = "CATBOT_XCHAT_KEY_VERSION"
USER_ID_SETTING = "bot user id"
BLOB_BYTES = 64
# X's key versions are millisecond timestamps ("1733889755256" on xchat/xchat-xdk); the
# sample bot defaults to "1". Digits only keeps the setting easy to check.
_KEY_VERSION = re.compile(r"^[0-9]{1,20}$")
# DER SubjectPublicKeyInfo header for an uncompressed P-256 point (id-ecPublicKey,
# prime256v1, BIT STRING of 66 bytes): what `generate_keypairs` puts before each point.
_P256_SPKI_HEADER = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
# The registration method chatxdk's `generate_keypairs` reports for a key blob identity.
REGISTRATION_METHOD = "CustomPin"
_SEAL_LABEL = b"catbot/xchat/keyring-seal/v1"


@dataclass(frozen=True)
class RegistrationPayload:
    """The body of `POST /2/users/{id}/public_keys` (x-api/chat/add-public-key): public
    material only, safe to print and log."""

    public_key: str
    signing_public_key: str
    identity_public_key_signature: str
    signing_public_key_signature: str
    public_key_fingerprint: str
    registration_method: str
    version: str
    generate_version: bool

    def body(self) -> dict[str, Any]:
        return {
            "public_key": {
                "public_key": self.public_key,
                "signing_public_key": self.signing_public_key,
                "identity_public_key_signature": self.identity_public_key_signature,
                "signing_public_key_signature": self.signing_public_key_signature,
                "public_key_fingerprint": self.public_key_fingerprint,
                "registration_method": self.registration_method,
            },
            "version": self.version,
            "generate_version": self.generate_version,
        }


@dataclass(frozen=True)
class NewIdentity:
    """What `catbot xchat keygen` prints: the secret blob (base64) and, for information,
    the public registration body."""

    private_key: str = field(repr=False)
    registration: RegistrationPayload

    def setting_line(self) -> str:
        return f"{PRIVATE_KEY_SETTING}={self.private_key}"


def generate_identity() -> NewIdentity:
    """A fresh identity key pair and signing key pair (chatxdk `generate_keypairs`)."""
    chat = chat_xdk.Chat()
    generated = chat.generate_keypairs()
    exported = chat.export_keys()
    if not exported or len(exported) != BLOB_BYTES:
        raise IdentityError(PRIVATE_KEY_SETTING, "the SDK exported no 64-byte key blob")
    key = generated.public_key
    registration = RegistrationPayload(
        public_key=key.public_key,
        signing_public_key=key.signing_public_key,
        identity_public_key_signature=key.identity_public_key_signature,
        signing_public_key_signature=key.signing_public_key_signature or "",
        public_key_fingerprint=key.public_key_fingerprint or "",
        registration_method=key.registration_method,
        version=str(generated.version or _now_version()),
        generate_version=bool(generated.generate_version),
    )
    return NewIdentity(base64.b64encode(bytes(exported)).decode("ascii"), registration)


@dataclass(frozen=True, repr=False)
class BotIdentity:
    """The bot's loaded identity. The private blob never shows in `repr` or `str`."""

    user_id: str
    key_version: str | None
    public_key: str
    signing_public_key: str
    identity_public_key_signature: str
    signing_public_key_signature: str
    fingerprint: str
    _blob: bytes = field(repr=False)

    def __repr__(self) -> str:
        return (f"BotIdentity(user_id={self.user_id!r}, key_version={self.key_version!r}, "
                f"fingerprint={self.fingerprint!r})")

    __str__ = __repr__

    def registration_payload(self, version: str | None = None) -> RegistrationPayload:
        """The registration body for this identity. X assigns the version
        (`generate_version`); the proposed one is "now" in ms, as chatxdk proposes."""
        return RegistrationPayload(
            public_key=self.public_key,
            signing_public_key=self.signing_public_key,
            identity_public_key_signature=self.identity_public_key_signature,
            signing_public_key_signature=self.signing_public_key_signature,
            public_key_fingerprint=self.fingerprint,
            registration_method=REGISTRATION_METHOD,
            version=version or _now_version(),
            generate_version=True,
        )

    def record(self) -> PublicKeyRecord:
        """This identity as a public-key record, so the bot can verify its own signatures
        (a key change it made itself, its own `chat.sent` copies)."""
        return PublicKeyRecord(self.user_id, self._version(), self.public_key,
                               self.signing_public_key, self.identity_public_key_signature)

    def new_chat(self) -> chat_xdk.Chat:
        """An SDK instance holding these keys, with the session identity set (xchat/xchat-
        xdk, "Lifecycle and keys": `import_keys(blob, version)` then `set_identity`)."""
        version = self._version()
        chat = chat_xdk.Chat()
        chat.import_keys(self._blob, version=version)
        chat.set_identity(self.user_id, version)
        return chat

    def seal_key(self) -> bytes:
        """A 32-byte key, derived from the private blob, that seals the conversation keys the
        bot stores: the store alone (a copied SQLite file, a Redis dump) opens nothing."""
        return hmac.new(self._blob, _SEAL_LABEL, hashlib.sha256).digest()

    def _version(self) -> str:
        if self.key_version is None:
            raise IdentityError(KEY_VERSION_SETTING, "is not set; run `catbot xchat register`")
        return self.key_version


def load_identity(private_key: str, *, user_id: str, key_version: str | None) -> BotIdentity:
    """Load `CATBOT_XCHAT_PRIVATE_KEY` (base64 blob) for `user_id`. `key_version` may be
    None only for `register`, which learns it. Errors name the setting, never its value."""
    if not USER_ID.match(user_id):
        raise IdentityError(USER_ID_SETTING, "is not a numeric X user id")
    if key_version is not None and not _KEY_VERSION.match(key_version):
        raise IdentityError(KEY_VERSION_SETTING, "must be the digits X returned at registration")
    blob = _decode_blob(private_key)
    chat = chat_xdk.Chat()
    try:
        chat.import_keys(blob)
        raw = chat.get_public_keys()
        fingerprint = chat.get_public_key_fingerprint()
    except ValueError as exc:
        raise IdentityError(PRIVATE_KEY_SETTING, "the SDK does not accept this key blob") from exc
    identity_spki = _spki(raw.identity)
    signing_spki = _spki(raw.signing)
    identity_b64 = base64.b64encode(identity_spki).decode("ascii")
    signing_b64 = base64.b64encode(signing_spki).decode("ascii")
    binding = base64.b64encode(chat.sign(identity_spki)).decode("ascii")
    swapped = chat_xdk.Chat()
    swapped.import_keys(blob[32:] + blob[:32])
    reverse = base64.b64encode(swapped.sign(signing_spki)).decode("ascii")
    # The SDK checks both signatures: a blob of another layout fails here, not at X.
    if not (chat.verify_key_binding(identity_b64, signing_b64, binding)
            and chat.verify(identity_b64, base64.b64decode(reverse), signing_spki)
            and chat.matches_registered_key(identity_b64)):
        raise IdentityError(PRIVATE_KEY_SETTING, "the key blob does not have the SDK's layout")
    return BotIdentity(user_id, key_version, identity_b64, signing_b64, binding, reverse,
                       fingerprint, blob)


def _decode_blob(private_key: str) -> bytes:
    text = "".join(private_key.split())
    if not text:
        raise IdentityError(PRIVATE_KEY_SETTING, "is empty; create one with `catbot xchat keygen`")
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(PRIVATE_KEY_SETTING, "is not valid base64") from None
    if len(blob) != BLOB_BYTES:
        raise IdentityError(
            PRIVATE_KEY_SETTING,
            f"must decode to {BLOB_BYTES} bytes (identity and signing keys, as `catbot xchat "
            f"keygen` prints), got {len(blob)}",
        )
    return blob


def _spki(raw_point_b64: str) -> bytes:
    point = base64.b64decode(raw_point_b64)
    if len(point) != 65 or point[0] != 4:
        raise IdentityError(PRIVATE_KEY_SETTING, "the SDK returned no P-256 public point")
    return _P256_SPKI_HEADER + point


def _now_version() -> str:
    return str(int(time.time() * 1000))


@dataclass(frozen=True)
class RegisteredKeyCheck:
    """What `doctor` reports: is this identity's key among X's records for the bot, and
    under the configured version?"""

    registered: bool
    registered_version: str | None
    configured_version: str | None
    other_versions: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.registered and self.registered_version == self.configured_version

    def describe(self) -> str:
        if not self.registered:
            listed = ", ".join(self.other_versions) or "none"
            return (f"X has no key matching {PRIVATE_KEY_SETTING} (registered versions: "
                    f"{listed}); run `catbot xchat register`")
        if self.registered_version != self.configured_version:
            return (f"{KEY_VERSION_SETTING} is {self.configured_version or 'unset'} but X has "
                    f"this key as version {self.registered_version}")
        return f"X has this key as version {self.registered_version}"


def check_registered(
    identity: BotIdentity, records: Sequence[PublicKeyRecord]
) -> RegisteredKeyCheck:
    """Compare the identity with the bot's records from `GET /2/users/{id}/public_keys`.
    Both public keys must match: the identity key alone could be paired at X with a signing
    key the bot does not hold, and every reply would then fail verification."""
    match: PublicKeyRecord | None = None
    for record in records:
        if (same_key(record.public_key, identity.public_key)
                and same_key(record.signing_public_key, identity.signing_public_key)):
            match = record
    others = tuple(r.version for r in records if r is not match)
    return RegisteredKeyCheck(
        registered=match is not None,
        registered_version=match.version if match else None,
        configured_version=identity.key_version,
        other_versions=others,
    )
