"""catbot.commands.tunnel: pyngrok drives the fake `ngrok` executable for real, on loopback."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from catbot.commands.tunnel import TunnelError, open_tunnel, resolve_ngrok_path

FAKE_NGROK = Path(__file__).parent / "fake_ngrok" / "ngrok"


def fake_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def exists(path: str) -> bool:
    return Path(path).exists()


def refuses(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) != 0


@pytest.fixture
def ngrok_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PYNGROK_NGROK_PATH at the fake, its log in tmp, no token or failure mode inherited."""
    log = tmp_path / "fake-ngrok.jsonl"
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(FAKE_NGROK))
    monkeypatch.setenv("FAKE_NGROK_LOG", str(log))
    for name in ("NGROK_AUTHTOKEN", "FAKE_NGROK_FAIL", "FAKE_NGROK_LATENCY", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    # The user's ngrok config must not be read from (nor written to) the real home.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return log


@pytest.fixture
async def local_app() -> AsyncIterator[int]:
    """A local aiohttp app that echoes what reached it."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "body": (await request.read()).decode(),
            "forwarded_proto": request.headers.get("X-Forwarded-Proto"),
        })

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    yield port
    await runner.cleanup()


async def test_requests_through_the_public_url_reach_the_local_app(
    ngrok_env: Path, local_app: int
) -> None:
    tunnel = await open_tunnel(local_app, authtoken="test-token", timeout=10)
    try:
        assert tunnel.public_url.startswith("http://127.0.0.1:")
        assert tunnel.local_url == f"http://127.0.0.1:{local_app}"
        assert tunnel.alive
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{tunnel.public_url}/webhook/twitter",
                                   params={"crc_token": "abc"}) as response:
                got = await response.json()
            assert got["path"] == "/webhook/twitter" and got["query"] == {"crc_token": "abc"}
            assert got["forwarded_proto"] == "https"
            async with session.post(f"{tunnel.public_url}/events", data=b'{"x": 1}') as response:
                got = await response.json()
            assert got["method"] == "POST" and got["body"] == '{"x": 1}'
    finally:
        tunnel.close()

    assert not tunnel.alive
    assert refuses(tunnel.public_url), "the forward port still accepts connections"
    events = fake_log(ngrok_env)
    [start] = [e for e in events if e["event"] == "start"]
    # Driven by pyngrok exactly like ngrok: a private config holding the token, and the
    # token never on the command line (where `ps` shows it).
    assert start["argv"][:3] == ["--none", "--log", "stdout"]
    assert start["authtoken"] == "test-token"
    assert "test-token" not in start["argv"]
    assert not exists(start["config"]), "the private ngrok config was left behind"
    [created] = [e for e in events if e["event"] == "tunnel_created"]
    assert created["kind"] == "endpoints" and created["upstream"] == f"127.0.0.1:{local_app}"
    assert [e["public_url"] for e in events if e["event"] == "tunnel_deleted"] == [
        tunnel.public_url
    ]
    assert not (Path(os.environ["HOME"]) / ".config" / "ngrok").exists()
    tunnel.close()  # idempotent


async def test_authtoken_comes_from_the_environment(
    ngrok_env: Path, local_app: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NGROK_AUTHTOKEN", "from-env")
    tunnel = await open_tunnel(local_app, authtoken=None, timeout=10)
    tunnel.close()
    [start] = [e for e in fake_log(ngrok_env) if e["event"] == "start"]
    assert start["authtoken"] == "from-env" and "from-env" not in start["argv"]


async def test_a_missing_binary_fails_at_once_without_download(
    ngrok_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "ngrok"
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(missing))
    # Any attempt to download would fail fast here instead of hanging the test.
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(TunnelError) as caught:
        await open_tunnel(8080, authtoken=None, timeout=10)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"ngrok was not found at {missing}" in message
    assert "PYNGROK_NGROK_PATH" in message and "does not download" in message
    assert not missing.exists() and not missing.parent.exists()


def test_resolution_prefers_the_explicit_path_then_the_environment(
    ngrok_env: Path, tmp_path: Path
) -> None:
    assert resolve_ngrok_path() == str(FAKE_NGROK)
    with pytest.raises(TunnelError, match="not found"):
        resolve_ngrok_path(str(tmp_path / "other"))
    not_executable = tmp_path / "ngrok"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(TunnelError, match="not executable"):
        resolve_ngrok_path(str(not_executable))


async def test_an_authentication_failure_is_reported_with_ngroks_words(
    ngrok_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAKE_NGROK_FAIL", "auth")
    started = time.monotonic()
    with pytest.raises(TunnelError) as caught:
        await open_tunnel(8080, authtoken="bad-token-123", timeout=10)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "authentication failed" in message and "ERR_NGROK_105" in message
    assert "NGROK_AUTHTOKEN" in message and "dashboard.ngrok.com" in message
    # ngrok echoes the rejected token; it must not reach our message or our logs.
    assert "bad-token-123" not in message
    assert "bad-token-123" not in caplog.text


async def test_no_authtoken_at_all_says_so(
    ngrok_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NGROK_FAIL", "no-token")
    with pytest.raises(TunnelError) as caught:
        await open_tunnel(8080, authtoken=None, timeout=10)
    assert "ERR_NGROK_4018" in str(caught.value)
    assert "no authtoken was found" in str(caught.value)


async def test_the_users_ngrok_config_token_is_used_read_only(
    ngrok_env: Path, local_app: int
) -> None:
    config = Path(os.environ["HOME"]) / ".config" / "ngrok" / "ngrok.yml"
    config.parent.mkdir(parents=True)
    config.write_text('version: "3"\nagent:\n  authtoken: from-user-config\n')
    before = config.read_bytes()
    tunnel = await open_tunnel(local_app, authtoken=None, timeout=10)
    tunnel.close()
    [start] = [e for e in fake_log(ngrok_env) if e["event"] == "start"]
    assert start["authtoken"] == "from-user-config"
    assert start["config"] != str(config) and config.read_bytes() == before


async def test_an_agent_that_never_gets_ready_times_out_and_is_killed(
    ngrok_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NGROK_FAIL", "hang")
    started = time.monotonic()
    with pytest.raises(TunnelError, match="did not open a tunnel within 1 s"):
        await open_tunnel(8080, authtoken=None, timeout=1)
    assert time.monotonic() - started < 4
    [start] = [e for e in fake_log(ngrok_env) if e["event"] == "start"]
    assert not _pid_alive(start["pid"])


async def test_an_agent_that_crashes_at_start_is_reported(
    ngrok_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NGROK_FAIL", "crash")
    with pytest.raises(TunnelError, match="exited without opening its API"):
        await open_tunnel(8080, authtoken=None, timeout=10)


async def test_nothing_listening_behind_the_tunnel_gives_ngroks_502(ngrok_env: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    tunnel = await open_tunnel(dead_port, authtoken=None, timeout=10)
    try:
        async with aiohttp.ClientSession() as session, session.get(tunnel.public_url) as resp:
            assert resp.status == 502
            assert "ERR_NGROK_8012" in await resp.text()
    finally:
        tunnel.close()


def _pid_alive(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A killed child stays a zombie until reaped; pyngrok reaps it in kill_process.
        time.sleep(0.05)
    return True
