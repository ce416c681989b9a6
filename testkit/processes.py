"""Real processes on loopback for integration tests and benchmarks: the emulator and the daemon.

Each runs as `python -m catbot ...` with its output in a file (shown when a test fails), and
is waited for through HTTP, never by sleeping a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

CREDENTIALS = {
    "CATBOT_X_CONSUMER_KEY": "test-consumer-key",
    "CATBOT_X_CONSUMER_SECRET": "test-consumer-secret",
    "CATBOT_X_ACCESS_TOKEN": "1000-test-access-token",
    "CATBOT_X_ACCESS_TOKEN_SECRET": "test-access-token-secret",
}
BOT_ID = "1000"
WEBHOOK_PATH = "/webhook/twitter"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without any catbot setting, plus `extra`."""
    seed = {"consumer_key", "consumer_secret", "access_token", "access_token_secret"}
    env = {
        k: v for k, v in os.environ.items()
        if not k.upper().startswith("CATBOT_") and k.lower() not in seed
    }
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def http(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
    raw: bytes | None = None, timeout: float = 10.0,
) -> tuple[int, Any, Mapping[str, str]]:
    """One HTTP call; returns (status, decoded JSON or text, headers). Never raises on 4xx/5xx."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None and raw is None:
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload, hdrs = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, payload, hdrs = exc.code, exc.read(), exc.headers
    text = payload.decode("utf-8", "replace")
    try:
        return status, json.loads(text), hdrs
    except ValueError:
        return status, text, hdrs


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except (OSError, urllib.error.URLError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    history: list[str] = field(default_factory=list)

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until it exits
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "catbot", *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.wait(10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Emulator(Process):
    def __init__(self, tmp: Path, port: int, webhook_url: str | None, api: str = "v2",
                 extra_env: Mapping[str, str] | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        hook = ["--webhook-url", webhook_url] if webhook_url else []
        super().__init__(
            "emulator",
            ["emulator", "--host", "127.0.0.1", "--port", str(port), "--api", api,
             *hook, *extra_args],
            clean_env({**CREDENTIALS, **(extra_env or {})}),
            tmp / f"emulator-{port}.log",
        )
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        super().start()
        wait_for(lambda: self.alive and http("GET", self.base + "/_emulator/messages")[0] == 200,
                 what="the emulator to listen")

    def control(self, method: str, path: str, body: Any = None) -> Any:
        status, payload, _ = http(method, f"{self.base}/_emulator/{path}", body)
        assert status == 200, f"{method} {path} -> {status} {payload}"
        return payload

    def dm(self, sender_id: str, text: str, **extra: Any) -> Any:
        return self.control("POST", "dm", {"sender_id": sender_id, "text": text, **extra})

    def messages(self, user_id: str | None = None) -> list[dict[str, Any]]:
        path = "messages" + (f"?user_id={user_id}" if user_id else "")
        result: list[dict[str, Any]] = self.control("GET", path)["messages"]
        return result

    def replies_to(self, user_id: str) -> list[str]:
        return [m["text"] for m in self.messages(user_id)
                if m["sender_id"] == BOT_ID and m["recipient_id"] == user_id]

    def faults(self, **faults: Any) -> None:
        self.control("POST", "faults", faults)

    def wait_webhook_valid(self) -> None:
        def valid() -> bool:
            hooks = self.control("GET", "webhooks")["webhooks"]
            return bool(hooks) and all(h["valid"] for h in hooks)

        wait_for(valid, what="the emulator to validate the webhook")


class Daemon(Process):
    def __init__(self, tmp: Path, emulator_port: int, port: int, metrics_port: int,
                 extra_env: Mapping[str, str] | None = None, db: Path | None = None) -> None:
        env = {
            **CREDENTIALS,
            "CATBOT_X_API_BASE": f"http://127.0.0.1:{emulator_port}",
            "CATBOT_HOST": "127.0.0.1",
            "CATBOT_PORT": str(port),
            "CATBOT_METRICS_HOST": "127.0.0.1",
            "CATBOT_METRICS_PORT": str(metrics_port),
            "CATBOT_STORE_URL": f"sqlite:///{db or tmp / 'catbot.db'}",
            "CATBOT_COOLDOWN_SECONDS": "0",
            "CATBOT_RETRY_INITIAL_SECONDS": "0.05",
            "CATBOT_RETRY_MAX_SECONDS": "0.2",
            "CATBOT_SHUTDOWN_GRACE_SECONDS": "5",
            "CATBOT_LOG_LEVEL": "DEBUG",
            **(extra_env or {}),
        }
        super().__init__("daemon", ["run", "--env-file", str(tmp / "none.env")],
                         clean_env(env), tmp / f"daemon-{port}.log")
        self.port = port
        self.metrics_port = metrics_port
        self.webhook = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        self.internal = f"http://127.0.0.1:{metrics_port}"

    def start(self) -> None:
        super().start()
        wait_for(lambda: self.alive and http("GET", self.internal + "/readyz")[0] == 200,
                 what="the daemon to be ready")

    def start_process_only(self) -> None:
        """Start without waiting for readiness (for start-up failures)."""
        super().start()

    def metrics(self) -> dict[str, float]:
        status, text, _ = http("GET", self.internal + "/metrics")
        assert status == 200
        return parse_metrics(text)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format to {'name{labels}': value}."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class BotAndX:
    """A daemon and the emulator playing X for it: the pair most tests start."""

    daemon: Daemon
    emulator: Emulator

    def start(self) -> Self:
        self.daemon.start()
        self.emulator.start()
        self.emulator.wait_webhook_valid()
        return self

    def stop(self) -> None:
        self.daemon.stop()
        self.emulator.stop()

    def logs(self) -> str:
        """The tails of the processes' logs."""
        return self.daemon.output()[-6000:] + "\n" + self.emulator.output()[-3000:]

    # `with Pair(...) as pair:` starts, then stops and prints the logs, which pytest shows
    # only for a failing test.
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        print(self.logs())
