"""The `/_emulator/` control API: play users, inspect traffic, inject faults.

Not part of X. It has no authentication, which is why the emulator listens on loopback by
default. Errors are `{"error": "..."}` with status 400 (or 404 for unknown ids).

`GET /webhooks` lists each webhook with its subscriptions, `GET /subscriptions` every
subscription of both kinds. `POST /webhooks` registers (CRC first) and subscribes the bot
like `--webhook-url`, but ignores the tier limits: it is a back door for tests and the demo.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from catbot.emulator.config import USER_ID_RE
from catbot.emulator.dispatch import dispatch, redeliver
from catbot.emulator.payloads import encode
from catbot.emulator.refusals import RegistryError
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state import Faults, Message, SignedBody
from catbot.emulator.webhooks import register_and_subscribe_bot
from catbot.signing import sign_body

log = logging.getLogger("catbot.emulator.control")

PREFIX = "/_emulator"
MAX_BATCH = 100
MAX_SENDER_NAME = 50


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ControlError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ControlError("body must be a JSON object")
    return data


@web.middleware
async def control_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except ControlError as exc:
        return _error(str(exc), exc.status)
    return response


# --- users DM the bot ------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingDm:
    sender_id: str
    text: str
    sender_name: str | None
    created_timestamp: str | None


def parse_incoming(data: Any, bot_user_id: str, max_text_length: int) -> IncomingDm:
    if not isinstance(data, dict):
        raise ControlError("each message must be a JSON object")
    sender = data.get("sender_id")
    if not isinstance(sender, str) or not USER_ID_RE.match(sender):
        raise ControlError("sender_id must be a string of 1 to 19 digits")
    if sender == bot_user_id:
        raise ControlError("sender_id is the bot itself; the bot sends through X's DM routes")
    text = data.get("text")
    if not isinstance(text, str) or not text:
        raise ControlError("text must be a non-empty string")
    if len(text) > max_text_length:
        raise ControlError(f"text is longer than {max_text_length} characters")
    name = data.get("sender_name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= MAX_SENDER_NAME):
        raise ControlError(f"sender_name must be a string of 1 to {MAX_SENDER_NAME} characters")
    created = data.get("created_timestamp")
    if isinstance(created, int) and not isinstance(created, bool):
        created = str(created)
    if created is not None and (not isinstance(created, str) or not created.isdigit()):
        raise ControlError("created_timestamp must be epoch milliseconds (a digit string)")
    return IncomingDm(sender, text, name, created)


def _record_incoming(runtime: Runtime, dm: IncomingDm) -> Message:
    state = runtime.state
    state.ensure_user(dm.sender_id, dm.sender_name)
    state.stats.events_received += 1
    return state.record_message(
        sender_id=dm.sender_id,
        recipient_id=state.bot_user_id,
        text=dm.text,
        direction="in",
        created_timestamp=dm.created_timestamp,
    )


async def post_dm(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    dm = parse_incoming(
        await _json_object(request), runtime.state.bot_user_id, runtime.config.max_text_length
    )
    message = _record_incoming(runtime, dm)
    outcomes = await dispatch(runtime, [message])
    return web.json_response(
        {"event_id": message.id, "deliveries": [o.to_json() for o in outcomes]}
    )


async def post_dm_batch(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    items = (await _json_object(request)).get("messages")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise ControlError(f"messages must be a list of 1 to {MAX_BATCH} messages")
    bot, limit = runtime.state.bot_user_id, runtime.config.max_text_length
    dms = [parse_incoming(item, bot, limit) for item in items]  # all valid, or none recorded
    messages = [_record_incoming(runtime, dm) for dm in dms]
    outcomes = await dispatch(runtime, messages)
    return web.json_response(
        {"event_ids": [m.id for m in messages], "deliveries": [o.to_json() for o in outcomes]}
    )


async def post_redeliver(request: web.Request) -> web.Response:
    event_id = (await _json_object(request)).get("event_id")
    if not isinstance(event_id, str):
        raise ControlError("event_id must be a string")
    outcomes = await redeliver(_runtime(request), event_id)
    if outcomes is None:
        raise ControlError(f"no delivery carried event {event_id}", status=404)
    return web.json_response({"deliveries": [o.to_json() for o in outcomes]})


async def post_deliver_raw(request: web.Request) -> web.Response:
    """Post arbitrary bytes to every webhook: unknown event kinds, bad signatures, bad JSON."""
    runtime = _runtime(request)
    data = await _json_object(request)
    if "body_text" in data:
        if not isinstance(data["body_text"], str):
            raise ControlError("body_text must be a string")
        body = data["body_text"].encode("utf-8")
    elif "body" in data:
        body = encode(data["body"])
    else:
        raise ControlError("give body (any JSON) or body_text (raw string)")
    sign = data.get("sign", True)
    signature = data.get("signature")
    if not isinstance(sign, bool) or not (signature is None or isinstance(signature, str)):
        raise ControlError("sign must be a boolean and signature a string")
    if signature is None and sign:
        signature = sign_body(runtime.config.consumer_secret, body)
    bodies = [SignedBody(w, body, signature) for w in runtime.state.webhooks]
    outcomes = await runtime.deliverer.send(bodies)
    return web.json_response({"deliveries": [o.to_json() for o in outcomes]})


# --- inspection ------------------------------------------------------------------------


async def get_messages(request: web.Request) -> web.Response:
    user_id = request.query.get("user_id")
    if user_id is not None and not USER_ID_RE.match(user_id):
        raise ControlError("user_id must be 1 to 19 digits")
    messages = _runtime(request).state.conversation(user_id)
    return web.json_response({"messages": [m.to_json() for m in messages]})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(_runtime(request).state.stats.to_json())


async def get_deliveries(request: web.Request) -> web.Response:
    return web.json_response({"deliveries": list(_runtime(request).state.delivery_log)})


async def get_health(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    return web.json_response(
        {"ok": True, "api": runtime.config.api, "bot_user_id": runtime.state.bot_user_id}
    )


async def post_reset(request: web.Request) -> web.Response:
    _runtime(request).state.reset()
    return web.json_response({"reset": True})


# --- faults ----------------------------------------------------------------------------


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(_runtime(request).state.faults.to_json())


async def post_faults(request: web.Request) -> web.Response:
    try:
        faults = Faults.from_json(await _json_object(request))
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    _runtime(request).state.faults = faults
    return web.json_response(faults.to_json())


async def delete_faults(request: web.Request) -> web.Response:
    state = _runtime(request).state
    state.faults = Faults()
    return web.json_response(state.faults.to_json())


# --- webhooks --------------------------------------------------------------------------


def _webhook_json(runtime: Runtime, webhook_id: str) -> dict[str, Any]:
    state = runtime.state
    data = state.webhooks[webhook_id].to_json()
    data["subscriptions"] = [s.to_json() for s in state.subscriptions_for_webhook(webhook_id)]
    return data


async def get_webhooks(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    return web.json_response(
        {"webhooks": [_webhook_json(runtime, wid) for wid in runtime.state.webhooks]}
    )


async def post_webhook(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    url = (await _json_object(request)).get("url")
    if not isinstance(url, str):
        raise ControlError("url must be a string")
    try:
        webhook = await register_and_subscribe_bot(runtime, url)
    except RegistryError as exc:
        raise ControlError(str(exc)) from None
    return web.json_response(_webhook_json(runtime, webhook.id))


async def get_subscriptions(request: web.Request) -> web.Response:
    """Every subscription, both kinds (Account Activity users and X Activity API)."""
    subs = _runtime(request).state.subscriptions.values()
    return web.json_response({"subscriptions": [s.to_json() for s in subs]})


async def delete_webhook(request: web.Request) -> web.Response:
    webhook_id = request.match_info["webhook_id"]
    if _runtime(request).state.remove_webhook(webhook_id) is None:
        raise ControlError(f"no webhook {webhook_id}", status=404)
    return web.json_response({"deleted": True})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(f"{PREFIX}/dm", post_dm)
    r.add_post(f"{PREFIX}/dm_batch", post_dm_batch)
    r.add_post(f"{PREFIX}/redeliver", post_redeliver)
    r.add_post(f"{PREFIX}/deliver_raw", post_deliver_raw)
    r.add_get(f"{PREFIX}/messages", get_messages)
    r.add_get(f"{PREFIX}/stats", get_stats)
    r.add_get(f"{PREFIX}/deliveries", get_deliveries)
    r.add_get(f"{PREFIX}/health", get_health)
    r.add_post(f"{PREFIX}/reset", post_reset)
    r.add_get(f"{PREFIX}/faults", get_faults)
    r.add_post(f"{PREFIX}/faults", post_faults)
    r.add_delete(f"{PREFIX}/faults", delete_faults)
    r.add_get(f"{PREFIX}/webhooks", get_webhooks)
    r.add_post(f"{PREFIX}/webhooks", post_webhook)
    r.add_delete(f"{PREFIX}/webhooks/{{webhook_id}}", delete_webhook)
    r.add_get(f"{PREFIX}/subscriptions", get_subscriptions)
