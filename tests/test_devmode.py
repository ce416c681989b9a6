"""`catbot dev` as a real process: the emulator plays X, pyngrok drives the fake ngrok.

The emulator starts with no webhook: dev mode registers one through X's management routes,
and the emulator's CRC challenges and deliveries travel through the fake tunnel.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from catbot.commands.devmode import (
    _READY,
    _STATE_FILE_NAME,
    _dev_settings,
    _DevMode,
    _DevOptions,
    _DevRecord,
    _DevState,
    _pid_alive,
)
from catbot.config import ConfigError, credentials_from, load_settings
from catbot.x.management import XApiError
from catbot.x.registration import RegistrationError
from testkit.processes import (
    BOT_ID,
    CREDENTIALS,
    Emulator,
    Process,
    clean_env,
    free_port,
    wait_for,
)

FAKE_NGROK = Path(__file__).parent / "fake_ngrok" / "ngrok"
APIS = ["v2", "activity", "v1.1"]
ENV_NAME = "catbotdev"
FRIEND = "4242"


class BareEmulator(Emulator):
    """The emulator with no start-up webhook: registration is dev mode's job."""

    def __init__(self, tmp: Path, api: str, *extra_args: str) -> None:
        port = free_port()
        super().__init__(tmp, port, "http://127.0.0.1/unused", api=api,
                         extra_env={"CATBOT_X_ENV_NAME": ENV_NAME})
        self.args = ["emulator", "--host", "127.0.0.1", "--port", str(port), "--api", api,
                     *extra_args]

    def webhooks(self) -> list[dict[str, Any]]:
        hooks: list[dict[str, Any]] = self.control("GET", "webhooks")["webhooks"]
        return hooks


class Dev(Process):
    """`python -m catbot dev --api-base <emulator>` with the fake ngrok."""

    def __init__(self, tmp: Path, api: str, api_base: str,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.tmp = tmp
        self.port, self.metrics_port = free_port(), free_port()
        self.ngrok_log = tmp / "fake-ngrok.jsonl"
        env = {
            **CREDENTIALS,
            "CATBOT_X_API": api,
            "CATBOT_PORT": str(self.port),
            "CATBOT_METRICS_PORT": str(self.metrics_port),
            "CATBOT_STORE_URL": f"sqlite:///{tmp / 'catbot.db'}",
            "CATBOT_COOLDOWN_SECONDS": "0",
            "CATBOT_SHUTDOWN_GRACE_SECONDS": "2",
            "CATBOT_RETRY_INITIAL_SECONDS": "0.05",
            "PYNGROK_NGROK_PATH": str(FAKE_NGROK),
            "FAKE_NGROK_LOG": str(self.ngrok_log),
            # Neither the user's ngrok config nor their token: a private home.
            "HOME": str(tmp / "home"),
            **({"CATBOT_X_ENV_NAME": ENV_NAME} if api == "v1.1" else {}),
            **(extra_env or {}),
        }
        env = clean_env(env)
        for name in ("NGROK_AUTHTOKEN", "XDG_CONFIG_HOME", "FAKE_NGROK_FAIL",
                     "FAKE_NGROK_LATENCY"):
            if name not in (extra_env or {}):
                env.pop(name, None)
        super().__init__("dev", ["dev", "--api-base", api_base,
                                 "--env-file", str(tmp / "none.env")],
                         env, tmp / f"dev-{self.port}.log")

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(lambda: _READY in self.output() or not self.alive, timeout=timeout,
                 what="catbot dev to be ready")
        assert _READY in self.output(), self.output()

    def finish(self, timeout: float = 20.0) -> int:
        """The exit code of a run that stops by itself."""
        return self.wait(timeout)

    @property
    def tunnel_url(self) -> str:
        match = re.search(r"tunnel (http://127\.0\.0\.1:\d+) ->", self.output())
        assert match, self.output()
        return match.group(1)

    @property
    def webhook_url(self) -> str:
        return self.tunnel_url + "/webhook/twitter"

    def ngrok_events(self) -> list[dict[str, Any]]:
        if not self.ngrok_log.exists():
            return []
        return [json.loads(line) for line in self.ngrok_log.read_text().splitlines() if line]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Every process a test starts is stopped at its end, and its output shown on failure."""
    started: list[Process] = []
    yield started
    for proc in reversed(started):
        proc.stop()
    for proc in started:
        print(f"----- {proc.name} -----\n{proc.output()[-5000:]}")


def start_emulator(tmp: Path, processes: list[Process], api: str, *args: str) -> BareEmulator:
    emulator = BareEmulator(tmp, api, *args)
    processes.append(emulator)
    emulator.start()
    return emulator


def start_dev(tmp: Path, processes: list[Process], api: str, emulator: BareEmulator | None,
              **env: str) -> Dev:
    dev = Dev(tmp, api, emulator.base if emulator else "http://127.0.0.1:9", env)
    processes.append(dev)
    dev.start()
    return dev


def refuses(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) != 0


def assert_subscribed(hook: dict[str, Any], api: str) -> None:
    subs = hook["subscriptions"]
    assert any(s["user_id"] == BOT_ID for s in subs), subs
    if api == "activity":
        assert any(s["event_type"] == "dm.received" for s in subs), subs


def assert_answered(emulator: BareEmulator, text: str, count: int) -> None:
    answer = emulator.dm(FRIEND, text)
    assert [d["status"] for d in answer["deliveries"]] == [200], answer
    wait_for(lambda: len(emulator.replies_to(FRIEND)) >= count, timeout=15,
             what=f"{count} replies to {FRIEND}")


def assert_cleaned_up(dev: Dev, emulator: BareEmulator, hook_id: str) -> None:
    assert emulator.webhooks() == []
    out = dev.output()
    assert f"deleted webhook {hook_id}" in out and "tunnel closed" in out
    deleted = [e["public_url"] for e in dev.ngrok_events() if e["event"] == "tunnel_deleted"]
    assert dev.tunnel_url in deleted
    assert refuses(dev.tunnel_url)
    assert not (dev.tmp / _STATE_FILE_NAME).exists()


# --- end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_dev_registers_the_tunnel_answers_and_cleans_up(
    tmp_path: Path, processes: list[Process], api: str
) -> None:
    emulator = start_emulator(tmp_path, processes, api)
    dev = start_dev(tmp_path, processes, api, emulator)
    dev.wait_ready()

    [hook] = emulator.webhooks()
    assert hook["url"] == dev.webhook_url and hook["valid"]
    assert_subscribed(hook, api)
    out = dev.output()
    assert f"registered webhook {hook['id']}" in out and "subscribed the bot account" in out
    assert f"http://127.0.0.1:{dev.metrics_port}/metrics" in out
    assert "DM the bot account from another account" in out
    # The CRC really came through the tunnel.
    assert any(e["event"] == "request" and e["status"] == 200 for e in dev.ngrok_events())
    assert (tmp_path / _STATE_FILE_NAME).exists()

    assert_answered(emulator, "hello from the tunnel", 1)

    dev.signal(signal.SIGINT)
    assert dev.wait(20) == 0
    assert_cleaned_up(dev, emulator, hook["id"])


@pytest.mark.parametrize("api", APIS)
def test_a_second_run_recovers_from_a_crashed_one(
    tmp_path: Path, processes: list[Process], api: str
) -> None:
    emulator = start_emulator(tmp_path, processes, api)
    first = start_dev(tmp_path, processes, api, emulator)
    first.wait_ready()
    [stale] = emulator.webhooks()
    first.signal(signal.SIGKILL)
    first.wait(5)
    # The crash left the webhook (the tier's only one) behind, and no ngrok agent.
    assert [h["id"] for h in emulator.webhooks()] == [stale["id"]]
    wait_for(lambda: any(e["event"] == "exit" and e["reason"] == "parent gone"
                         for e in first.ngrok_events()), timeout=5,
             what="the orphaned fake ngrok to exit")

    second = start_dev(tmp_path, processes, api, emulator)
    second.wait_ready()
    assert f"deleted webhook {stale['id']}" in second.output()
    [hook] = emulator.webhooks()
    assert hook["url"] == second.webhook_url != stale["url"] and hook["valid"]
    assert_subscribed(hook, api)
    assert_answered(emulator, "are you back?", 1)

    second.signal(signal.SIGTERM)
    assert second.wait(20) == 0
    assert_cleaned_up(second, emulator, hook["id"])


def test_a_stale_webhook_is_removed_even_when_the_tier_has_room(
    tmp_path: Path, processes: list[Process]
) -> None:
    emulator = start_emulator(tmp_path, processes, "v2", "--max-webhooks", "3")
    first = start_dev(tmp_path, processes, "v2", emulator)
    first.wait_ready()
    [stale] = emulator.webhooks()
    first.signal(signal.SIGKILL)
    first.wait(5)

    second = start_dev(tmp_path, processes, "v2", emulator)
    second.wait_ready()
    assert f"deleted stale webhook {stale['id']}" in second.output()
    [hook] = emulator.webhooks()
    assert hook["url"] == second.webhook_url
    second.signal(signal.SIGINT)
    assert second.wait(20) == 0
    assert emulator.webhooks() == []


def test_ctrl_c_during_registration_still_removes_what_it_made(
    tmp_path: Path, processes: list[Process]
) -> None:
    # Every request through the tunnel takes a second: the CRC (and so the registration)
    # is still running when Ctrl-C comes.
    emulator = start_emulator(tmp_path, processes, "v2")
    dev = start_dev(tmp_path, processes, "v2", emulator, FAKE_NGROK_LATENCY="1.0")
    wait_for(lambda: "tunnel http" in dev.output() or not dev.alive, timeout=20,
             what="the tunnel to open")
    dev.signal(signal.SIGINT)
    assert dev.wait(20) == 0
    out = dev.output()
    assert _READY not in out and "registration in progress" in out
    assert emulator.webhooks() == []
    assert "tunnel closed" in out
    assert not (tmp_path / _STATE_FILE_NAME).exists()


# --- failures say what to fix ----------------------------------------------------------


def test_a_wrong_consumer_secret_names_the_variable(
    tmp_path: Path, processes: list[Process]
) -> None:
    emulator = start_emulator(tmp_path, processes, "v2")
    dev = start_dev(tmp_path, processes, "v2", emulator,
                    CATBOT_X_CONSUMER_SECRET="not-the-apps-secret")
    assert dev.finish() == 1
    assert "CATBOT_X_CONSUMER_SECRET" in dev.output()
    assert emulator.webhooks() == []


def test_a_slow_crc_answer_says_it_must_come_faster(
    tmp_path: Path, processes: list[Process]
) -> None:
    emulator = start_emulator(tmp_path, processes, "v2", "--crc-timeout", "0.2")
    dev = start_dev(tmp_path, processes, "v2", emulator, FAKE_NGROK_LATENCY="0.6")
    assert dev.finish() == 1
    assert "must come faster" in dev.output()
    assert emulator.webhooks() == []
    assert "tunnel closed" in dev.output()
    assert any(e["event"] == "tunnel_deleted" for e in dev.ngrok_events())
    assert not (tmp_path / _STATE_FILE_NAME).exists()


def test_missing_ngrok_is_a_clear_message_at_once(
    tmp_path: Path, processes: list[Process]
) -> None:
    missing = tmp_path / "no" / "ngrok"
    started = time.monotonic()
    dev = start_dev(tmp_path, processes, "v2", None, PYNGROK_NGROK_PATH=str(missing),
                    https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    assert dev.finish(10) == 1
    assert time.monotonic() - started < 5
    out = dev.output()
    assert f"ngrok was not found at {missing}" in out and "does not download" in out
    assert "Traceback" not in out
    assert not missing.exists()


def test_an_ngrok_authentication_failure_is_reported_without_the_token(
    tmp_path: Path, processes: list[Process]
) -> None:
    emulator = start_emulator(tmp_path, processes, "v2")
    dev = start_dev(tmp_path, processes, "v2", emulator, FAKE_NGROK_FAIL="auth",
                    NGROK_AUTHTOKEN="rejected-token-42")
    assert dev.finish() == 1
    out = dev.output()
    assert "ERR_NGROK_105" in out and "NGROK_AUTHTOKEN" in out
    assert "rejected-token-42" not in out
    assert emulator.webhooks() == []


# --- pieces ----------------------------------------------------------------------------


def _args(**values: Any) -> argparse.Namespace:
    base = {"env_file": None, "api_base": None, "port": None, "log_level": None}
    return argparse.Namespace(**{**base, **values})


def test_dev_settings_default_to_readable_logs_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("CATBOT_"):
            monkeypatch.delenv(name)
    settings = _dev_settings(_args(api_base="http://127.0.0.1:8099/", port=0))
    assert settings.log_format == "text"
    assert settings.host == settings.metrics_host == "127.0.0.1"
    assert settings.x_api_base == "http://127.0.0.1:8099"
    assert settings.port != 0

    monkeypatch.setenv("CATBOT_LOG_FORMAT", "json")
    monkeypatch.setenv("CATBOT_HOST", "0.0.0.0")
    settings = _dev_settings(_args(port=8181))
    assert (settings.log_format, settings.host, settings.port) == ("json", "0.0.0.0", 8181)

    monkeypatch.setenv("CATBOT_X_API", "v1.1")
    with pytest.raises(ConfigError, match="CATBOT_X_ENV_NAME"):
        _dev_settings(_args())


def test_the_state_file_survives_garbage_and_disappears_when_empty(tmp_path: Path) -> None:
    state = _DevState(tmp_path / "sub" / _STATE_FILE_NAME)
    assert state.load() == []
    record = _DevRecord(url="https://a.example/webhook", api="v2", api_base="https://api.x.com",
                       env_name=None, pid=123, webhook_id="77")
    state.update(add=[record])
    assert state.load() == [record]
    state.update(remove=[record])
    assert not state.path.exists()
    state.path.write_text("{not json")
    assert state.load() == []
    state.path.write_text(json.dumps([{"url": "x"}, {**record.__dict__}]))
    assert state.load() == [record]


def test_a_crc_signed_with_another_secret_points_at_the_consumer_secret() -> None:
    settings = load_settings(None, **{k.lower().removeprefix("catbot_"): v
                                     for k, v in CREDENTIALS.items()})
    dev = _DevMode(settings, credentials_from(settings), _DevOptions())
    refused = XApiError(400, "CrcValidationFailed",
                        "CrcValidationFailed: CRC response_token does not match")
    wrapped = RegistrationError(f"{refused}. more words")
    wrapped.__cause__ = refused
    message = dev.explain(wrapped)
    assert message.startswith("cannot register the webhook: HTTP 400 CrcValidationFailed")
    assert "CATBOT_X_CONSUMER_SECRET must be this app's API key secret" in message
    assert "must come faster" not in message


def test_only_records_of_runs_that_are_gone_count_as_stale(tmp_path: Path) -> None:
    assert not _pid_alive(os.getpid())  # an earlier life of our own pid
    done = subprocess.Popen(["true"])
    done.wait()
    assert not _pid_alive(done.pid)
    # A live pid that runs something else than catbot: the pid was reused.
    other = subprocess.Popen(["sleep", "30"])
    looks_like_dev = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "catbot", "dev"]
    )
    try:
        # Right after fork the child's command line is still ours: wait for the exec.
        wait_for(lambda: b"sleep" in Path(f"/proc/{other.pid}/cmdline").read_bytes(),
                 what="sleep to start")
        wait_for(lambda: b"catbot" in Path(f"/proc/{looks_like_dev.pid}/cmdline").read_bytes(),
                 what="the look-alike to start")
        assert not _pid_alive(other.pid)
        assert _pid_alive(looks_like_dev.pid)
    finally:
        for proc in (other, looks_like_dev):
            proc.kill()
            proc.wait()
