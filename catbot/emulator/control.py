"""The `/_emulator/` control API: play users, inspect traffic, inject faults.

Not part of X. It has no authentication, so it answers the developer's own tools only
(`catbot.emulator.guard`): requests addressed to a loopback `Host` (127.0.0.1, localhost,
[::1]; any port), without a foreign `Origin`, with bodies sent as `application/json` (403 or
415 otherwise), and the emulator listens beyond loopback only with `--allow-remote`. Errors
are `{"error": "..."}` with status 400 (or 404 for unknown ids).

Users and traffic:
- `POST /dm` `{"sender_id", "text", "sender_name"?, "created_timestamp"?}`: that user DMs
  the bot; answers `{"event_id", "deliveries": [{"url", "status", "error"}]}` (first attempts;
  `"held": true` when the reorder fault holds them, `"duplicate": true` on copies).
- `POST /dm_batch` `{"messages": [...]}`: one delivery holding several events.
- `POST /xchat` `{"sender_id", "text", "sender_name"?, "created_timestamp"?}`: the same as
  an end-to-end encrypted X Chat message. The user (every emulated user has X Chat keys)
  encrypts `text` to the bot, making the conversation key the first time or when either
  key changed, and X delivers `chat.received` (X Activity API envelope, payload as X's
  documented example) to the bot's `chat.received` subscriptions. Answers `{"event_id",
  "conversation_id", "sequence_id", "deliveries"}`; 409 while the bot has registered no
  X Chat public key (`catbot xchat register`). Shapes and routes in
  `catbot.emulator.xchat_api`. `GET /xchat`: `{"bot_key_version", "subscribed",
  "reason"}`, whether friends can write to the bot on X Chat yet (the chat page's switch).
- `POST /mention` `{"sender_id", "text", "sender_name"?, "user_has_blocked"?: bool or
  "true"/"false", "is_blocked_by"?: the same, "retweet"?: bool, "in_reply_to_tweet_id"?}`:
  that user posts publicly naming the bot (`@<bot screen name> ` is put in front when the
  text does not name it; up to 25,000 characters, X Premium's longform posts: over 140 they
  arrive in Account Activity's `extended_tweet`); `retweet` makes it a retweet ("RT @user:
  text", with `retweeted_status`). Answers `{"tweet_id", "deliveries"}` like `/dm`.
  Delivered as `tweet_create_events` (Account Activity, `user_has_blocked` passed through as
  given, the string "false" when absent as in X's example; `is_blocked_by` only when given)
  and, in the X Activity API, `post.mention.create` and, when it replies to one of the bot's
  posts, `post.reply.create` too (`data.payload` is the v2 post, `data.includes` beside it,
  one `event_uuid` per delivery); shapes in `catbot.emulator.posts`.
- `GET /posts[?user_id=]`: the public thread, oldest first: `{"posts": [{"id", "author_id",
  "text", "in_reply_to_tweet_id", "created_at", "conversation_id", "retweeted_status_id"}]}`
  (mentions and the bot's posts through `POST /2/tweets`).
- `POST /redeliver` `{"event_id"}` (a DM event id or a post's `tweet_id`): the same bytes
  again. `POST /deliver_raw` `{"body"}` or
  `{"body_text"}`, `"sign"`, `"signature"`: arbitrary bodies to the webhooks.
- `GET /messages[?user_id=]` (DMs and X Chat messages both ways, oldest first, each with
  `"channel": "dm"` or `"xchat"`; the bot's X Chat messages as the friend's app decrypts
  them), `GET /stats`, `GET /deliveries` (outgoing POSTs, with
  `webhook_id` and `attempt`), `GET /requests[?route=dm&since=<epoch s>]` (X API requests:
  `at` arrival, `answered_at`, `method`, `path`, `route` (`dm`, `xchat`, `webhooks`, `auth`,
  `other`), `status` (null when the connection was dropped), `outcome` for DM sends, X Chat
  sends and posts: `sent`, `rate_limited`, `failed`, `forbidden`, `dropped`, `invalid`,
  `unauthorized`; `route=tweets` for `POST /2/tweets`, `route=xchat` for the X Chat routes
  and the public-key directory).
- `POST /reset`: forget traffic (held deliveries too), faults, counters and budgets
  (webhooks, subscriptions and the delivery mode stay).

Webhooks: `GET /webhooks` lists each webhook with its subscriptions, `GET /subscriptions`
every subscription of both kinds. `POST /webhooks` `{"url"}` registers (CRC first) and
subscribes the bot like `--webhook-url`, but ignores the tier limits: a back door for tests
and the demo. `DELETE /webhooks/{id}`. `POST /crc` `{"webhook_id"?}` runs X's CRC check now
(one webhook, or every registered one) and answers each result: a failed or late answer
invalidates the webhook until it is revalidated.

Delivery spreading: `GET|POST /delivery_mode` `{"mode": "all" | "round_robin",
"duplicate_every": N}` (default 0, never). "all" (X's behaviour): each event to every valid
subscribed webhook. "round_robin": each delivery to ONE valid subscribed webhook, in turn, as
a load balancer in front of replicas; every Nth delivery also to the next webhook.

Faults: `GET /faults`; `POST /faults` replaces them all (fields not given are off);
`PATCH /faults` changes only the fields given; `DELETE /faults` clears them. Fields:
- `dm_delay_seconds`: every DM send answers this much later (after authentication).
- `dm_fail_next` N, `dm_fail_status` (default 503, any 400-599): the next N DM sends fail.
- `dm_fail_ratio` (0-1): each DM send fails with that probability (draws from `seed`).
- `dm_fail_for_seconds` S: every DM send fails for the next S seconds (X is down).
- `dm_drop_next` N, `dm_drop_ratio` (0-1): the connection is closed without an answer,
  before anything is sent (the client sees a disconnect, the DM is not recorded).
- `dm_rate_limit_next` N: the next N DM sends get 429; `dm_rate_limit_reset_in` (default 1)
  sets their `x-rate-limit-reset`, null sends a 429 without any `x-rate-limit-*` header.
- `dm_rate_limit_for_seconds` S: every DM send gets 429 until a whole second S from now,
  which `x-rate-limit-reset` names (no headers when `dm_rate_limit_reset_in` is null).
- `dm_budget_limit` N, `dm_budget_window` S: the real per-window DM budget (default
  `--dm-rate-limit`/`--dm-rate-window`); changing it starts fresh windows.
- `forbidden_recipients` [ids] (403 code 349), `automated_recipients` [ids] (403 code 226),
  `forbidden_codes` {id: 150|151|226|349}: permanent refusals of DMs to those users.
- `post_fail_next` N, `post_fail_status` (default 503): the next N `POST /2/tweets` fail;
  `post_rate_limit_next` N: the next N get 429.
- X Chat sends (`POST /2/chat/conversations/{id}/messages`), their own family, as the DM
  fields: `xchat_delay_seconds`; `xchat_fail_next` N, `xchat_fail_status` (default 503),
  `xchat_fail_for_seconds` S (after the message was checked; X keeps nothing);
  `xchat_drop_next` N (disconnect before anything); `xchat_rate_limit_next` N,
  `xchat_rate_limit_for_seconds` S, `xchat_rate_limit_reset_in` (default 1; null: a 429
  without headers); `xchat_budget_limit` N, `xchat_budget_window` S (the real allowance,
  default 200 per 900 s: X documents none, see `catbot.emulator.xchat_api`);
  `xchat_forbidden_recipients` [ids]: a permanent 403 (code 349) for sends to them.
- `latency` {key: seconds}: delay before handling any X request. Keys: `dm`, `xchat`,
  `tweets`, `webhooks`
  (all management routes), `auth`, `*` (every X route), a path glob (`/2/webhooks*`), a
  route template (`/2/webhooks/{webhook_id}`), either optionally after a method
  (`PUT /2/webhooks/*`). The largest matching delay applies.
- `deliver_duplicates_ratio` (0-1): a delivery is also sent a second time, concurrently.
- `reorder_window` S: deliveries are held, then sent one by one in a shuffled order S
  seconds after the first was held.
- `redelivery_delays` [s, ...]: X's retries of a delivery that failed (no answer within the
  delivery timeout, a dropped connection, a non-2xx answer), one per delay; default
  `--redelivery-delays` (none). In round-robin mode a retry goes to the next webhook.
- `delivery_timeout` S: how long X waits for a webhook's answer (default
  `--delivery-timeout`, 10); a slower answer counts as failed.
- `crc_timeout` S: the CRC answer deadline (default `--crc-timeout`, 3).
- `seed`: seeds every random draw above, so a run can be replayed.
Everything injected is counted in `GET /stats`: `post_failed`, `dm_dropped`, `dm_forbidden`,
`dm_rate_limited`, `dm_failed`, `xchat_dropped`, `xchat_forbidden`, `xchat_rate_limited`,
`xchat_failed`, `latency_injected`, `delivery_timeouts`, `redeliveries`,
`redeliveries_exhausted`, `duplicates_sent`, `deliveries_held`, `reorder_flushes`; X Chat
traffic also as `xchat_received` (messages to the bot), `xchat_requests` and `xchat_sent`.
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
from catbot.emulator.state import DELIVERY_MODES, DeliveryMode, Message, SignedBody
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
        reply_to = state.post_by_id(target) if isinstance(target, str) else None
        if reply_to is None:
            raise ControlError(f"no post {target} to reply to", status=404)
    bot_name = state.ensure_user(state.bot_user_id).screen_name
    text = dm.text
    if not any(m.user_id == state.bot_user_id for m in find_mentions(state, text)):
        text = f"@{bot_name} {text}"
    if len(text) > MAX_LONGFORM_LENGTH:
        raise ControlError(
            f"text (with @{bot_name} in front) is over {MAX_LONGFORM_LENGTH} characters"
        )
    state.ensure_user(dm.sender_id, dm.sender_name)
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
    bodies = [SignedBody(w, body, signature, "raw") for w in runtime.state.webhooks]
    outcomes = await runtime.pipeline.deliver(bodies)
    return web.json_response({"deliveries": [o.to_json() for o in outcomes]})


# --- inspection ------------------------------------------------------------------------


async def get_messages(request: web.Request) -> web.Response:
    user_id = request.query.get("user_id")
    if user_id is not None and not USER_ID_RE.match(user_id):
        raise ControlError("user_id must be 1 to 19 digits")
    messages = _runtime(request).state.conversation(user_id)
    return web.json_response({"messages": [m.to_json() for m in messages]})


async def get_posts(request: web.Request) -> web.Response:
    user_id = request.query.get("user_id")
    if user_id is not None and not USER_ID_RE.match(user_id):
        raise ControlError("user_id must be 1 to 19 digits")
    posts = _runtime(request).state.thread(user_id)
    return web.json_response({"posts": [p.to_json() for p in posts]})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(_runtime(request).state.stats.to_json())


async def get_deliveries(request: web.Request) -> web.Response:
    return web.json_response({"deliveries": list(_runtime(request).state.delivery_log)})


async def get_requests(request: web.Request) -> web.Response:
    route = request.query.get("route")
    since_text = request.query.get("since")
    try:
        since = float(since_text) if since_text is not None else None
    except ValueError:
        raise ControlError("since must be a Unix time in seconds") from None
    entries = [
        entry
        for entry in _runtime(request).state.request_log
        if (route is None or entry["route"] == route) and (since is None or entry["at"] >= since)
    ]
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
        wid
        for wid, hook in state.webhooks.items()
        if hook.valid and state.subscriptions_for_webhook(wid)
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
    spreading = runtime.state.spreading
    new_mode: DeliveryMode = "round_robin" if mode == "round_robin" else "all"
    spreading.mode, spreading.duplicate_every = new_mode, every
    spreading.planned = 0
    return web.json_response(_delivery_mode_json(runtime))


# --- CRC on demand ---------------------------------------------------------------------


async def post_crc(request: web.Request) -> web.Response:
    """X's CRC check now, as its periodic re-check does it: a failure invalidates."""
    runtime = _runtime(request)
    webhook_id = (await _json_object(request)).get("webhook_id")
    if webhook_id is not None and not isinstance(webhook_id, str):
        raise ControlError("webhook_id must be a string")
    hooks = runtime.state.webhooks
    if webhook_id is not None and webhook_id not in hooks:
        raise ControlError(f"no webhook {webhook_id}", status=404)
    targets = [hooks[webhook_id]] if webhook_id is not None else list(hooks.values())
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
