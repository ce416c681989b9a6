"""The bot's X Chat identity: keygen output, loading the secret setting, the registration body
rebuilt from the blob alone, and the "does X have this key" check for `doctor`."""

from __future__ import annotations

import base64
import hashlib

import chat_xdk
import pytest

from catbot.xchat.errors import IdentityError
from catbot.xchat.identity import (
    KEY_VERSION_SETTING,
    PRIVATE_KEY_SETTING,
    NewIdentity,
    check_registered,
    generate_identity,
    load_identity,
)
from catbot.xchat.wire import PublicKeyRecord


@pytest.fixture
def fresh() -> NewIdentity:
    return generate_identity()


def test_keygen_prints_the_sdk_blob_as_the_setting(fresh: NewIdentity) -> None:
    line = fresh.setting_line()
    name, _, value = line.partition("=")
    assert name == PRIVATE_KEY_SETTING
    blob = base64.b64decode(value, validate=True)
    assert len(blob) == 64
    # The same blob loads into a fresh SDK instance and is the same identity.
    chat = chat_xdk.Chat()
    chat.import_keys(blob)
    assert chat.matches_registered_key(fresh.registration.public_key)
    assert value not in repr(fresh)


def test_registration_rebuilt_from_the_blob_equals_what_keygen_made(fresh: NewIdentity) -> None:
    identity = load_identity(fresh.private_key, user_id="1000", key_version=None)
    rebuilt = identity.registration_payload(version=fresh.registration.version)
    assert rebuilt == fresh.registration


def test_the_registration_body_is_what_x_documents(fresh: NewIdentity) -> None:
    body = load_identity(fresh.private_key, user_id="1000", key_version=None) \
        .registration_payload().body()
    # x-api/chat/add-public-key
    assert set(body) == {"public_key", "version", "generate_version"}
    assert set(body["public_key"]) == {
        "public_key", "signing_public_key", "identity_public_key_signature",
        "signing_public_key_signature", "public_key_fingerprint", "registration_method",
    }
    assert body["generate_version"] is True and body["version"].isdigit()
    key = body["public_key"]
    checker = chat_xdk.Chat()
    assert checker.verify_key_binding(
        key["public_key"], key["signing_public_key"], key["identity_public_key_signature"]
    )
    # The reverse binding: the identity key signs the signing key's SPKI.
    assert checker.verify(key["public_key"],
                          base64.b64decode(key["signing_public_key_signature"]),
                          base64.b64decode(key["signing_public_key"]))
    # The fingerprint is SHA-256 of the identity key's SPKI, base64url without padding.
    digest = hashlib.sha256(base64.b64decode(key["public_key"])).digest()
    assert key["public_key_fingerprint"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_whitespace_around_the_secret_is_tolerated(fresh: NewIdentity) -> None:
    wrapped = "\n  " + fresh.private_key[:20] + "\n" + fresh.private_key[20:] + "  \n"
    identity = load_identity(wrapped, user_id="1000", key_version="17")
    assert identity.public_key == fresh.registration.public_key


@pytest.mark.parametrize(("value", "words"), [
    ("", "empty"),
    ("not base64 at all!", "base64"),
    (base64.b64encode(b"x" * 32).decode(), "got 32"),
    (base64.b64encode(b"x" * 65).decode(), "got 65"),
])
def test_a_bad_secret_names_the_setting_and_never_echoes_it(value: str, words: str) -> None:
    with pytest.raises(IdentityError) as caught:
        load_identity(value, user_id="1000", key_version="1")
    message = str(caught.value)
    assert caught.value.setting == PRIVATE_KEY_SETTING
    assert message.startswith(PRIVATE_KEY_SETTING)
    assert words in message
    if value:
        assert value not in message


def test_a_blob_the_sdk_refuses_is_reported() -> None:
    # 64 bytes of 0xff: not a valid P-256 scalar, so the SDK cannot derive public keys.
    value = base64.b64encode(b"\xff" * 64).decode()
    with pytest.raises(IdentityError) as caught:
        load_identity(value, user_id="1000", key_version="1")
    assert caught.value.setting == PRIVATE_KEY_SETTING
    assert value not in str(caught.value)


@pytest.mark.parametrize("version", ["", "v1", "1.5", "12345678901234567890123"])
def test_a_bad_key_version_names_its_setting(fresh: NewIdentity, version: str) -> None:
    with pytest.raises(IdentityError) as caught:
        load_identity(fresh.private_key, user_id="1000", key_version=version)
    assert caught.value.setting == KEY_VERSION_SETTING


def test_a_bad_user_id_is_refused(fresh: NewIdentity) -> None:
    with pytest.raises(IdentityError):
        load_identity(fresh.private_key, user_id="bot", key_version="1")


def test_an_identity_without_version_cannot_run(fresh: NewIdentity) -> None:
    identity = load_identity(fresh.private_key, user_id="1000", key_version=None)
    with pytest.raises(IdentityError) as caught:
        identity.new_chat()
    assert caught.value.setting == KEY_VERSION_SETTING


def test_the_secret_is_not_in_repr_or_str(fresh: NewIdentity) -> None:
    identity = load_identity(fresh.private_key, user_id="1000", key_version="9")
    raw = base64.b64decode(fresh.private_key)
    for text in (repr(identity), str(identity), f"{identity}"):
        assert fresh.private_key not in text
        assert raw.hex() not in text
        assert identity.fingerprint in text


def test_the_seal_key_depends_on_the_secret(fresh: NewIdentity) -> None:
    one = load_identity(fresh.private_key, user_id="1000", key_version="1")
    again = load_identity(fresh.private_key, user_id="2000", key_version="2")
    other = load_identity(generate_identity().private_key, user_id="1000", key_version="1")
    assert len(one.seal_key()) == 32
    assert one.seal_key() == again.seal_key()
    assert one.seal_key() != other.seal_key()


# --- doctor: does X have this key? -------------------------------------------------------


def records_for(identity_private_key: str, version: str) -> PublicKeyRecord:
    identity = load_identity(identity_private_key, user_id="1000", key_version=version)
    return identity.record()


def test_the_registered_key_under_the_configured_version_is_ok(fresh: NewIdentity) -> None:
    identity = load_identity(fresh.private_key, user_id="1000", key_version="1733889755256")
    older = records_for(generate_identity().private_key, "1700000000000")
    check = check_registered(identity, [older, identity.record()])
    assert check.ok
    assert check.registered_version == "1733889755256"
    assert check.other_versions == ("1700000000000",)
    assert "1733889755256" in check.describe()


def test_a_version_mismatch_is_reported(fresh: NewIdentity) -> None:
    configured = load_identity(fresh.private_key, user_id="1000", key_version="5")
    at_x = load_identity(fresh.private_key, user_id="1000", key_version="6").record()
    check = check_registered(configured, [at_x])
    assert check.registered and not check.ok
    assert KEY_VERSION_SETTING in check.describe() and "6" in check.describe()


def test_an_unregistered_key_is_reported(fresh: NewIdentity) -> None:
    identity = load_identity(fresh.private_key, user_id="1000", key_version="5")
    check = check_registered(identity, [records_for(generate_identity().private_key, "4")])
    assert not check.registered and not check.ok
    assert "catbot xchat register" in check.describe()
    assert not check_registered(identity, []).registered


def test_the_identity_key_alone_does_not_match(fresh: NewIdentity) -> None:
    identity = load_identity(fresh.private_key, user_id="1000", key_version="5")
    stranger = records_for(generate_identity().private_key, "5")
    half = PublicKeyRecord("1000", "5", identity.public_key, stranger.signing_public_key,
                           stranger.identity_public_key_signature)
    assert not check_registered(identity, [half]).registered


def test_base64_spelling_differences_still_match(fresh: NewIdentity) -> None:
    identity = load_identity(fresh.private_key, user_id="1000", key_version="5")
    unpadded = PublicKeyRecord(
        "1000", "5",
        identity.public_key.rstrip("=").replace("+", "-").replace("/", "_"),
        identity.signing_public_key.rstrip("="),
        identity.identity_public_key_signature,
    )
    assert check_registered(identity, [unpadded]).ok
