"""The emulator's chat page: try the bot in a browser.

`GET /_emulator/chat` serves the page (static files from `static/`, no build step, nothing
loaded from elsewhere); it writes through the control API and follows every change over
`GET /_emulator/events` (server-sent events: a `snapshot`, then each change as the state's
feed tells it). The events and their data are described in docs/emulator.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from catbot.emulator.control import PREFIX, webhooks_json
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state import EmulatorState
from catbot.emulator.state.common import Listener
from catbot.emulator.state.users import UserProfile
from catbot.emulator.xchat_friends import xchat_status

STATIC_DIR = Path(__file__).with_name("static")
CHAT_PATH = f"{PREFIX}/chat"
EVENTS_PATH = f"{PREFIX}/events"
_RECENT_DELIVERIES = 20
# A connection whose browser stops reading is closed rather than buffered without end.
_QUEUE_SIZE = 1_000
_KEEPALIVE_SECONDS = 10.0
_CONTENT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}
# Set at shutdown so open event streams end at once instead of holding the server up.
_CLOSING = web.AppKey("catbot_emulator_chat_closing", asyncio.Event)


def _users_json(users: Iterable[UserProfile]) -> list[dict[str, str]]:
    return [{"id": u.id, "name": u.name, "screen_name": u.screen_name} for u in users]


def snapshot(runtime: Runtime) -> dict[str, Any]:
    state = runtime.state
    # The bot is made at start-up and users are never forgotten, so it is always there.
    bot = state.users[state.bot_user_id]
    return {
        "bot": {"id": bot.id, "name": bot.name, "screen_name": bot.screen_name},
        "users": _users_json(state.users.values()),
        "messages": [m.to_json() for m in state.messages.conversation(None)],
        "posts": [p.to_json() for p in state.posts.thread(None)],
        "webhooks": webhooks_json(state),
        "deliveries": state.traffic.deliveries(last=_RECENT_DELIVERIES),
        "max_text_length": runtime.config.max_text_length,
        "xchat": xchat_status(runtime),
    }


def _frame(topic: str, data: dict[str, Any]) -> bytes:
    return f"event: {topic}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


ChangeQueue = asyncio.Queue[tuple[str, dict[str, Any]] | None]


def _enriched(state: EmulatorState, topic: str, data: dict[str, Any]) -> dict[str, Any]:
    """A change as the page wants it: with the users it names (the page names friends it has
    not seen yet), or the whole registry when the webhooks changed."""
    if topic == "message":
        parties = (data["sender_id"], data["recipient_id"])
        return {**data, "users": _users_json(state.users.known(parties))}
    if topic == "post":
        involved: list[str] = [data["author_id"]]
        post = state.posts.by_id(data["id"])
        if post is not None:
            if post.in_reply_to_user_id is not None:
                involved.append(post.in_reply_to_user_id)
            involved.extend(post.mentioned_ids)
        return {**data, "users": _users_json(state.users.known(dict.fromkeys(involved)))}
    if topic == "webhooks":
        return {"webhooks": webhooks_json(state)}
    return data


def _listener(state: EmulatorState, queue: ChangeQueue) -> Listener:
    def listen(topic: str, data: dict[str, Any]) -> None:
        try:
            queue.put_nowait((topic, _enriched(state, topic, data)))
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(None)  # too far behind: end this stream, the browser reconnects

    return listen


async def _stream(
    response: web.StreamResponse,
    queue: ChangeQueue,
    closing: asyncio.Event,
    closed: asyncio.Future[Any],
) -> None:
    """Write each change as it comes, a keep-alive comment when none came for a while."""
    while not closing.is_set():
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait(
            {getter, closed}, timeout=_KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        if getter not in done:
            getter.cancel()
            if not closing.is_set():
                await response.write(b": keep-alive\n\n")
            continue
        item = getter.result()
        if item is None:
            break
        await response.write(_frame(*item))


async def get_events(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    state = runtime.state
    closing = request.app[_CLOSING]
    queue: ChangeQueue = asyncio.Queue(_QUEUE_SIZE)
    listen = _listener(state, queue)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    state.feed.listen(listen)
    closed = asyncio.ensure_future(closing.wait())
    try:
        first = _frame("snapshot", snapshot(runtime))
        await response.write(b"retry: 1000\n\n" + first)
        await _stream(response, queue, closing, closed)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        closed.cancel()
        state.feed.stop_listening(listen)
    return response


async def get_chat(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "chat.html", headers={"Cache-Control": "no-cache"})


async def get_static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC_DIR / name
    content_type = _CONTENT_TYPES.get(path.suffix)
    # Only plain file names of known kinds: no traversal, no directory listings.
    if "/" in name or name.startswith(".") or content_type is None or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        path,
        headers={"Content-Type": f"{content_type}; charset=utf-8", "Cache-Control": "no-cache"},
    )


async def _on_shutdown(app: web.Application) -> None:
    app[_CLOSING].set()


def add_routes(app: web.Application) -> None:
    app[_CLOSING] = asyncio.Event()
    app.on_shutdown.append(_on_shutdown)
    r = app.router
    r.add_get(CHAT_PATH, get_chat)
    r.add_get(f"{PREFIX}/static/{{name}}", get_static)
    r.add_get(EVENTS_PATH, get_events)
