"""`catbot webhooks`, `catbot subscriptions` and `catbot doctor` against the emulator.

The emulator starts with no webhook; the commands register, inspect and remove it through
X's management routes, for each API flavour, as real processes on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catbot.facts import load_corpus
from testkit.processes import CREDENTIALS, Daemon, Emulator, clean_env, free_port, http, wait_for

FRIEND = "777"
ENV_NAME = "catbotenv"
CORPUS = {fact.text for fact in load_corpus()}


class Setup:
    def __init__(self, tmp: Path, api: str, daemon_env: dict[str, str] | None = None) -> None:
        self.api = api
        self.emulator = Emulator(tmp, free_port(), None, api=api,
                                 extra_env={"CATBOT_X_API": api, "CATBOT_X_ENV_NAME": ENV_NAME})
        self.env = {**CREDENTIALS, "CATBOT_X_API": api, "CATBOT_X_ENV_NAME": ENV_NAME,
                    "CATBOT_X_API_BASE": self.emulator.base}
        self.daemon = Daemon(tmp, self.emulator.port, free_port(), free_port(),
                             {**self.env, **(daemon_env or {})})
        self.tmp = tmp

    def catbot(self, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "catbot", *args, "--env-file", str(self.tmp / "none.env")],
            env=clean_env({**self.env, **(env or {})}), capture_output=True, text=True,
            timeout=60, stdin=subprocess.DEVNULL,
        )

    def json(self, *args: str) -> Any:
        result = self.catbot(*args, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)


@pytest.fixture(params=["v2", "activity", "v1.1"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path, request.param)
    s.emulator.start()
    s.daemon.start()
    yield s
    s.daemon.stop()
    s.emulator.stop()
    print(s.daemon.output()[-4000:], s.emulator.output()[-4000:])


def test_ensure_list_subscriptions_doctor_delete(setup: Setup) -> None:
    url = setup.daemon.webhook
    assert setup.json("webhooks", "list") == {"webhooks": []}

    first = setup.json("webhooks", "ensure", url)
    assert first["created"] is True and first["webhook"]["valid"] is True
    hook_id = first["webhook"]["id"]
    [listed] = setup.json("webhooks", "list")["webhooks"]
    assert listed["id"] == hook_id and listed["url"] == url and listed["valid"] is True
    # At X: exactly this webhook, subscribed for the bot.
    [at_x] = setup.emulator.control("GET", "webhooks")["webhooks"]
    assert at_x["url"] == url and at_x["valid"]

    again = setup.json("webhooks", "ensure", url)
    assert again["created"] is False and again["webhook"]["id"] == hook_id

    subs = setup.json("subscriptions", "list")["subscriptions"]
    assert [s["user_id"] for s in subs] == ["1000"]

    # The whole loop works through the registered webhook.
    setup.emulator.dm(FRIEND, "hello")
    reply = wait_for(lambda: setup.emulator.replies_to(FRIEND), what="a reply")
    assert reply[0] in CORPUS

    doctor = setup.catbot("doctor", "--url", url)
    assert doctor.returncode == 0, doctor.stdout
    assert doctor.stdout.count("✓") == 5

    assert setup.json("subscriptions", "remove")["subscribed"] is False
    assert setup.json("subscriptions", "list")["subscriptions"] == []
    doctor = setup.catbot("doctor", "--url", url)
    assert doctor.returncode == 1
    assert "✗ subscription" in doctor.stdout and "catbot subscriptions add" in doctor.stdout
    setup.json("subscriptions", "add")
    assert setup.catbot("doctor", "--url", url).returncode == 0

    assert setup.json("webhooks", "revalidate", hook_id)["valid"] is True
    assert setup.json("webhooks", "delete", hook_id)["deleted"] is True
    assert setup.json("webhooks", "list") == {"webhooks": []}
    # Nothing is left behind at X: no subscription outlives its webhook.
    assert setup.emulator.control("GET", "subscriptions") == {"subscriptions": []}
    doctor = setup.catbot("doctor", "--url", url)
    assert doctor.returncode == 1 and "catbot webhooks ensure" in doctor.stdout


def test_limit_held_by_another_url_is_refused_unless_replace(setup: Setup) -> None:
    # Same daemon, another spelling of its URL: to X, a different webhook.
    mine = setup.daemon.webhook
    other = mine.replace("127.0.0.1", "localhost")
    setup.json("webhooks", "ensure", other)
    refused = setup.catbot("webhooks", "ensure", mine)
    assert refused.returncode == 1
    assert "--replace" in refused.stderr and other in refused.stderr
    assert [h["url"] for h in setup.json("webhooks", "list")["webhooks"]] == [other]

    replaced = setup.json("webhooks", "ensure", mine, "--replace")
    assert [w["url"] for w in replaced["replaced"]] == [other]
    assert [h["url"] for h in setup.json("webhooks", "list")["webhooks"]] == [mine]


def test_revalidate_and_doctor_report_a_dead_webhook(setup: Setup) -> None:
    url = setup.daemon.webhook
    hook_id = setup.json("webhooks", "ensure", url)["webhook"]["id"]
    setup.daemon.stop()
    result = setup.catbot("webhooks", "revalidate", hook_id)
    assert result.returncode == 1
    doctor = setup.catbot("doctor", "--url", url)
    assert doctor.returncode == 1
    assert "✗ CRC" in doctor.stdout and "catbot run" in doctor.stdout


@pytest.mark.parametrize("api", ["v2"])
def test_doctor_names_the_secret_when_the_crc_answer_is_wrong(tmp_path: Path, api: str) -> None:
    s = Setup(tmp_path, api, daemon_env={"CATBOT_X_CONSUMER_SECRET": "not-the-app-secret"})
    s.emulator.start()
    s.daemon.start()
    try:
        ensure = s.catbot("webhooks", "ensure", s.daemon.webhook)
        assert ensure.returncode == 1
        assert "CATBOT_X_CONSUMER_SECRET" in ensure.stderr
        doctor = s.catbot("doctor", "--url", s.daemon.webhook)
        assert doctor.returncode == 1
        assert "✗ CRC: the CRC answer is wrong" in doctor.stdout
        assert "CATBOT_X_CONSUMER_SECRET" in doctor.stdout
    finally:
        s.daemon.stop()
        s.emulator.stop()


def test_bad_credentials_fail_doctor_with_a_fix(tmp_path: Path) -> None:
    s = Setup(tmp_path, "v2")
    s.emulator.start()
    try:
        doctor = s.catbot("doctor", env={"CATBOT_X_ACCESS_TOKEN_SECRET": "wrong"})
        assert doctor.returncode == 1
        assert "✗ credentials" in doctor.stdout and "fix:" in doctor.stdout
        missing = s.catbot("webhooks", "list", env={"CATBOT_X_CONSUMER_KEY": ""})
        assert missing.returncode == 2 and "CATBOT_X_CONSUMER_KEY" in missing.stderr
    finally:
        s.emulator.stop()


def test_readiness_and_metrics_know_the_crc_and_the_webhook(tmp_path: Path) -> None:
    s = Setup(tmp_path, "v2")
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhook/twitter"
    s.daemon = Daemon(tmp_path, s.emulator.port, port, free_port(),
                      {**s.env, "CATBOT_PUBLIC_URL": url, "CATBOT_WEBHOOK_CHECK_SECONDS": "0.3"})
    s.emulator.start()
    s.daemon.start()
    try:
        status, body, _ = http("GET", s.daemon.internal + "/readyz")
        assert status == 200 and body["last_crc_at"] is None
        s.json("webhooks", "ensure", url)  # X's CRC reaches the daemon
        ready = wait_for(
            lambda: (b := http("GET", s.daemon.internal + "/readyz")[1])["webhook_valid"] and b,
            what="the daemon to see its webhook valid",
        )
        assert ready["status"] == "ready" and ready["last_crc_at"]
        metrics = s.daemon.metrics()
        assert metrics["catbot_webhook_valid"] == 1
        assert metrics["catbot_last_crc_timestamp_seconds"] > 0
        s.json("webhooks", "delete", s.json("webhooks", "list")["webhooks"][0]["id"])
        wait_for(lambda: s.daemon.metrics()["catbot_webhook_valid"] == 0,
                 what="the daemon to notice the webhook is gone")
    finally:
        s.daemon.stop()
        s.emulator.stop()
