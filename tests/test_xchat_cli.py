"""`catbot xchat keygen` / `register`, doctor's X Chat check and the chat.received
subscription, as real CLI processes against a real emulator on loopback.

What X holds is read back from the emulator's own routes (the public key directory, the X
Activity API subscriptions) with the app's bearer token, and the registered public keys are
compared with what X's SDK (chatxdk) derives from the printed blob, not with catbot's code.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from chat_xdk import Chat

from catbot.config import load_settings
from catbot.xchat.identity import load_identity
from testkit.processes import (
    BOT_ID,
    CREDENTIALS,
    Daemon,
    Emulator,
    clean_env,
    free_port,
    http,
)

ROOT = Path(__file__).resolve().parents[1]
KEY_VAR = "CATBOT_XCHAT_PRIVATE_KEY"
VERSION_VAR = "CATBOT_XCHAT_KEY_VERSION"
DAY = 24 * 3600


def catbot(tmp: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    """One `python -m catbot ...` with the test credentials and nothing from the parent's
    CATBOT_* settings, run in `tmp` so no stray .env is read."""
    return subprocess.run(
        [sys.executable, "-m", "catbot", *args], cwd=tmp,
        env=clean_env({**CREDENTIALS, **(env or {})}), capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )


def keygen(tmp: Path) -> str:
    """A new key blob from the CLI: exactly one stdout line, `CATBOT_XCHAT_PRIVATE_KEY=...`."""
    result = catbot(tmp, "xchat", "keygen")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and result.stdout.endswith("\n"), result.stdout
    name, sep, value = lines[0].partition("=")
    assert (name, sep) == (KEY_VAR, "="), lines
    assert value not in result.stderr
    return value


def register(tmp: Path, api_base: str, key: str | None, env_file: Path | None = None,
             **env: str) -> subprocess.CompletedProcess[str]:
    return catbot(tmp, "xchat", "register", "--api-base", api_base,
                  "--env-file", str(env_file or tmp / "none.env"),
                  env={**({KEY_VAR: key} if key is not None else {}), **env})


def printed_version(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.fullmatch(rf"{VERSION_VAR}=([0-9]+)\n", result.stdout)
    assert match, result.stdout
    return match.group(1)


def sdk_public_points(blob_b64: str) -> tuple[bytes, bytes]:
    """The identity and signing public points of a blob, as X's SDK derives them."""
    chat = Chat()
    chat.import_keys(base64.b64decode(blob_b64))
    keys = chat.get_public_keys()
    return base64.b64decode(keys.identity), base64.b64decode(keys.signing)


def spki_point(spki_b64: str) -> bytes:
    # A P-256 SubjectPublicKeyInfo ends with the 65-byte uncompressed point.
    return base64.b64decode(spki_b64)[-65:]


class X:
    """The emulator read as the app (bearer token), the way an operator's script would."""

    def __init__(self, emulator: Emulator) -> None:
        self.base = emulator.base
        basic = base64.b64encode(
            f"{CREDENTIALS['CATBOT_X_CONSUMER_KEY']}:"
            f"{CREDENTIALS['CATBOT_X_CONSUMER_SECRET']}".encode()
        ).decode()
        status, body, _ = http(
            "POST", f"{self.base}/oauth2/token", raw=b"grant_type=client_credentials",
            headers={"Authorization": f"Basic {basic}",
                     "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200, body
        self.auth = {"Authorization": f"Bearer {body['access_token']}"}

    def call(self, method: str, path: str) -> Any:
        status, body, _ = http(method, self.base + path, headers=self.auth)
        assert status == 200, (method, path, status, body)
        return body

    def public_keys(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.call("GET", f"/2/users/{BOT_ID}/public_keys").get(
            "data", [])
        return rows

    def subscriptions(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.call(
            "GET", "/2/activity/subscriptions?max_results=100").get("data", [])
        return listed

    def subscribed(self, webhook_id: str) -> set[str]:
        return {s["event_type"] for s in self.subscriptions()
                if s["filter"]["user_id"] == BOT_ID and s["webhook_id"] == webhook_id}


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path, free_port(), None, api="activity",
                   extra_env={"CATBOT_X_API": "activity"})
    emu.start()
    yield emu
    emu.stop()
    print(emu.output()[-4000:])


# --- keygen ----------------------------------------------------------------------------


def test_keygen_prints_one_secret_line_and_the_guidance_apart(tmp_path: Path) -> None:
    first, second = keygen(tmp_path), keygen(tmp_path)
    assert first != second
    for blob in (first, second):
        assert len(base64.b64decode(blob, validate=True)) == 64
        identity = load_identity(blob, user_id=BOT_ID, key_version=None)
        assert spki_point(identity.public_key) == sdk_public_points(blob)[0]

    guidance = catbot(tmp_path, "xchat", "keygen").stderr
    assert "secret" in guidance and "catbot xchat register" in guidance
    assert VERSION_VAR in guidance

    for command in (("xchat", "--help"), ("xchat", "keygen", "--help"),
                    ("xchat", "register", "--help")):
        shown = catbot(tmp_path, *command)
        assert shown.returncode == 0 and shown.stdout.startswith("usage: catbot xchat"), command
    assert "--api-base" in catbot(tmp_path, "xchat", "register", "--help").stdout


# --- register --------------------------------------------------------------------------


def test_register_writes_once_however_often_it_runs(
    tmp_path: Path, emulator: Emulator
) -> None:
    x = X(emulator)
    key = keygen(tmp_path)
    assert x.public_keys() == []

    runs = [register(tmp_path, emulator.base, key) for _ in range(3)]
    # The keygen line appended to an env file as it is works the same.
    env_file = tmp_path / "catbot-x.env"
    env_file.write_text(f"{KEY_VAR}={key}\n")
    runs.append(register(tmp_path, emulator.base, None, env_file=env_file))
    versions = {printed_version(run) for run in runs}
    assert len(versions) == 1, versions
    version = versions.pop()
    assert "Registered" in runs[0].stderr and "no key write spent" not in runs[0].stderr
    assert all("no key write spent" in run.stderr for run in runs[1:])
    assert all(key not in run.stdout + run.stderr for run in runs)

    [row] = x.public_keys()
    identity_point, signing_point = sdk_public_points(key)
    assert row["public_key_version"] == version
    assert spki_point(row["public_key"]) == identity_point
    assert spki_point(row["signing_public_key"]) == signing_point

    # X allows 3 key writes a day (the emulator's figure): the four runs above spent one,
    # so two more keys fit and a third is refused, with when to try again.
    for _ in range(2):
        printed_version(register(tmp_path, emulator.base, keygen(tmp_path)))
    before = time.time()
    refused = register(tmp_path, emulator.base, keygen(tmp_path))
    assert refused.returncode == 1 and refused.stdout == ""
    assert "429" in refused.stderr and "per 24 hours" in refused.stderr
    when = re.search(r"try again after (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", refused.stderr)
    assert when, refused.stderr
    retry_at = datetime.strptime(when.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    # The window opened with the first write, at most a minute or so before `before`.
    assert before + DAY - 600 <= retry_at.timestamp() <= time.time() + DAY + 60
    assert len(x.public_keys()) == 3

    # The key X already has still registers: no write is needed for it.
    assert printed_version(register(tmp_path, emulator.base, key)) == version


def test_register_names_a_missing_or_unusable_key(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: nothing may be asked

    missing = register(tmp_path, closed, None)
    assert missing.returncode == 2 and missing.stdout == ""
    assert KEY_VAR in missing.stderr and "catbot xchat keygen" in missing.stderr

    bad_value = "not%base64%secret"
    bad = register(tmp_path, closed, bad_value)
    assert bad.returncode == 2 and bad.stdout == ""
    assert KEY_VAR in bad.stderr and "base64" in bad.stderr
    assert bad_value not in bad.stderr

    short = register(tmp_path, closed, base64.b64encode(bytes(range(32))).decode())
    assert short.returncode == 2 and KEY_VAR in short.stderr and "64 bytes" in short.stderr

    unreachable = register(tmp_path, closed, keygen(tmp_path))
    assert unreachable.returncode == 1 and unreachable.stdout == ""
    assert closed in unreachable.stderr and "again" in unreachable.stderr


# --- doctor and the chat.received subscription -----------------------------------------


@dataclass
class Bot:
    tmp: Path
    emulator: Emulator
    daemon: Daemon

    def env(self, **extra: str) -> dict[str, str]:
        return {"CATBOT_X_API": "activity", "CATBOT_X_API_BASE": self.emulator.base, **extra}

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return catbot(self.tmp, *args, "--env-file", str(self.tmp / "none.env"),
                      env=self.env(**env))

    def doctor(self, **env: str) -> tuple[int, dict[str, str]]:
        """doctor's exit code and its lines by check name (mark + detail + fix)."""
        result = self.run("doctor", **env)
        lines: dict[str, str] = {}
        name = ""
        for line in result.stdout.splitlines():
            head = re.match(r"([✓✗!-]) ([^:]+): ", line)
            if head:
                name = head.group(2)
                lines[name] = line
            elif name:
                lines[name] += "\n" + line
        return result.returncode, lines


@pytest.fixture
def bot(tmp_path: Path, emulator: Emulator) -> Iterator[Bot]:
    # The daemon only answers X's CRC here: X Chat's settings matter to the commands.
    daemon = Daemon(tmp_path, emulator.port, free_port(), free_port(),
                    {"CATBOT_X_API": "activity"})
    daemon.start()
    yield Bot(tmp_path, emulator, daemon)
    daemon.stop()
    print(daemon.output()[-4000:])


def test_doctor_checks_the_key_and_ensure_subscribes_chat_received(bot: Bot) -> None:
    x = X(bot.emulator)
    key = keygen(bot.tmp)
    version = printed_version(register(bot.tmp, bot.emulator.base, key))
    on = {KEY_VAR: key, VERSION_VAR: version}

    # X Chat off: DMs only, and doctor says X Chat is off without failing.
    first = bot.run("webhooks", "ensure", bot.daemon.webhook, "--json")
    assert first.returncode == 0, first.stderr
    hook = x.call("GET", "/2/webhooks")["data"][0]["id"]
    assert x.subscribed(hook) == {"dm.received"}
    code, checks = bot.doctor()
    assert code == 0, checks
    assert checks["X Chat"].startswith("- X Chat: off")

    # Turned on: ensure adds chat.received for the bot, on the same webhook.
    second = bot.run("webhooks", "ensure", bot.daemon.webhook, **on)
    assert second.returncode == 0, second.stderr
    assert "subscribed the bot account to chat.received" in second.stdout
    assert x.subscribed(hook) == {"dm.received", "chat.received"}

    code, checks = bot.doctor(**on)
    assert code == 0, checks
    assert checks["X Chat"].startswith("✓ X Chat:") and version in checks["X Chat"]
    assert "chat.received" in checks["subscription"]
    assert "X Chat delivery" not in checks
    assert all(key not in line for line in checks.values())

    # Another key than the one X has: doctor fails and says to register it.
    other = keygen(bot.tmp)
    code, checks = bot.doctor(**{**on, KEY_VAR: other})
    assert code == 1
    assert checks["X Chat"].startswith("✗ X Chat:") and "catbot xchat register" in checks["X Chat"]
    assert other not in checks["X Chat"]

    # The right key under another version: doctor names the variable and the right value.
    wrong = str(int(version) + 1)
    code, checks = bot.doctor(**{**on, VERSION_VAR: wrong})
    assert code == 1 and checks["X Chat"].startswith("✗ X Chat:")
    assert VERSION_VAR in checks["X Chat"] and f"{VERSION_VAR}={version}" in checks["X Chat"]

    # Half the settings: the daemon would not start, doctor says which one is missing.
    code, checks = bot.doctor(**{KEY_VAR: key})
    assert code == 1 and checks["X Chat"].startswith("✗ X Chat:")
    assert f"{VERSION_VAR}: missing" in checks["X Chat"]

    # chat.received gone at X: the subscription check names it; `subscriptions add` mends.
    [chat_sub] = [s for s in x.subscriptions() if s["event_type"] == "chat.received"]
    assert x.call("DELETE", f"/2/activity/subscriptions/{chat_sub['subscription_id']}")
    code, checks = bot.doctor(**on)
    assert code == 1 and checks["subscription"].startswith("✗ subscription:")
    assert "chat.received" in checks["subscription"]
    assert bot.run("subscriptions", "add", **on).returncode == 0
    assert x.subscribed(hook) == {"dm.received", "chat.received"}
    assert bot.doctor(**on)[0] == 0

    # Account Activity flavours never get chat.received: a warning, the key check still runs.
    code, checks = bot.doctor(**{**on, "CATBOT_X_API": "v2"})
    assert checks["X Chat delivery"].startswith("! X Chat delivery:")
    assert "CATBOT_X_API=activity" in checks["X Chat delivery"]
    assert checks["X Chat"].startswith("✓ X Chat:")

    # Mention replies too: 4 event types, but the emulator's tier allows 3 subscriptions.
    # The private ones are there; the refusal names what is missing and how to make room.
    limited = bot.run("webhooks", "ensure", bot.daemon.webhook,
                      CATBOT_REPLY_TO_MENTIONS="true", **on)
    assert limited.returncode == 1
    assert "SubscriptionLimitExceeded" in limited.stderr
    assert "not subscribed: post.reply.create" in limited.stderr
    assert "--max-subscriptions" in limited.stderr
    assert x.subscribed(hook) == {"dm.received", "chat.received", "post.mention.create"}

    # From nothing, with everything on: private messages come first within the limit.
    assert bot.run("webhooks", "delete", hook).returncode == 0
    assert x.subscriptions() == []
    fresh = bot.run("webhooks", "ensure", bot.daemon.webhook,
                    CATBOT_REPLY_TO_MENTIONS="true", **on)
    assert fresh.returncode == 1 and "not subscribed: post.reply.create" in fresh.stderr
    [new_hook] = [h["id"] for h in x.call("GET", "/2/webhooks")["data"]]
    assert x.subscribed(new_hook) == {"dm.received", "chat.received", "post.mention.create"}


# --- Kubernetes: where the two settings go ----------------------------------------------


def _data(path: Path, section: str, *, uncomment: bool) -> dict[str, str]:
    text = path.read_text()
    if uncomment:
        text = re.sub(r"(?m)^(\s*)# (CATBOT_XCHAT_[A-Z_]+: )", r"\1\2", text)
    [doc] = [d for d in yaml.safe_load_all(text) if d]
    return {k: str(v) for k, v in doc[section].items()}


def test_the_manifests_keep_xchat_off_until_its_two_lines_are_filled_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = ROOT / "deploy" / "k8s" / "base" / "secret.example.yaml"
    configmap = ROOT / "deploy" / "k8s" / "base" / "configmap.yaml"
    for name in (*CREDENTIALS, KEY_VAR, VERSION_VAR):
        monkeypatch.delenv(name, raising=False)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)

    shipped = {**_data(configmap, "data", uncomment=False),
               **_data(secret, "stringData", uncomment=False)}
    assert KEY_VAR not in shipped and VERSION_VAR not in shipped

    # Uncommented, the key sits in the Secret and the version in the ConfigMap (the pod gets
    # both through envFrom), under names catbot reads: X Chat is then on.
    in_secret = _data(secret, "stringData", uncomment=True)
    in_configmap = _data(configmap, "data", uncomment=True)
    assert set(in_secret) - set(shipped) == {KEY_VAR}
    assert set(in_configmap) - set(shipped) == {VERSION_VAR}
    assert in_secret[KEY_VAR] == "REPLACE_ME"
    monkeypatch.setenv(KEY_VAR, keygen(tmp_path))
    monkeypatch.setenv(VERSION_VAR, in_configmap[VERSION_VAR])
    settings = load_settings(env_file=None)
    assert settings.xchat_enabled
    identity = settings.xchat_identity()
    assert identity is not None and identity.key_version == in_configmap[VERSION_VAR]
