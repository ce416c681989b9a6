"""OAuth 1.0a (HMAC-SHA1) verification of the bot account's requests.

The base string is rebuilt with oauthlib's own helpers, so the emulator agrees with the
library that clients use to sign. It is tried against the URL actually requested and the
public X URLs the emulator stands in for: a client aimed here by a base-URL setting signs
the first, a client redirected under the hood (tweepy) signs `https://api.twitter.com/...`.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from oauthlib.oauth1.rfc5849 import signature as oauth_signature

PUBLIC_BASES: tuple[str, ...] = ("https://api.x.com", "https://api.twitter.com")
_REQUIRED = (
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature_method",
    "oauth_signature",
    "oauth_timestamp",
    "oauth_nonce",
)


@dataclass(frozen=True)
class Credentials:
    consumer_secret: str
    consumer_key: str | None
    access_token: str | None
    access_token_secret: str | None


class AuthOutcome(Enum):
    OK = "ok"
    MISSING = "missing"
    APP_ONLY = "app_only"  # a bearer token on a user-context route
    MALFORMED = "malformed"
    WRONG_CONSUMER = "wrong_consumer"
    WRONG_TOKEN = "wrong_token"
    CLOCK_SKEW = "clock_skew"
    BAD_SIGNATURE = "bad_signature"


@dataclass(frozen=True)
class RequestToVerify:
    method: str
    scheme: str
    host: str
    raw_path_qs: str  # path and query exactly as sent, still percent-encoded
    authorization: str | None
    # Form-encoded body parameters: OAuth 1.0a signs them too (v1.1 clients send `url=` so).
    form_params: tuple[tuple[str, str], ...] = ()


class _SigningKey:
    """The shape oauthlib's `sign_hmac_sha1_with_client` reads its secrets from."""

    def __init__(self, client_secret: str, resource_owner_secret: str) -> None:
        self.client_secret = client_secret
        self.resource_owner_secret = resource_owner_secret


def _equal(a: str, b: str | None) -> bool:
    return b is not None and hmac.compare_digest(a.encode(), b.encode())


def candidate_urls(request: RequestToVerify, public_bases: Sequence[str]) -> list[str]:
    path = request.raw_path_qs.partition("?")[0] or "/"
    bases = [f"{request.scheme}://{request.host}", *public_bases]
    return [base + path for base in bases]


def verify(
    request: RequestToVerify,
    credentials: Credentials,
    *,
    now: float,
    max_clock_skew: float,
    public_bases: Sequence[str] = PUBLIC_BASES,
) -> AuthOutcome:
    header = request.authorization
    if not header:
        return AuthOutcome.MISSING
    if header[:7].lower() == "bearer ":
        return AuthOutcome.APP_ONLY
    query = request.raw_path_qs.partition("?")[2]
    try:
        collected: list[tuple[str, str]] = oauth_signature.collect_parameters(
            uri_query=query,
            body=list(request.form_params),
            headers={"Authorization": header},
            exclude_oauth_signature=False,
        )
    except ValueError:
        return AuthOutcome.MALFORMED
    oauth = {k: v for k, v in collected if k.startswith("oauth_")}
    if any(not oauth.get(name) for name in _REQUIRED):
        return AuthOutcome.MALFORMED
    if oauth["oauth_signature_method"] != "HMAC-SHA1":
        return AuthOutcome.MALFORMED
    # Unconfigured key or token: accept any, so the emulator runs with only the secret set.
    if credentials.consumer_key is not None and not _equal(
        credentials.consumer_key, oauth["oauth_consumer_key"]
    ):
        return AuthOutcome.WRONG_CONSUMER
    if credentials.access_token is not None and not _equal(
        credentials.access_token, oauth["oauth_token"]
    ):
        return AuthOutcome.WRONG_TOKEN
    try:
        timestamp = int(oauth["oauth_timestamp"])
    except ValueError:
        return AuthOutcome.MALFORMED
    if abs(now - timestamp) > max_clock_skew:
        return AuthOutcome.CLOCK_SKEW

    if _signed_by(credentials, request, collected, oauth["oauth_signature"], public_bases):
        return AuthOutcome.OK
    return AuthOutcome.BAD_SIGNATURE


def _signed_by(
    credentials: Credentials,
    request: RequestToVerify,
    collected: list[tuple[str, str]],
    provided: str,
    public_bases: Sequence[str],
) -> bool:
    """Whether the signature is the credentials' over the URL requested or one of the public
    URLs it stands in for."""
    normalized = oauth_signature.normalize_parameters(
        [(k, v) for k, v in collected if k != "oauth_signature"]
    )
    key = _SigningKey(credentials.consumer_secret, credentials.access_token_secret or "")
    for url in candidate_urls(request, public_bases):
        try:
            base_uri = oauth_signature.base_string_uri(url)
        except ValueError:
            continue
        base_string = oauth_signature.signature_base_string(
            request.method.upper(), base_uri, normalized
        )
        expected = str(oauth_signature.sign_hmac_sha1_with_client(base_string, key))
        if _equal(expected, provided):
            return True
    return False
