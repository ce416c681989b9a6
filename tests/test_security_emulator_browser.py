"""The emulator signs for nobody but the developer (issue 15, item 2): real browser pages.

Real Chromium (the system one, driven by Playwright as in test_chat_page) plays the page the
developer visits: one on another origin sending what a page may send without CORS consent,
and one on a rebound host name (Chromium's host-resolver rules map `rebind.test` to
127.0.0.1, which is what DNS rebinding achieves). The emulator is a real process on
127.0.0.1. (Sync Playwright keeps its own event loop, so these live apart from the asyncio
tests in test_security_emulator.py.)
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from testkit.processes import Emulator, free_port, wait_for
from tests.test_chat_page import CHROMIUM, CHROMIUM_ARGS

REBOUND_HOST = "rebind.test"
FORGED = {"sender_id": "666", "text": "forged by a web page"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "no /usr/bin/chromium: run `make test` (it installs chromium)"
    # What DNS rebinding does, without a DNS server: the attacker's name resolves to 127.0.0.1.
    rules = f"--host-resolver-rules=MAP {REBOUND_HOST} 127.0.0.1"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, rules], headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[Emulator]:
    emulator = Emulator(tmp_path, free_port(), None)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@contextlib.contextmanager
def attacker_site(page_html: str) -> Iterator[str]:
    """A plain web site on another loopback port (another origin) serving one page."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page_html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def forged_in(emulator: Emulator) -> list[dict[str, Any]]:
    return [m for m in emulator.messages() if m["sender_id"] == FORGED["sender_id"]]


def test_a_page_on_another_origin_cannot_drive_the_emulator(
    browser: Browser, emulator_process: Emulator
) -> None:
    target = emulator_process.base + "/_emulator"
    # The two requests a page can make without CORS consent: a no-cors fetch with a text
    # body, and a text/plain form whose single field spells a JSON object.
    name, value = json.dumps(FORGED)[:-2] + '", "pad": "', '"}'
    page_html = f"""<!doctype html><title>cute cats</title>
<form id="f" method="POST" action="{target}/dm" enctype="text/plain">
  <input type="hidden" name='{name}' value='{value}'>
</form>"""
    with attacker_site(page_html) as site:
        context = browser.new_context()
        page = context.new_page()
        page.goto(site)
        fetched = page.evaluate(
            """async ([url, body]) => {
                 await fetch(url, {method: "POST", mode: "no-cors", body: body,
                                   headers: {"Content-Type": "text/plain"}});
                 return "sent";
               }""",
            [f"{target}/dm", json.dumps(FORGED)],
        )
        assert fetched == "sent"
        with page.expect_navigation():
            page.evaluate("document.getElementById('f').submit()")
        context.close()
    assert forged_in(emulator_process) == []


def test_a_rebound_host_name_cannot_use_the_emulator(
    browser: Browser, emulator_process: Emulator
) -> None:
    port = emulator_process.port
    context = browser.new_context()
    page = context.new_page()
    # After rebinding, the attacker's page and the emulator share an origin: the browser
    # itself no longer stops the page. Only the Host header shows the name it used.
    response = page.goto(f"http://{REBOUND_HOST}:{port}/_emulator/chat")
    assert response is not None and response.status == 403
    status = page.evaluate(
        """async (body) => (await fetch("/_emulator/dm", {method: "POST", body: body,
                             headers: {"Content-Type": "application/json"}})).status""",
        json.dumps(FORGED),
    )
    context.close()
    assert status == 403
    assert forged_in(emulator_process) == []


def test_the_chat_page_still_sends_json_on_loopback(
    browser: Browser, emulator_process: Emulator
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(emulator_process.base + "/_emulator/chat")
    page.get_by_label("User id (digits)").fill(FORGED["sender_id"])
    page.get_by_label("Name").fill("Mallory")
    page.get_by_label("Name").press("Enter")
    box = page.get_by_label("Message to the bot")
    box.fill(FORGED["text"])
    box.press("Enter")
    wait_for(lambda: forged_in(emulator_process), what="the chat page's DM")
    context.close()
