"""The `/_emulator/` control API: play users, inspect traffic, inject faults, steer deliveries.

Not part of X, and without authentication: `catbot.emulator.guard` keeps it to the
developer's own tools. Errors are `{"error": "..."}` with status 400 (404 for unknown ids,
409 where X Chat is not set up yet). Every route, field and fault is described in
docs/emulator.md; keep that page in step with this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from catbot.emulator.config import USER_ID_RE
from catbot.emulator.dispatch import dispatch, redeliver
from catbot.emulator.faults import Faults
from catbot.emulator.payloads import encode
from catbot.emulator.posts import MAX_LONGFORM_LENGTH, create_post, dispatch_post, find_mentions
from catbot.emulator.refusals import RegistryError
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state import EmulatorState
from catbot.emulator.state.messages import Message
from catbot.emulator.state.registry import Webhook
from catbot.emulator.state.spreading import DELIVERY_MODES, DeliveryMode
from catbot.emulator.state.traffic import SignedBody
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
    state.users.ensure(dm.sender_id, dm.sender_name)
    state.stats.events_received += 1
    return state.messages.record(
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


# --- users mention the bot in public posts ---------------------------------------------


_MENTION_FIELDS = frozenset(
    {
        "sender_id",
        "text",
        "sender_name",
        "user_has_blocked",
        "is_blocked_by",
        "retweet",
        "in_reply_to_tweet_id",
    }
)


def _blocked_flag(value: Any, name: str = "user_has_blocked") -> bool | str:
    """`user_has_blocked` as X sends it, which varies: a bool or a "true"/"false" string
    ("false" in X's own @mentions example, so that when absent)."""
    if value is None:
        return "false"
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value
    raise ControlError(f'{name} must be a boolean or the string "true" or "false"')


async def post_mention(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    state = runtime.state
    data = await _json_object(request)
    unknown = sorted(set(data) - _MENTION_FIELDS)
    if unknown:
        raise ControlError(f"unknown mention fields: {', '.join(unknown)}")
    dm = parse_incoming(
        {k: data[k] for k in ("sender_id", "text", "sender_name") if k in data},
        state.bot_user_id,
        MAX_LONGFORM_LENGTH,
    )
    blocked = _blocked_flag(data.get("user_has_blocked"))
    blocked_by = data.get("is_blocked_by")
    if blocked_by is not None:
        blocked_by = _blocked_flag(blocked_by, "is_blocked_by")
    retweet = data.get("retweet", False)
    if not isinstance(retweet, bool):
        raise ControlError("retweet must be a boolean")
    reply_to = None
    target = data.get("in_reply_to_tweet_id")
    if target is not None:
        reply_to = state.posts.by_id(target) if isinstance(target, str) else None
        if reply_to is None:
            raise ControlError(f"no post {target} to reply to", status=404)
    bot_name = state.users.ensure(state.bot_user_id).screen_name
    text = dm.text
    if not any(m.user_id == state.bot_user_id for m in find_mentions(state, text)):
        text = f"@{bot_name} {text}"
    if len(text) > MAX_LONGFORM_LENGTH:
        raise ControlError(
            f"text (with @{bot_name} in front) is over {MAX_LONGFORM_LENGTH} characters"
        )
    state.users.ensure(dm.sender_id, dm.sender_name)
    state.stats.mentions_received += 1
    post = create_post(
        state,
        author_id=dm.sender_id,
        text=text,
        in_reply_to=reply_to,
        retweet=retweet,
        user_has_blocked=blocked,
        is_blocked_by=blocked_by,
    )
    outcomes = await dispatch_post(runtime, post)
    return web.json_response({"tweet_id": post.id, "deliveries": [o.to_json() for o in outcomes]})


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
    bodies = [SignedBody(w, body, signature, "raw") for w in runtime.state.webhooks.ids()]
    outcomes = await runtime.pipeline.deliver(bodies)
    return web.json_response({"deliveries": [o.to_json() for o in outcomes]})


# --- inspection ------------------------------------------------------------------------


async def get_messages(request: web.Request) -> web.Response:
    user_id = request.query.get("user_id")
    if user_id is not None and not USER_ID_RE.match(user_id):
        raise ControlError("user_id must be 1 to 19 digits")
    messages = _runtime(request).state.messages.conversation(user_id)
    return web.json_response({"messages": [m.to_json() for m in messages]})


async def get_posts(request: web.Request) -> web.Response:
    user_id = request.query.get("user_id")
    if user_id is not None and not USER_ID_RE.match(user_id):
        raise ControlError("user_id must be 1 to 19 digits")
    posts = _runtime(request).state.posts.thread(user_id)
    return web.json_response({"posts": [p.to_json() for p in posts]})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(_runtime(request).state.stats.to_json())


async def get_deliveries(request: web.Request) -> web.Response:
    return web.json_response({"deliveries": _runtime(request).state.traffic.deliveries()})


async def get_requests(request: web.Request) -> web.Response:
    route = request.query.get("route")
    since_text = request.query.get("since")
    try:
        since = float(since_text) if since_text is not None else None
    except ValueError:
        raise ControlError("since must be a Unix time in seconds") from None
    entries = _runtime(request).state.traffic.requests(route, since)
    return web.json_response({"requests": entries})


async def get_health(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    return web.json_response(
        {"ok": True, "api": runtime.config.api, "bot_user_id": runtime.state.bot_user_id}
    )


async def post_reset(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    runtime.pipeline.discard_held()
    runtime.state.reset()
    return web.json_response({"reset": True})


# --- faults ----------------------------------------------------------------------------


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(_runtime(request).state.faults.to_json())


async def _set_faults(request: web.Request, *, merge: bool) -> web.Response:
    state = _runtime(request).state
    try:
        faults = Faults.from_json(await _json_object(request), base=state.faults if merge else None)
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    state.apply_faults(faults)
    return web.json_response(faults.to_json())


async def post_faults(request: web.Request) -> web.Response:
    return await _set_faults(request, merge=False)


async def patch_faults(request: web.Request) -> web.Response:
    return await _set_faults(request, merge=True)


async def delete_faults(request: web.Request) -> web.Response:
    state = _runtime(request).state
    state.apply_faults(Faults())
    return web.json_response(state.faults.to_json())


# --- delivery spreading ----------------------------------------------------------------


def _delivery_mode_json(runtime: Runtime) -> dict[str, Any]:
    state = runtime.state
    rotation = [
        hook.id
        for hook in state.webhooks.all()
        if hook.valid and state.subscriptions.for_webhook(hook.id)
    ]
    return {**state.spreading.to_json(), "rotation": rotation}


async def get_delivery_mode(request: web.Request) -> web.Response:
    return web.json_response(_delivery_mode_json(_runtime(request)))


async def post_delivery_mode(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    data = await _json_object(request)
    unknown = sorted(set(data) - {"mode", "duplicate_every"})
    if unknown:
        raise ControlError(f"unknown delivery mode fields: {', '.join(unknown)}")
    mode = data.get("mode")
    if mode not in DELIVERY_MODES:
        raise ControlError(f"mode must be one of {', '.join(DELIVERY_MODES)}")
    every = data.get("duplicate_every", 0)
    if type(every) is not int or every < 0:
        raise ControlError("duplicate_every must be a whole number, 0 for never")
    new_mode: DeliveryMode = "round_robin" if mode == "round_robin" else "all"
    runtime.state.spreading.configure(new_mode, every)
    return web.json_response(_delivery_mode_json(runtime))


# --- CRC on demand ---------------------------------------------------------------------


async def post_crc(request: web.Request) -> web.Response:
    """X's CRC check now, as its periodic re-check does it: a failure invalidates."""
    runtime = _runtime(request)
    webhook_id = (await _json_object(request)).get("webhook_id")
    if webhook_id is not None and not isinstance(webhook_id, str):
        raise ControlError("webhook_id must be a string")
    hooks = runtime.state.webhooks
    if webhook_id is None:
        targets = hooks.all()
    else:
        webhook = hooks.get(webhook_id)
        if webhook is None:
            raise ControlError(f"no webhook {webhook_id}", status=404)
        targets = [webhook]
    results = []
    for webhook in targets:
        outcome = await runtime.deliverer.crc(webhook)
        results.append(
            {
                "webhook_id": webhook.id,
                "valid": webhook.valid,
                "status": outcome.status,
                "error": outcome.error,
            }
        )
    return web.json_response({"crc": results})


# --- webhooks --------------------------------------------------------------------------


def webhook_json(state: EmulatorState, webhook: Webhook) -> dict[str, Any]:
    """A webhook with its subscriptions, as the control API and the chat page show it."""
    data = webhook.to_json()
    data["subscriptions"] = [s.to_json() for s in state.subscriptions.for_webhook(webhook.id)]
    return data


def webhooks_json(state: EmulatorState) -> list[dict[str, Any]]:
    return [webhook_json(state, w) for w in state.webhooks.all()]


async def get_webhooks(request: web.Request) -> web.Response:
    return web.json_response({"webhooks": webhooks_json(_runtime(request).state)})


async def post_webhook(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    url = (await _json_object(request)).get("url")
    if not isinstance(url, str):
        raise ControlError("url must be a string")
    try:
        webhook = await register_and_subscribe_bot(runtime, url)
    except RegistryError as exc:
        raise ControlError(str(exc)) from None
    return web.json_response(webhook_json(runtime.state, webhook))


async def get_subscriptions(request: web.Request) -> web.Response:
    """Every subscription, both kinds (Account Activity users and X Activity API)."""
    subs = _runtime(request).state.subscriptions.all()
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
    r.add_post(f"{PREFIX}/mention", post_mention)
    r.add_get(f"{PREFIX}/posts", get_posts)
    r.add_post(f"{PREFIX}/redeliver", post_redeliver)
    r.add_post(f"{PREFIX}/deliver_raw", post_deliver_raw)
    r.add_get(f"{PREFIX}/messages", get_messages)
    r.add_get(f"{PREFIX}/stats", get_stats)
    r.add_get(f"{PREFIX}/deliveries", get_deliveries)
    r.add_get(f"{PREFIX}/requests", get_requests)
    r.add_get(f"{PREFIX}/health", get_health)
    r.add_post(f"{PREFIX}/reset", post_reset)
    r.add_get(f"{PREFIX}/faults", get_faults)
    r.add_post(f"{PREFIX}/faults", post_faults)
    r.add_patch(f"{PREFIX}/faults", patch_faults)
    r.add_delete(f"{PREFIX}/faults", delete_faults)
    r.add_get(f"{PREFIX}/webhooks", get_webhooks)
    r.add_post(f"{PREFIX}/webhooks", post_webhook)
    r.add_delete(f"{PREFIX}/webhooks/{{webhook_id}}", delete_webhook)
    r.add_get(f"{PREFIX}/subscriptions", get_subscriptions)
    r.add_get(f"{PREFIX}/delivery_mode", get_delivery_mode)
    r.add_post(f"{PREFIX}/delivery_mode", post_delivery_mode)
    r.add_post(f"{PREFIX}/crc", post_crc)
