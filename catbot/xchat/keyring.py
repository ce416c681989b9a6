"""Conversation keys the bot has learned, and their sealed form for the store.

A conversation key opens every message of one conversation (xchat/handling-private-keys
rates unwrapped conversation keys "High"). The bot keeps them durably so that an event queued
before a restart can still be decrypted after it, but the store never holds them in clear:
each conversation's keys are sealed with chatxdk's authenticated `encrypt` under a key
derived from the bot's private blob (`BotIdentity.seal_key`). What the store keeps per
conversation is one opaque ASCII blob, `xck1.` + base64; reading it back checks that it was
sealed for that very conversation, so rows cannot be swapped. X documents nothing about how
a bot should persist these keys: this format is catbot's own.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import chat_xdk

_PREFIX = b"xck1."
KEY_BYTES = 32


def _version_order(version: str) -> tuple[int, int, str]:
    # Versions are millisecond timestamps in practice; compare numerically when they are.
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


class ConversationKeyring:
    """conversation id (canonical, see `wire.canonical_conversation_id`) → version → key.

    Bounded per conversation: a rotation adds a version, and only the newest
    `max_versions` are kept (old ones only open old events)."""

    def __init__(self, max_versions: int = 16) -> None:
        if max_versions < 1:
            raise ValueError("max_versions must be at least 1")
        self._max_versions = max_versions
        self._keys: dict[str, dict[str, bytes]] = {}

    def add(self, conversation_id: str, version: str, key: bytes) -> bool:
        """Remember a key; True when it was not known before."""
        if len(key) != KEY_BYTES:
            raise ValueError("a conversation key is 32 bytes")
        versions = self._keys.setdefault(conversation_id, {})
        if versions.get(version) == key:
            return False
        versions[version] = bytes(key)
        for old in sorted(versions, key=_version_order)[: -self._max_versions]:
            del versions[old]
        return True

    def keys_for(self, conversation_id: str) -> dict[str, bytes]:
        return dict(self._keys.get(conversation_id, {}))

    def latest(self, conversation_id: str) -> tuple[str, bytes] | None:
        versions = self._keys.get(conversation_id)
        if not versions:
            return None
        version = max(versions, key=_version_order)
        return version, versions[version]

    def conversations(self) -> list[str]:
        return sorted(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def total(self) -> int:
        """Keys held, over all conversations."""
        return sum(len(versions) for versions in self._keys.values())

    def seal(self, conversation_id: str, seal_key: bytes) -> bytes:
        """This conversation's keys as one sealed blob for the store."""
        versions = self._keys.get(conversation_id, {})
        plain = json.dumps({
            "c": conversation_id,
            "k": {v: base64.b64encode(k).decode("ascii") for v, k in sorted(versions.items())},
        }, separators=(",", ":"))
        sealed = chat_xdk.Chat().encrypt(plain, seal_key)
        return _PREFIX + sealed.encode("ascii")

    def unseal(self, conversation_id: str, blob: bytes, seal_key: bytes) -> int:
        """Merge a sealed blob back; returns how many keys it held. Raises `ValueError` for a
        blob that is not ours, was sealed under another identity, was altered, or belongs
        to another conversation."""
        if not blob.startswith(_PREFIX):
            raise ValueError("not a sealed conversation-key blob")
        try:
            plain = chat_xdk.Chat().decrypt(blob[len(_PREFIX):].decode("ascii"), seal_key)
            content = json.loads(plain)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError("the blob does not open with this identity") from exc
        if not isinstance(content, dict) or content.get("c") != conversation_id:
            raise ValueError("the blob was sealed for another conversation")
        keys = content.get("k")
        if not isinstance(keys, dict):
            raise ValueError("the blob holds no key map")
        decoded: list[tuple[str, bytes]] = []
        for version, text in keys.items():
            try:
                key = base64.b64decode(str(text), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("the blob holds a key that is not base64") from exc
            if len(key) != KEY_BYTES:
                raise ValueError("the blob holds a key of the wrong size")
            decoded.append((str(version), key))
        for version, key in decoded:
            self.add(conversation_id, version, key)
        return len(decoded)


@dataclass(frozen=True)
class LoadReport:
    """What `load_conversation_keys` restored, and which stored rows it could not open
    (their conversation ids, for a warning; the blobs themselves stay unlogged)."""

    conversations: int
    keys: int
    rejected: tuple[str, ...]


def seal_all(
    keyring: ConversationKeyring, seal_key: bytes, conversation_ids: Iterable[str] | None = None
) -> dict[str, bytes]:
    wanted = keyring.conversations() if conversation_ids is None else list(conversation_ids)
    return {cid: keyring.seal(cid, seal_key) for cid in wanted if keyring.keys_for(cid)}


def unseal_all(
    keyring: ConversationKeyring, stored: Mapping[str, bytes], seal_key: bytes
) -> LoadReport:
    conversations = keys = 0
    rejected: list[str] = []
    for conversation_id, blob in stored.items():
        try:
            keys += keyring.unseal(conversation_id, blob, seal_key)
        except ValueError:
            rejected.append(conversation_id)
            continue
        conversations += 1
    return LoadReport(conversations, keys, tuple(rejected))
