"""The emulator's chat page in Debian's headless Chromium, driven by Playwright.

The daemon and the emulator run as real processes (as in test_e2e); the browser talks to the
emulator only, as a person would: it creates a friend, types DMs, and sees the bot's replies
arrive over server-sent events. A screenshot is saved as a test artefact.

Chromium is the system one (`/usr/bin/chromium`, which `make test` and `.ci/run` install with
apt when it is missing): Playwright never downloads a browser here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from catbot.brain import STOP_TEXT
from catbot.facts import load_corpus
from tests.harness import BOT_ID, BotAndX, Daemon, Emulator, free_port, http

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FRIEND_ID = "31415926"
FRIEND_NAME = "Grace"
CORPUS = {fact.text for fact in load_corpus()}
# Generous: the first DM may wait for the daemon's first fact pick and a slow CI machine.
REPLY_TIMEOUT_MS = 20_000


class World(BotAndX):
    def __init__(self, tmp: Path) -> None:
        emulator_port = free_port()
        self.daemon = Daemon(tmp, emulator_port, free_port(), free_port())
        self.emulator = Emulator(tmp, emulator_port, self.daemon.webhook)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Not a skip: a missing browser is a broken set-up that `make test` repairs.
    assert CHROMIUM.exists(), "no /usr/bin/chromium: run `make test` (it installs chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(REPLY_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Nothing may leave loopback: no CDN, no external fonts.
    page.on(
        "request",
        lambda req: (
            errors.append(f"off-host request {req.url}")
            if not req.url.startswith(("http://127.0.0.1:", "data:"))
            else None
        ),
    )
    yield page
    context.close()
    assert not errors, errors


def bot_replies(page: Page) -> list[str]:
    replies = page.locator('#conversation li[data-direction="out"] .text')
    texts: list[str] = replies.all_inner_texts()
    return texts


def test_chat_with_the_bot_in_a_browser(world: World, page: Page, tmp_path: Path) -> None:
    base = world.emulator.base
    page.goto(f"{base}/_emulator/chat")
    expect(page.locator("#connection")).to_have_text("Live")

    # The webhook's state: registered URL, valid, last CRC and the bot's subscription.
    hook = page.locator("#webhooks .hook")
    expect(hook).to_contain_text(world.daemon.webhook)
    expect(hook.locator('[data-field="valid"]')).to_have_text("✓ valid")
    expect(hook.locator('[data-field="subscriptions"]')).to_contain_text(f"user {BOT_ID}")

    # Create a friend with the keyboard only.
    page.get_by_label("User id (digits)").fill(FRIEND_ID)
    page.get_by_label("Name").fill(FRIEND_NAME)
    page.get_by_label("Name").press("Enter")
    expect(page.locator("#chat-with")).to_contain_text(f"Chatting as {FRIEND_NAME}")
    expect(page.locator(f'#friend-list [data-user-id="{FRIEND_ID}"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    box = page.get_by_label("Message to the bot")
    expect(box).to_be_focused()

    # A DM gets a cat fact, live.
    box.fill("hi catbot! a cat fact please")
    box.press("Enter")
    out = page.locator('#conversation li[data-direction="out"]')
    expect(out).to_have_count(1)
    fact = bot_replies(page)[0]
    assert any(fact.startswith(text) for text in CORPUS), fact
    expect(page.locator('#conversation li[data-direction="in"]')).to_have_count(1)

    # `stop` gets the confirmation.
    box.fill("stop")
    page.get_by_role("button", name="Send").click()
    expect(out).to_have_count(2)
    expect(out.nth(1)).to_contain_text(STOP_TEXT)

    # Deliveries with their status and latency.
    # Four: each DM to the bot, and the echo of each of the bot's replies.
    rows = page.locator("#delivery-rows tr.delivery")
    expect(rows).to_have_count(4)
    assert rows.locator("td:nth-child(2)").all_inner_texts() == ["200"] * 4
    for latency in rows.locator("td:nth-child(3)").all_inner_texts():
        assert latency.endswith(" ms") and float(latency.removesuffix(" ms")) >= 0, latency
    expect(rows.locator("td:nth-child(4)", has_text=f"DM from {FRIEND_NAME}")).to_have_count(2)

    # The page shows what the emulator recorded, and the page's friend reached X.
    recorded = http("GET", f"{base}/_emulator/messages?user_id={FRIEND_ID}")[1]["messages"]
    assert [m["text"] for m in recorded if m["sender_id"] == BOT_ID] == bot_replies(page)
    assert page.locator("#conversation").get_attribute("aria-live") == "polite"

    shot = tmp_path / "chat-page.png"
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "chat-page.png")
    assert shot.stat().st_size > 10_000


def test_page_assets_are_served_and_nothing_else(world: World) -> None:
    base = world.emulator.base + "/_emulator"
    status, body, headers = http("GET", f"{base}/chat")
    assert status == 200 and "text/html" in headers["Content-Type"]
    assert "<html" in body
    for name, kind in [("chat.js", "text/javascript"), ("chat.css", "text/css")]:
        status, _, headers = http("GET", f"{base}/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)
    for name in ["..%2Fchat.py", "missing.js", ".hidden.css", "chat.py"]:
        assert http("GET", f"{base}/static/{name}")[0] == 404
