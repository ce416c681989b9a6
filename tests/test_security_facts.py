"""Attacks through the optional remote fact source (issue 15, item 3).

A hostile or hijacked fact server tries to exhaust the daemon's memory with an endless body,
to send the bot elsewhere with a redirect, and a plain-http URL off loopback lets anyone on
the path choose the text. Each runs against real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from catbot.config import ConfigError, load_settings
from catbot.facts import CorpusSource, Fact, RemoteSource
from catbot.facts.remote import _MAX_BODY_BYTES
from testkit.processes import CREDENTIALS, clean_env, free_port

MIB = 1024 * 1024
HOSTILE_BYTES = 300 * MIB
CHUNK = 64 * 1024
FALLBACK = [Fact(f"c:{n}", f"Corpus fact number {n}.") for n in range(5)]
# Far longer than the cut-off should take, so a slow machine never turns the cap into a
# timeout (which would also fall back, and hide a missing cap).
GENEROUS_TIMEOUT = 60.0


@dataclass
class Hostile:
    """A fact server whose `/fact` answers as `mode` says, counting what it managed to send."""

    mode: str = "stream"
    sent: int = 0
    hits: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    redirect_to: str = ""

    async def fact(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.mode == "redirect":
            raise web.HTTPFound(self.redirect_to)
        if self.mode == "exact":
            return web.Response(body=padded_fact(_MAX_BODY_BYTES), content_type="application/json")
        if self.mode == "over":
            return web.Response(
                body=padded_fact(_MAX_BODY_BYTES + 1), content_type="application/json"
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if self.mode == "declared":
            response.content_length = HOSTILE_BYTES
        else:
            response.enable_chunked_encoding()  # no Content-Length at all
        await response.prepare(request)
        chunk = b" " * CHUNK
        try:
            while self.sent < HOSTILE_BYTES:
                await response.write(chunk)
                self.sent += len(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client hung up: what the cap is for
        finally:
            self.finished.set()
        return response


def padded_fact(size: int) -> bytes:
    """A valid catfact.ninja answer padded with JSON whitespace to exactly `size` bytes."""
    body = json.dumps({"fact": "A padded fact.", "length": 14}).encode()
    return body + b" " * (size - len(body))


async def start(hostile: Hostile) -> TestServer:
    app = web.Application()
    app.router.add_get("/fact", hostile.fact)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def source(url: str, session: aiohttp.ClientSession, outcomes: list[str]) -> RemoteSource:
    return RemoteSource(
        url, session, CorpusSource(FALLBACK), timeout=GENEROUS_TIMEOUT,
        on_outcome=outcomes.append,
    )


@pytest.mark.parametrize("mode", ["stream", "declared"])
async def test_an_endless_body_is_cut_off_at_the_cap(
    mode: str, session: aiohttp.ClientSession
) -> None:
    hostile = Hostile(mode=mode)
    server = await start(hostile)
    try:
        outcomes: list[str] = []
        began = time.monotonic()
        fact, _ = await source(str(server.make_url("/")), session, outcomes).fact_for(
            frozenset(), 200
        )
        took = time.monotonic() - began
        # The server notices the hang-up on its next write.
        await asyncio.wait_for(hostile.finished.wait(), 10)
    finally:
        await server.close()
    assert fact in FALLBACK and outcomes == ["fallback"]
    # Socket buffers let a few MiB through before the server sees the hang-up; reading the
    # 300 MiB (what the attack did) would show here as the whole of it.
    assert hostile.sent < 16 * MIB, f"{hostile.sent / MIB:.0f} MiB sent before the cut-off"
    assert took < 10, f"{took:.1f} s to give up on a hostile body"


async def test_a_body_at_the_cap_is_read_and_one_byte_more_is_not(
    session: aiohttp.ClientSession,
) -> None:
    hostile = Hostile(mode="exact")
    server = await start(hostile)
    try:
        outcomes: list[str] = []
        remote = source(str(server.make_url("/")), session, outcomes)
        fact, _ = await remote.fact_for(frozenset(), 200)
        assert fact.text == "A padded fact." and outcomes == ["remote"]
        hostile.mode = "over"
        remote = source(str(server.make_url("/")), session, outcomes)
        fact, _ = await remote.fact_for(frozenset(), 200)
        assert fact in FALLBACK and outcomes == ["remote", "fallback"]
    finally:
        await server.close()


async def test_a_redirect_is_a_failure_never_followed(session: aiohttp.ClientSession) -> None:
    elsewhere = Hostile(mode="exact")  # would answer with a usable fact if asked
    target = await start(elsewhere)
    redirecting = Hostile(mode="redirect", redirect_to=str(target.make_url("/fact")))
    server = await start(redirecting)
    try:
        outcomes: list[str] = []
        fact, _ = await source(str(server.make_url("/")), session, outcomes).fact_for(
            frozenset(), 200
        )
    finally:
        await server.close()
        await target.close()
    assert redirecting.hits == 1
    assert elsewhere.hits == 0, "the redirect was followed"
    assert fact in FALLBACK and outcomes == ["fallback"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9", "http://localhost:9/facts", "http://[::1]:9",
            "https://catfact.ninja"]
)
def test_https_or_loopback_urls_are_accepted(url: str) -> None:
    assert load_settings(env_file=None, facts_url=url).facts_url == url


@pytest.mark.parametrize(
    "url", ["http://catfact.ninja", "http://10.0.0.5:8000", "http://127.0.0.1.nip.io"]
)
async def test_plain_http_off_loopback_is_refused(
    url: str, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ConfigError, match=r"CATBOT_FACTS_URL.*https"):
        load_settings(env_file=None, facts_url=url)
    # And by the source itself, for code that builds one without Settings.
    with pytest.raises(ValueError, match="https"):
        RemoteSource(url, session, CorpusSource(FALLBACK))


def test_the_daemon_refuses_to_start_with_a_plain_http_fact_source(tmp_path: Path) -> None:
    env = {**CREDENTIALS, "CATBOT_FACTS_URL": "http://catfact.ninja",
           "CATBOT_PORT": str(free_port()), "CATBOT_METRICS_PORT": str(free_port()),
           "CATBOT_STORE_URL": f"sqlite:///{tmp_path / 'catbot.db'}"}
    result = subprocess.run(
        [sys.executable, "-m", "catbot", "run", "--env-file", str(tmp_path / "none.env")],
        env=clean_env(env), cwd=tmp_path, capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr
    assert "CATBOT_FACTS_URL" in result.stderr and "https" in result.stderr
    assert "Traceback" not in result.stderr
