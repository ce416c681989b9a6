"""Verification of `x-twitter-webhooks-signature`, as a tiny pure class.

X signs the raw body with HMAC-SHA256 keyed by the consumer secret. During a secret rotation
both the new and the previous secret are accepted. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from catbot.logs import get_logger
from catbot.signing import sign_body

_PREFIX = "sha256="

# RFC 2104 asks for HMAC keys at least as long as the hash output (32 bytes for SHA-256);
# X's consumer secrets are 50 characters.
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class Verdict:
    ok: bool
    # Bounded label: "ok", "missing", "malformed" or "mismatch".
    reason: str


class SignatureVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one consumer secret is needed to verify signatures")
        for position, secret in enumerate(secrets):
            # An empty key is a key everyone has: any stranger could sign a delivery.
            if not secret.strip():
                raise ValueError(
                    f"consumer secret #{position + 1} is empty: refusing to verify with it"
                )
            if len(secret) < MIN_SECRET_LENGTH:
                # Not refused: tests and emulators use short made-up secrets on purpose.
                get_logger("catbot.webhook").warning(
                    "short_signing_secret", position=position + 1,
                    shorter_than=MIN_SECRET_LENGTH,
                )
        self._secrets = tuple(secrets)

    def verify(self, header: str | None, body: bytes) -> Verdict:
        if not header:
            return Verdict(False, "missing")
        if not header.startswith(_PREFIX) or not _is_sha256_b64(header[len(_PREFIX):]):
            return Verdict(False, "malformed")
        presented = header.encode()
        # Check every secret (no early exit) so timing does not reveal which one matched.
        matched = False
        for secret in self._secrets:
            matched |= hmac.compare_digest(presented, sign_body(secret, body).encode())
        return Verdict(True, "ok") if matched else Verdict(False, "mismatch")


def _is_sha256_b64(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False
