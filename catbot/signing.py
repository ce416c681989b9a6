"""X webhook cryptography: the CRC answer and the delivery signature.

Pure functions shared by the daemon and the emulator, so both sides sign and verify with
exactly the same bytes. X keys both HMACs with the app's consumer (API key) secret.
"""

from __future__ import annotations

import base64
import hmac

SIGNATURE_HEADER = "x-twitter-webhooks-signature"
_PREFIX = "sha256="


def _hmac_b64(secret: str, message: bytes) -> str:
    # The one-shot form runs in OpenSSL without building an HMAC object (the webhook's hot path).
    digest = hmac.digest(secret.encode(), message, "sha256")
    return base64.b64encode(digest).decode("ascii")


def crc_response_token(consumer_secret: str, crc_token: str) -> str:
    """The `response_token` X expects for a CRC challenge."""
    return _PREFIX + _hmac_b64(consumer_secret, crc_token.encode())


def sign_body(consumer_secret: str, body: bytes) -> str:
    """The `x-twitter-webhooks-signature` header value for a delivery body."""
    return _PREFIX + _hmac_b64(consumer_secret, body)
