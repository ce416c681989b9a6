"""X's DM-sending routes, v2 and v1.1, with auth, budgets, faults and X's answer shapes.

The order of checks follows what a client sees from X: authentication first, then the
rate-limit budget (spent by every authenticated call, valid or not), then the request
itself. Injected faults slot in where X's own failures would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from catbot.emulator import errors
from catbot.emulator.access import oauth_outcome
from catbot.emulator.config import USER_ID_RE
from catbot.emulator.dispatch import dispatch
from catbot.emulator.errors import Style, XError
from catbot.emulator.faults import Faults
from catbot.emulator.oauth import AuthOutcome
from catbot.emulator.payloads import message_create_event
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state.budgets import RateWindow
from catbot.emulator.state.messages import Message
from catbot.emulator.state.stats import Stats
from catbot.emulator.traffic import OUTCOME, drop_connection

log = logging.getLogger("catbot.emulator.dm")

V2_WITH_PARTICIPANT = "/2/dm_conversations/with/{participant_id}/messages"
V2_IN_CONVERSATION = "/2/dm_conversations/{dm_conversation_id}/messages"
V11_NEW_EVENT = "/1.1/direct_messages/events/new.json"

_CONVERSATION_ID_RE = re.compile(r"^([0-9]{1,19})-([0-9]{1,19})$")


@dataclass(frozen=True)
class SendRequest:
    recipient_id: str
    text: str
    media_ids: tuple[str, ...] = ()


Answer = Callable[[Runtime, Message], tuple[int, dict[str, Any]]]


def _load_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _check_text(text: Any, has_media: bool, max_length: int) -> XError | None:
    if text is not None and not isinstance(text, str):
        return errors.invalid_request("text must be a string")
    if not text and not has_media:
        return errors.invalid_request("One of text or attachments is required")
    if text is not None and len(text) > max_length:
        return errors.text_too_long(max_length)
    return None


def _v2_media_ids(attachments: Any) -> tuple[str, ...] | XError:
    if attachments is None:
        return ()
    if not isinstance(attachments, list) or len(attachments) > 1:
        return errors.invalid_request("attachments must be a list of at most one item")
    ids = []
    for item in attachments:
        media_id = item.get("media_id") if isinstance(item, dict) else None
        if not isinstance(media_id, str) or not USER_ID_RE.match(media_id):
            return errors.invalid_request("attachments[].media_id must be a numeric string")
        ids.append(media_id)
    return tuple(ids)


def parse_v2(runtime: Runtime, body: bytes, recipient_id: str) -> SendRequest | XError:
    if not USER_ID_RE.match(recipient_id):
        return errors.invalid_request(f"The `participant_id` {recipient_id!r} is not valid")
    data = _load_object(body)
    if data is None:
        return errors.invalid_request("The request body is not a JSON object")
    media = _v2_media_ids(data.get("attachments"))
    if isinstance(media, XError):
        return media
    text = data.get("text")
    problem = _check_text(text, bool(media), runtime.config.max_text_length)
    if problem is not None:
        return problem
    return SendRequest(recipient_id, text or "", media)


def parse_v11(runtime: Runtime, body: bytes) -> SendRequest | XError:
    data = _load_object(body)
    event = data.get("event") if data else None
    if not isinstance(event, dict) or event.get("type") != "message_create":
        return errors.invalid_request("event.type: must be message_create")
    create = event.get("message_create")
    target = create.get("target") if isinstance(create, dict) else None
    recipient = target.get("recipient_id") if isinstance(target, dict) else None
    if isinstance(recipient, int) and not isinstance(recipient, bool):
        recipient = str(recipient)
    if not isinstance(recipient, str) or not USER_ID_RE.match(recipient):
        return errors.invalid_request("event.message_create.target: recipient_id not found.")
    message_data = create.get("message_data") if isinstance(create, dict) else None
    if not isinstance(message_data, dict):
        return errors.invalid_request("event.message_create.message_data: field is required")
    attachment = message_data.get("attachment")
    media_ids: tuple[str, ...] = ()
    if isinstance(attachment, dict) and isinstance(attachment.get("media"), dict):
        media_id = str(attachment["media"].get("id", ""))
        if not USER_ID_RE.match(media_id):
            return errors.invalid_request("event.message_create.message_data.attachment: bad")
        media_ids = (media_id,)
    text = message_data.get("text")
    problem = _check_text(text, bool(media_ids), runtime.config.max_text_length)
    if problem is not None:
        return problem
    return SendRequest(recipient, text or "", media_ids)


def _v2_answer(runtime: Runtime, message: Message) -> tuple[int, dict[str, Any]]:
    low, high = sorted((message.sender_id, message.recipient_id), key=int)
    return 201, {"data": {"dm_conversation_id": f"{low}-{high}", "dm_event_id": message.id}}


def _v11_answer(runtime: Runtime, message: Message) -> tuple[int, dict[str, Any]]:
    return 200, {"event": message_create_event(message)}


def _respond(style: Style, error: XError, headers: dict[str, str] | None = None) -> web.Response:
    status, body = error.render(style)
    return web.json_response(body, status=status, headers=headers)


def _refuse(
    request: web.Request,
    style: Style,
    outcome: str,
    error: XError,
    headers: dict[str, str] | None = None,
) -> web.Response:
    request[OUTCOME] = outcome
    return _respond(style, error, headers)


async def _admit(
    request: web.Request, runtime: Runtime, style: Style, window: RateWindow
) -> web.Response | dict[str, str]:
    """Authentication, injected latency and the budget (an injected 429, then the real
    window, spent by every authenticated call): the refusal, or the rate-limit headers."""
    state, faults = runtime.state, runtime.state.faults
    auth = await oauth_outcome(runtime, request)
    if auth is not AuthOutcome.OK:
        state.stats.auth_failures += 1
        log.info("DM send refused: auth %s", auth.value)
        error = {
            AuthOutcome.APP_ONLY: errors.app_only_forbidden(),
            AuthOutcome.CLOCK_SKEW: errors.timestamp_out_of_bounds(),
        }.get(auth, errors.unauthorized())
        return _refuse(request, style, "unauthorized", error, window.peek(time.time()).headers())

    if faults.dm_delay_seconds > 0:
        await asyncio.sleep(faults.dm_delay_seconds)

    limited = faults.injected_rate_limit("dm", window.limit, time.time())
    if limited is not None:
        log.info("DM send answered 429 (injected)")
        state.stats.dm_rate_limited += 1
        return _refuse(request, style, "rate_limited", errors.rate_limited(), limited)

    verdict = window.consume(time.time())
    if not verdict.allowed:
        state.stats.dm_rate_limited += 1
        log.info("DM send answered 429 (budget of %d spent)", verdict.limit)
        return _refuse(request, style, "rate_limited", errors.rate_limited(), verdict.headers())
    return verdict.headers()


def _injected_refusal(stats: Stats, faults: Faults, recipient_id: str) -> tuple[str, XError] | None:
    """An injected failure or a permanent refusal of DMs to this recipient, if one applies:
    the outcome to log and X's error."""
    if faults.injected_failure("dm", time.time()):
        stats.dm_failed += 1
        log.info("DM send answered %d (injected)", faults.dm_fail_status)
        return "failed", errors.injected_failure(faults.dm_fail_status)
    code = faults.refusal_code(recipient_id)
    if code is not None:
        stats.dm_failed += 1
        stats.dm_forbidden += 1
        log.info("DM send to %s forbidden with code %d (injected)", recipient_id, code)
        return "forbidden", errors.cannot_send(code)
    return None


async def _send(
    request: web.Request,
    style: Style,
    parse: Callable[[Runtime, bytes], SendRequest | XError],
    answer: Answer,
) -> web.Response:
    runtime = request.app[RUNTIME]
    state, faults = runtime.state, runtime.state.faults
    state.stats.dm_requests += 1
    window = state.budgets.dm(state.bot_user_id)

    # A broken network path: before X sees anything, so nothing is sent.
    if faults.dm_drop_next > 0 or faults.chance(faults.dm_drop_ratio):
        faults.dm_drop_next = max(0, faults.dm_drop_next - 1)
        state.stats.dm_dropped += 1
        log.info("DM send connection dropped (injected)")
        return drop_connection(request)

    admitted = await _admit(request, runtime, style, window)
    if isinstance(admitted, web.Response):
        return admitted
    headers = admitted

    parsed = parse(runtime, await request.read())
    if isinstance(parsed, XError):
        state.stats.dm_failed += 1
        return _refuse(request, style, "invalid", parsed, headers)
    refused = _injected_refusal(state.stats, faults, parsed.recipient_id)
    if refused is not None:
        return _refuse(request, style, *refused, headers)

    state.users.ensure(parsed.recipient_id)
    message = state.messages.record(
        sender_id=state.bot_user_id,
        recipient_id=parsed.recipient_id,
        text=parsed.text,
        direction="out",
        source_app_id=runtime.config.app_id,
        media_ids=parsed.media_ids,
    )
    state.stats.dm_sent += 1
    request[OUTCOME] = "sent"
    log.info("DM sent event=%s to=%s", message.id, message.recipient_id)
    # Like X, the bot's own DM comes back to its webhooks; never make the sender wait for it.
    runtime.tasks.spawn(dispatch(runtime, [message]), name=f"echo-{message.id}")
    status, body = answer(runtime, message)
    return web.json_response(body, status=status, headers=headers)


async def send_v2_with_participant(request: web.Request) -> web.Response:
    participant = request.match_info["participant_id"]
    return await _send(
        request, Style.V2, lambda rt, body: parse_v2(rt, body, participant), _v2_answer
    )


async def send_v2_in_conversation(request: web.Request) -> web.Response:
    conversation = request.match_info["dm_conversation_id"]
    bot = request.app[RUNTIME].state.bot_user_id
    match = _CONVERSATION_ID_RE.match(conversation)
    participants = set(match.groups()) if match else set()

    def parse(rt: Runtime, body: bytes) -> SendRequest | XError:
        if bot not in participants:
            return errors.invalid_request(
                f"The `dm_conversation_id` {conversation!r} is not a conversation of yours"
            )
        other = next(iter(participants - {bot}), bot)
        return parse_v2(rt, body, other)

    return await _send(request, Style.V2, parse, _v2_answer)


async def send_v11(request: web.Request) -> web.Response:
    return await _send(request, Style.V11, parse_v11, _v11_answer)


def add_routes(app: web.Application) -> None:
    app.router.add_post(V2_WITH_PARTICIPANT, send_v2_with_participant)
    app.router.add_post(V2_IN_CONVERSATION, send_v2_in_conversation)
    app.router.add_post(V11_NEW_EVENT, send_v11)
