"""CRC answers, delivery signatures and their verification, checked against an independent
HMAC-SHA256 computation done here with the standard library."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from catbot.signing import SIGNATURE_HEADER, crc_response_token, sign_body
from catbot.webhook.signature import SignatureVerifier, Verdict


def reference(secret: str, message: bytes) -> str:
    """X's documented format: "sha256=" + base64(HMAC-SHA256(key=secret, msg=message))."""
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode("ascii")


# CRC --------------------------------------------------------------------------------------


def test_crc_documented_vector_matches_independent_hmac() -> None:
    expected = reference("consumer-secret", b"crc-token-123")
    assert crc_response_token("consumer-secret", "crc-token-123") == expected


def test_crc_token_shape() -> None:
    token = crc_response_token("s", "t")
    assert token.startswith("sha256=")
    assert len(base64.b64decode(token.removeprefix("sha256="), validate=True)) == 32


def test_crc_depends_on_secret_and_token() -> None:
    base = crc_response_token("secret-a", "token")
    assert crc_response_token("secret-b", "token") != base
    assert crc_response_token("secret-a", "token2") != base


def test_crc_non_ascii_token_and_secret_use_utf8() -> None:
    expected = reference("sécret-ü", "tökén-☃".encode())
    assert crc_response_token("sécret-ü", "tökén-☃") == expected


@given(secret=st.text(), token=st.text())
@settings(max_examples=150, deadline=None)
def test_crc_matches_reference_for_any_strings(secret: str, token: str) -> None:
    assert crc_response_token(secret, token) == reference(secret, token.encode("utf-8"))


# Body signatures --------------------------------------------------------------------------


def test_signature_header_name() -> None:
    assert SIGNATURE_HEADER == "x-twitter-webhooks-signature"


def test_sign_body_matches_independent_hmac() -> None:
    body = b'{"for_user_id":"1000","direct_message_events":[]}'
    assert sign_body("consumer-secret", body) == reference("consumer-secret", body)


def test_sign_body_uses_raw_bytes_not_reserialised_json() -> None:
    # Whitespace differences change the signature: the raw bytes are what is signed.
    a = sign_body("k", b'{"a": 1}')
    b = sign_body("k", b'{"a":1}')
    assert a != b


@given(secret=st.text(), body=st.binary())
@settings(max_examples=150, deadline=None)
def test_sign_body_matches_reference_for_any_input(secret: str, body: bytes) -> None:
    assert sign_body(secret, body) == reference(secret, body)


# Verifier ---------------------------------------------------------------------------------

BODY = b'{"for_user_id":"1000","direct_message_events":[{"id":"1"}]}'


def test_verifier_requires_a_secret() -> None:
    with pytest.raises(ValueError):
        SignatureVerifier([])


@pytest.mark.parametrize("blank", ["", " ", "\t\n  "])
@pytest.mark.parametrize("position", [0, 1])
def test_verifier_refuses_a_blank_secret_anywhere(blank: str, position: int) -> None:
    """HMAC takes an empty key: a verifier holding one accepts anyone's signature."""
    secrets = ["a-real-consumer-secret-of-50-characters-000000000"]
    secrets.insert(position, blank)
    with pytest.raises(ValueError, match="empty"):
        SignatureVerifier(secrets)


def _warnings_for(secrets: list[str]) -> list[dict[str, object]]:
    with structlog.testing.capture_logs() as logs:
        SignatureVerifier(secrets)
    return [entry for entry in logs if entry["event"] == "short_signing_secret"]


def test_verifier_warns_about_short_secrets_without_showing_them() -> None:
    long_one = "L" * 32
    short = "s" * 31
    assert _warnings_for([long_one]) == []
    warned = _warnings_for([long_one, short])
    assert [(w["position"], w["log_level"]) for w in warned] == [(2, "warning")]
    assert short not in repr(warned) and long_one not in repr(warned)
    # Short secrets still work: the emulator and tests use made-up ones.
    assert SignatureVerifier([short]).verify(reference(short, BODY), BODY).ok


def test_verifier_accepts_correct_signature() -> None:
    verifier = SignatureVerifier(["current"])
    assert verifier.verify(reference("current", BODY), BODY) == Verdict(True, "ok")


def test_verifier_accepts_empty_body_signature() -> None:
    verifier = SignatureVerifier(["current"])
    assert verifier.verify(reference("current", b""), b"").ok


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(header: str | None) -> None:
    verdict = SignatureVerifier(["current"]).verify(header, BODY)
    assert verdict == Verdict(False, "missing")


@pytest.mark.parametrize(
    "header_of",
    [
        # no prefix at all
        lambda good: good.removeprefix("sha256="),
        # other algorithm label
        lambda good: "sha1=" + good.removeprefix("sha256="),
        # upper-case prefix
        lambda good: "SHA256=" + good.removeprefix("sha256="),
        # prefix only
        lambda good: "sha256=",
        # not base64
        lambda good: "sha256=" + "!" * 44,
        # truncated digest (not 32 bytes)
        lambda good: "sha256=" + base64.b64encode(b"x" * 31).decode(),
        # too long digest
        lambda good: "sha256=" + base64.b64encode(b"x" * 33).decode(),
        # hex digest instead of base64 (64 hex chars decode to 48 bytes)
        lambda good: "sha256=" + "ab" * 32,
        # non-ASCII characters
        lambda good: "sha256=" + "é" * 44,
        # garbage
        lambda good: "garbage",
        lambda good: " ",
    ],
)
def test_malformed_header(header_of) -> None:  # type: ignore[no-untyped-def]
    good = reference("current", BODY)
    header = header_of(good)
    verdict = SignatureVerifier(["current"]).verify(header, BODY)
    assert verdict == Verdict(False, "malformed"), header


def test_mismatch_wrong_secret() -> None:
    verifier = SignatureVerifier(["current"])
    verdict = verifier.verify(reference("other", BODY), BODY)
    assert verdict == Verdict(False, "mismatch")


def test_mismatch_tampered_body() -> None:
    verifier = SignatureVerifier(["current"])
    header = reference("current", BODY)
    assert verifier.verify(header, BODY + b" ") == Verdict(False, "mismatch")
    assert verifier.verify(header, BODY.replace(b"1000", b"1001")) == Verdict(False, "mismatch")


def test_mismatch_well_formed_but_wrong_digest() -> None:
    header = "sha256=" + base64.b64encode(bytes(32)).decode()
    assert SignatureVerifier(["current"]).verify(header, BODY) == Verdict(False, "mismatch")


def test_crc_token_is_not_a_body_signature_for_another_body() -> None:
    # A CRC answer for token T is a valid signature for body T and nothing else.
    verifier = SignatureVerifier(["current"])
    header = crc_response_token("current", "tok")
    assert verifier.verify(header, b"tok").ok
    assert not verifier.verify(header, b"tok2").ok


def test_rotation_accepts_current_and_previous_secret() -> None:
    verifier = SignatureVerifier(["new-secret", "old-secret"])
    assert verifier.verify(reference("new-secret", BODY), BODY) == Verdict(True, "ok")
    assert verifier.verify(reference("old-secret", BODY), BODY) == Verdict(True, "ok")


def test_rotation_rejects_unknown_secret() -> None:
    verifier = SignatureVerifier(["new-secret", "old-secret"])
    verdict = verifier.verify(reference("unknown-secret", BODY), BODY)
    assert verdict == Verdict(False, "mismatch")


def test_rotation_order_does_not_matter() -> None:
    a = SignatureVerifier(["one", "two"])
    b = SignatureVerifier(["two", "one"])
    for secret in ("one", "two"):
        header = reference(secret, BODY)
        assert a.verify(header, BODY).ok
        assert b.verify(header, BODY).ok


def test_verifier_accepts_any_iterable_sequence_and_copies_it() -> None:
    secrets = ["one"]
    verifier = SignatureVerifier(secrets)
    secrets.append("two")  # later mutation of the caller's list has no effect
    assert not verifier.verify(reference("two", BODY), BODY).ok
    assert SignatureVerifier(("one", "two")).verify(reference("two", BODY), BODY).ok


def test_verifier_agrees_with_sign_body() -> None:
    verifier = SignatureVerifier(["s3cr3t"])
    assert verifier.verify(sign_body("s3cr3t", BODY), BODY).ok


# Properties -------------------------------------------------------------------------------

SECRETS = ["current-secret", "previous-secret"]
REASONS = {"ok", "missing", "malformed", "mismatch"}


@given(header=st.one_of(st.none(), st.text()), body=st.binary())
@settings(max_examples=300, deadline=None)
def test_arbitrary_header_never_raises_and_never_passes(header: str | None, body: bytes) -> None:
    verifier = SignatureVerifier(SECRETS)
    verdict = verifier.verify(header, body)
    assert isinstance(verdict, Verdict)
    assert verdict.reason in REASONS
    correct = {reference(secret, body) for secret in SECRETS}
    assert verdict.ok == (header in correct)
    assert verdict.ok == (verdict.reason == "ok")


@given(
    header=st.text(alphabet=st.characters(codec="ascii"), max_size=80).map(lambda s: "sha256=" + s),
    body=st.binary(),
)
@settings(max_examples=300, deadline=None)
def test_prefixed_arbitrary_header_never_raises(header: str, body: bytes) -> None:
    verdict = SignatureVerifier(SECRETS).verify(header, body)
    assert verdict.reason in REASONS
    assert verdict.ok == (header in {reference(s, body) for s in SECRETS})


@given(digest=st.binary(min_size=32, max_size=32), body=st.binary())
@settings(max_examples=200, deadline=None)
def test_well_formed_random_digest_is_mismatch_unless_correct(digest: bytes, body: bytes) -> None:
    header = "sha256=" + base64.b64encode(digest).decode()
    verdict = SignatureVerifier(SECRETS).verify(header, body)
    correct = {reference(s, body) for s in SECRETS}
    if header in correct:
        assert verdict == Verdict(True, "ok")
    else:
        assert verdict == Verdict(False, "mismatch")


# Any secret the verifier takes: not empty, not only whitespace.
usable_secrets = st.text(min_size=1).filter(lambda s: s.strip() != "")


@given(secret=usable_secrets, body=st.binary())
@settings(max_examples=200, deadline=None)
def test_correct_signature_always_passes(secret: str, body: bytes) -> None:
    verifier = SignatureVerifier([secret])
    assert verifier.verify(reference(secret, body), body) == Verdict(True, "ok")


@given(secret=usable_secrets, body=st.binary(), other=st.binary())
@settings(max_examples=200, deadline=None)
def test_signature_of_other_body_fails(secret: str, body: bytes, other: bytes) -> None:
    verifier = SignatureVerifier([secret])
    verdict = verifier.verify(reference(secret, other), body)
    assert verdict.ok == (other == body)
