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

from catbot.signing import sign_body

_PREFIX = "sha256="


@dataclass(frozen=True)
class Verdict:
    ok: bool
    # Bounded label: "ok", "missing", "malformed" or "mismatch".
    reason: str


class SignatureVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one consumer secret is needed to verify signatures")
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
