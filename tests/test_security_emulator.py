"""The emulator signs for nobody but the developer (issue 15, item 2).

The attack: a web page the developer visits drives the emulator's unauthenticated control
API (browser-style `text/plain` requests, a foreign `Origin`, a foreign `Host` through DNS
rebinding) to register a webhook, have a body signed with the consumer secret, and replay
it to the daemon. And the emulator read `./.env`, the file operators fill with production
credentials, so that secret could be the production one.

Here: raw HTTP requests shaped like a browser's against an emulator on 127.0.0.1; real
Chromium pages on another origin and on a rebound host name (Chromium's own host-resolver
rules map `rebind.test` to 127.0.0.1, which is what DNS rebinding achieves); and the
`catbot emulator` command in a directory holding a production-looking `.env`.
"""

from __future__ import annotations

import base64
import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from catbot.emulator import RunningEmulator, config_from_env
from catbot.emulator.config import BUILT_IN_CREDENTIALS, ConfigError
from testkit.processes import clean_env, free_port
from testkit.processes import http as http_call
from tests.emulator_fixtures import ENV, SECRET, EmulatorFactory, Receiver, ReceiverFactory

FOREIGN_HOST = "attacker.example"
REBOUND_HOST = "rebind.test"
FORGED = {"sender_id": "666", "text": "forged by a web page"}


async def call(
    session: aiohttp.ClientSession, emulator: RunningEmulator, method: str, path: str,
    *, headers: dict[str, str] | None = None, data: bytes | None = None,
) -> tuple[int, Any]:
    # Bounded: without the guard, /_emulator/events would stream for ever.
    async with session.request(method, emulator.url + path, headers=headers or {},
                               data=data, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return resp.status, await resp.json(content_type=None)


async def forged_messages(session: aiohttp.ClientSession, emulator: RunningEmulator) -> list[Any]:
    _, listed = await call(session, emulator, "GET", "/_emulator/messages")
    return [m for m in listed["messages"] if m["sender_id"] == FORGED["sender_id"]]


def port_of(emulator: RunningEmulator) -> int:
    return int(emulator.url.rsplit(":", 1)[1])


# --- Host: DNS rebinding ------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/_emulator/dm", FORGED),
        ("POST", "/_emulator/webhooks", {"url": "http://127.0.0.1:1/webhook"}),
        ("POST", "/_emulator/deliver_raw", {"body_text": "{}"}),
        ("POST", "/_emulator/xchat", FORGED),
        ("GET", "/_emulator/messages", None),
        ("GET", "/_emulator/chat", None),
        ("GET", "/_emulator/events", None),
        ("GET", "/_emulator/static/chat.js", None),
        ("POST", "/_emulator/reset", None),
    ],
)
async def test_a_foreign_host_is_refused_on_every_control_route(
    method: str, path: str, body: Any, make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
) -> None:
    emulator = await make_emulator()
    headers = {"Host": f"{FOREIGN_HOST}:{port_of(emulator)}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    status, answer = await call(http, emulator, method, path, headers=headers, data=data)
    assert status == 403, answer
    assert "Host" in answer["error"]
    assert await forged_messages(http, emulator) == []
    _, hooks = await call(http, emulator, "GET", "/_emulator/webhooks")
    assert hooks["webhooks"] == []


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}",
                                  "LOCALHOST:{port}", "127.0.0.1"])
async def test_loopback_host_values_are_answered(
    host: str, make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
) -> None:
    emulator = await make_emulator()
    headers = {"Host": host.format(port=port_of(emulator)), "Content-Type": "application/json"}
    status, answer = await call(http, emulator, "POST", "/_emulator/dm", headers=headers,
                                data=json.dumps(FORGED).encode())
    assert status == 200, answer
    assert len(await forged_messages(http, emulator)) == 1


@pytest.mark.parametrize("host", ["127.0.0.1.attacker.example", "localhost.attacker.example",
                                  "127.0.0.1@attacker.example", "attacker.example#@127.0.0.1",
                                  "127.0.0.1:99999", ""])
async def test_host_values_that_only_look_local_are_refused(
    host: str, make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
) -> None:
    emulator = await make_emulator()
    status, _ = await call(http, emulator, "POST", "/_emulator/dm",
                           headers={"Host": host, "Content-Type": "application/json"},
                           data=json.dumps(FORGED).encode())
    assert status in (400, 403)
    assert await forged_messages(http, emulator) == []


@pytest.mark.parametrize("path", ["/2/../_emulator/dm", "/%5Femulator/dm", "//_emulator/dm",
                                  "/_emulator//dm", "/_EMULATOR/dm"])
async def test_path_tricks_do_not_reach_the_control_api_from_a_foreign_host(
    path: str, make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
) -> None:
    emulator = await make_emulator()
    url = URL(emulator.url + path, encoded=True)
    async with http.post(url, data=json.dumps(FORGED).encode(),
                         headers={"Host": FOREIGN_HOST, "Content-Type": "application/json"}
                         ) as resp:
        assert resp.status != 200, path
    assert await forged_messages(http, emulator) == []


async def test_x_api_routes_still_answer_any_host(
    make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
) -> None:
    # Clients reach X's routes under the name they were given (api.x.com behind a rebasing
    # session, a service name in a container): those routes take OAuth, not the Host.
    emulator = await make_emulator()
    basic = base64.b64encode(f"{ENV['CATBOT_X_CONSUMER_KEY']}:{SECRET}".encode()).decode()
    status, token = await call(
        http, emulator, "POST", "/oauth2/token?grant_type=client_credentials",
        headers={"Host": "api.x.com", "Authorization": f"Basic {basic}",
                 "Origin": "https://attacker.example"},
    )
    assert status == 200 and token["token_type"] == "bearer"
    status, listed = await call(
        http, emulator, "GET", "/2/webhooks",
        headers={"Host": "api.x.com", "Authorization": f"Bearer {token['access_token']}"},
    )
    assert status == 200 and listed["meta"]["result_count"] == 0


# --- Origin and Content-Type: cross-site requests -----------------------------------------


@pytest.mark.parametrize("origin", ["http://attacker.example", "null",
                                    "http://localhost:{port}", "http://127.0.0.1:{other}",
                                    "https://127.0.0.1:{port}"])
async def test_a_foreign_origin_is_refused(
    origin: str, make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
) -> None:
    emulator = await make_emulator()
    port = port_of(emulator)
    status, answer = await call(
        http, emulator, "POST", "/_emulator/dm",
        headers={"Origin": origin.format(port=port, other=port + 1),
                 "Content-Type": "application/json"},
        data=json.dumps(FORGED).encode(),
    )
    assert status == 403 and "cross-origin" in answer["error"]
    assert await forged_messages(http, emulator) == []
    # The page's own origin is fine (the chat page's POSTs carry it).
    status, _ = await call(
        http, emulator, "POST", "/_emulator/dm",
        headers={"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"},
        data=json.dumps(FORGED).encode(),
    )
    assert status == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
async def test_a_body_that_is_not_declared_json_is_refused(
    content_type: str | None, make_emulator: EmulatorFactory, make_receiver: ReceiverFactory,
    http: aiohttp.ClientSession,
) -> None:
    # What a page can send without a preflight: the body is still JSON, as the attack had it.
    receiver: Receiver = await make_receiver()
    emulator = await make_emulator(receiver.url)
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path, body in (("/_emulator/dm", FORGED),
                       ("/_emulator/deliver_raw", {"body_text": '{"forged": true}'})):
        # No label of aiohttp's own: the header is exactly what the page would send.
        async with http.post(emulator.url + path, data=json.dumps(body).encode(),
                             headers=headers, skip_auto_headers=["Content-Type"]) as resp:
            assert resp.status == 415, (path, await resp.text())
    assert await forged_messages(http, emulator) == []
    assert receiver.posts == [], "a body was signed and delivered"


async def test_json_with_a_charset_and_empty_bodies_are_accepted(
    make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
) -> None:
    emulator = await make_emulator()
    status, _ = await call(http, emulator, "POST", "/_emulator/dm",
                           headers={"Content-Type": "application/json; charset=utf-8"},
                           data=json.dumps(FORGED).encode())
    assert status == 200
    # An empty body carries nothing: `curl -X POST .../reset` and aiohttp's default label.
    status, answer = await call(http, emulator, "POST", "/_emulator/reset")
    assert status == 200 and answer == {"reset": True}


# --- listening beyond loopback ------------------------------------------------------------


def test_a_non_loopback_host_needs_allow_remote(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        # A documentation address no interface here has: even without the check it could
        # not listen, so this test never opens a port beyond loopback.
        [sys.executable, "-m", "catbot", "emulator", "--host", "192.0.2.10", "--port", str(port)],
        env=clean_env({}), cwd=tmp_path, capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--allow-remote" in result.stderr and "loopback" in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stdout
    with pytest.raises(ConfigError, match="allow-remote"):
        config_from_env(ENV, host="192.0.2.10")
    allowed = config_from_env(ENV, host="0.0.0.0", allow_remote=True)
    assert allowed.allow_remote and allowed.host == "0.0.0.0"


async def test_allow_remote_answers_ip_addresses_but_still_no_rebound_names(
    make_emulator: EmulatorFactory,
    http: aiohttp.ClientSession,
) -> None:
    # Listening on 127.0.0.1 here; --allow-remote changes which Host values are answered.
    emulator = await make_emulator(allow_remote=True)
    port = port_of(emulator)
    for host, expected in ((f"192.0.2.10:{port}", 200), (f"[2001:db8::1]:{port}", 200),
                           (f"{FOREIGN_HOST}:{port}", 403)):
        status, _ = await call(http, emulator, "GET", "/_emulator/messages",
                               headers={"Host": host})
        assert status == expected, host


# --- credentials: never the operator's .env by accident -----------------------------------


PRODUCTION = {
    "CATBOT_X_CONSUMER_KEY": "prod-consumer-key-0123456789",
    "CATBOT_X_CONSUMER_SECRET": "prod-consumer-secret-do-not-leak",
    "CATBOT_X_ACCESS_TOKEN": "424242-prod-access-token",
    "CATBOT_X_ACCESS_TOKEN_SECRET": "prod-token-secret-do-not-leak",
}


class EmulatorCli:
    """`catbot emulator` as a user starts it, in `cwd`, until stopped."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.stderr_path = cwd / f"emulator-{self.port}.err"
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "catbot", "emulator", "--port", str(self.port), *args],
                cwd=cwd, env=clean_env(env), stdout=subprocess.PIPE, stderr=stderr, text=True,
                stdin=subprocess.DEVNULL,
            )
        # A reader thread: a buffered pipe may hold both lines while select() sees none.
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.lines = [self._line(), self._line()]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))

    def _line(self) -> str:
        try:
            return self._lines.get(timeout=20)
        except queue.Empty:
            raise AssertionError(
                "no start-up line within 20 s: " + self.stderr_path.read_text()
            ) from None

    def token_status(self, key: str, secret: str) -> int:
        basic = base64.b64encode(f"{key}:{secret}".encode()).decode()
        status, _, _ = http_call("POST", f"http://127.0.0.1:{self.port}/oauth2/token"
                            "?grant_type=client_credentials",
                            headers={"Authorization": f"Basic {basic}"})
        return status

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        rest = [*self.lines]
        while not self._lines.empty():
            rest.append(self._lines.get())
        return "\n".join(rest) + "\n" + self.stderr_path.read_text()


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def test_the_dotenv_file_is_not_read_without_being_asked(tmp_path: Path) -> None:
    write_env_file(tmp_path / ".env", PRODUCTION)
    emulator = EmulatorCli(tmp_path, {})
    try:
        assert "credentials: built-in demo credentials" in emulator.lines[1], emulator.lines
        assert emulator.token_status(PRODUCTION["CATBOT_X_CONSUMER_KEY"],
                                     PRODUCTION["CATBOT_X_CONSUMER_SECRET"]) == 403
        assert emulator.token_status(BUILT_IN_CREDENTIALS["consumer_key"],
                                     BUILT_IN_CREDENTIALS["consumer_secret"]) == 200
    finally:
        output = emulator.stop()
    assert "--env-file" in output  # the hint that ./.env was left alone
    for secret in PRODUCTION.values():
        assert secret not in output


def test_an_env_file_is_read_when_named_and_says_so(tmp_path: Path) -> None:
    env_file = tmp_path / "emulator.env"
    write_env_file(env_file, PRODUCTION)
    emulator = EmulatorCli(tmp_path, {}, "--env-file", str(env_file))
    try:
        line = emulator.lines[1]
        assert f"from {env_file} (--env-file)" in line, line
        assert "consumer key prod-…" in line, line
        assert emulator.token_status(PRODUCTION["CATBOT_X_CONSUMER_KEY"],
                                     PRODUCTION["CATBOT_X_CONSUMER_SECRET"]) == 200
    finally:
        output = emulator.stop()
    for name in ("CATBOT_X_CONSUMER_SECRET", "CATBOT_X_ACCESS_TOKEN_SECRET",
                 "CATBOT_X_ACCESS_TOKEN", "CATBOT_X_CONSUMER_KEY"):
        assert PRODUCTION[name] not in output, name


def test_environment_variables_still_count_and_say_so(tmp_path: Path) -> None:
    emulator = EmulatorCli(tmp_path, dict(ENV))
    try:
        line = emulator.lines[1]
        assert line.endswith("from the environment"), line
        assert emulator.token_status(ENV["CATBOT_X_CONSUMER_KEY"], SECRET) == 200
    finally:
        output = emulator.stop()
    assert SECRET not in output and ENV["CATBOT_X_ACCESS_TOKEN_SECRET"] not in output
