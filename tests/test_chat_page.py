"""The emulator's chat page in Debian's headless Chromium, driven by Playwright.

The daemon and the emulator run as real processes (as in test_e2e); the browser talks to the
emulator only, as a person would: it creates a friend, types DMs, and sees the bot's replies
arrive over server-sent events. A screenshot is saved as a test artefact.

The X Chat test plays the bot itself with the daemon's X Chat client and keys (register,
read the conversation through X's history route, answer encrypted), so it shows the page's
side whether or not the daemon answers X Chat.

Chromium is the system one (`/usr/bin/chromium`, which `make test` and `.ci/run` install with
apt when it is missing): Playwright never downloads a browser here.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from catbot.brain import STOP_TEXT
from catbot.facts import load_corpus
from catbot.x.dm import Credentials, tweepy_client
from catbot.xchat.client import XChatClient
from catbot.xchat.crypto import SendPayload
from catbot.xchat.identity import BotIdentity, generate_identity, load_identity
from testkit.processes import BOT_ID, CREDENTIALS, BotAndX, Daemon, Emulator, free_port, http

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


# --- X Chat ----------------------------------------------------------------------------

T = TypeVar("T")
BOT_CREDENTIALS = Credentials(
    CREDENTIALS["CATBOT_X_CONSUMER_KEY"],
    CREDENTIALS["CATBOT_X_CONSUMER_SECRET"],
    CREDENTIALS["CATBOT_X_ACCESS_TOKEN"],
    CREDENTIALS["CATBOT_X_ACCESS_TOKEN_SECRET"],
)
XCHAT_FRIEND = "27182818"
XCHAT_FRIEND_NAME = "Hedy"


def in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run async client code beside Playwright's sync API (which owns this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=30)


async def register_bot(base: str) -> BotIdentity:
    """What `catbot xchat keygen` + `register` do: new keys, registered at X (the emulator)."""
    new = generate_identity()
    async with aiohttp.ClientSession() as session:
        client = XChatClient(BOT_CREDENTIALS, session, base)
        identity = load_identity(new.private_key, user_id=BOT_ID, key_version=None)
        registration = await client.ensure_registered(identity)
    return load_identity(new.private_key, user_id=BOT_ID, key_version=registration.version)


async def subscribe_chat_received(base: str, webhook_id: str) -> None:
    """The X Activity API subscription that brings the bot's X Chat messages to a webhook
    (POST /2/activity/subscriptions, signed as the bot with the daemon's tweepy client)."""
    async with aiohttp.ClientSession() as session:
        client = tweepy_client(BOT_CREDENTIALS, session, base)
        response = await client.request(
            "POST",
            "/2/activity/subscriptions",
            params={},
            json={"event_type": "chat.received", "filter": {"user_id": BOT_ID},
                  "webhook_id": webhook_id},
            user_auth=True,
        )
        assert response.status == 200, await response.text()


async def bot_reads_and_answers(base: str, bot: BotIdentity, answer: str) -> str:
    """The bot reads the friend's latest message from X's history (key changes first), then
    answers it, encrypted and signed, as a reply to it. Returns what the bot read."""
    async with aiohttp.ClientSession() as session:
        client = XChatClient(BOT_CREDENTIALS, session, base)
        history = await client.get_conversation_events(XCHAT_FRIEND)
        friend_keys = await client.get_public_keys(XCHAT_FRIEND)
        chat = bot.new_chat()
        entries = [k.signing_entry() for k in (*friend_keys, bot.record())]
        chat.set_signing_keys(entries)
        chat.set_cache_keys(True)
        chat.decrypt_events(list(history.key_change_events))
        latest = history.events[0]  # newest first
        read = chat.decrypt_event(latest)
        assert read["verified"] is True and read["sender_id"] == XCHAT_FRIEND, read
        conversation = str(read["conversation_id"])
        sent = chat.encrypt_reply(conversation, answer, latest)
        await client.send_message(
            SendPayload(
                path_id=XCHAT_FRIEND,
                message_id=sent.message_id,
                encoded_message_create_event=sent.encrypted_content,
                encoded_message_event_signature=sent.encoded_event_signature,
                conversation_key_version=str(read["key_version"]),
            )
        )
        text: str = read["content"]["text"]
        return text


def test_a_friend_switched_to_xchat_writes_encrypted_and_sees_locks(
    world: World, page: Page, tmp_path: Path
) -> None:
    base = world.emulator.base
    page.goto(f"{base}/_emulator/chat")
    expect(page.locator("#connection")).to_have_text("Live")
    page.get_by_label("User id (digits)").fill(XCHAT_FRIEND)
    page.get_by_label("Name").fill(XCHAT_FRIEND_NAME)
    page.get_by_label("Name").press("Enter")
    xchat_switch = page.get_by_role("radio", name="X Chat")
    dm_switch = page.get_by_role("radio", name="DM")
    expect(dm_switch).to_be_checked()

    # No bot key yet: the switch says why X Chat cannot send, in the emulator's words.
    xchat_switch.check()
    expect(page.locator("#chat-with")).to_contain_text("on X Chat")
    status, refused, _ = http(
        "POST", f"{base}/_emulator/xchat", {"sender_id": "99", "text": "anyone?"}
    )
    assert status == 409
    note = page.locator("#xchat-note")
    expect(note).to_be_visible()
    expect(note).to_contain_text(refused["error"])
    box = page.get_by_label("Message to the bot")
    box.fill("are you there, encrypted?")
    box.press("Enter")
    expect(page.locator("#dm-error")).to_contain_text(refused["error"])
    expect(page.locator("#conversation li")).to_have_count(0)

    # The bot registers its keys and X Chat deliveries reach its webhook: the note goes.
    bot = in_thread(register_bot(base))
    expect(note).to_contain_text("No webhook is subscribed to chat.received")  # pushed live
    webhook_id = world.emulator.control("GET", "webhooks")["webhooks"][0]["id"]
    in_thread(subscribe_chat_received(base, webhook_id))
    expect(note).to_be_hidden()

    # The friend writes on X Chat: a locked turn, delivered as chat.received.
    question = "psst, a cat fact over X Chat?"
    box.fill(question)
    box.press("Enter")
    turn_in = page.locator('#conversation li[data-direction="in"][data-channel="xchat"]')
    expect(turn_in).to_have_count(1)
    expect(turn_in.locator(".text")).to_have_text(question)
    expect(turn_in.locator(".lock")).to_be_visible()
    expect(turn_in.locator(".lock")).to_have_attribute("aria-label", "X Chat, end-to-end encrypted")
    carried = page.locator(
        "#delivery-rows tr.delivery", has_text=f"X Chat from {XCHAT_FRIEND_NAME}"
    )
    expect(carried.locator("td:nth-child(2)")).to_have_text("200")
    expect(page.locator("#dm-error")).to_have_text("")

    # The bot decrypts what the page sent and answers; the friend's app decrypts the answer.
    fact = sorted(CORPUS)[len(question) % len(CORPUS)]
    assert in_thread(bot_reads_and_answers(base, bot, fact)) == question
    turn_out = page.locator('#conversation li[data-direction="out"][data-channel="xchat"]')
    expect(turn_out).to_have_count(1)
    expect(turn_out.locator(".text")).to_have_text(fact)
    expect(turn_out.locator(".lock")).to_be_visible()
    recorded = world.emulator.messages(XCHAT_FRIEND)
    assert [(m["direction"], m["channel"], m["text"]) for m in recorded] == [
        ("in", "xchat", question),
        ("out", "xchat", fact),
    ]

    shot = tmp_path / "chat-page-xchat.png"
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "chat-page-xchat.png")

    # The channel is per friend: a new friend starts on DM, this one stays on X Chat.
    page.get_by_label("User id (digits)").fill("31337")
    page.get_by_label("Name").fill("Ada")
    page.get_by_label("Name").press("Enter")
    expect(dm_switch).to_be_checked()
    page.locator(f'#friend-list [data-user-id="{XCHAT_FRIEND}"]').click()
    expect(xchat_switch).to_be_checked()
    expect(page.locator(f'#friend-list [data-user-id="{XCHAT_FRIEND}"] .lock')).to_be_visible()

    # Back to DM: the daemon answers by DM, and DM turns carry no lock.
    dm_switch.check()
    box.fill("and a plain DM fact?")
    box.press("Enter")
    dm_out = page.locator('#conversation li[data-direction="out"][data-channel="dm"]')
    expect(dm_out).to_have_count(1)
    assert any(dm_out.locator(".text").inner_text().startswith(f) for f in CORPUS)
    expect(page.locator("#conversation li[data-channel=dm] .lock")).to_have_count(0)
    expect(page.locator("#conversation li .lock")).to_have_count(2)
