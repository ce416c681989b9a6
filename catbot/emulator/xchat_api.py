"""X Chat's routes as X plays them: the key directory, conversation keys, encrypted sends.

The users' side (their apps, `chat.*` deliveries, `POST /_emulator/xchat`) is
`catbot.emulator.xchat_friends`; what the emulator keeps is `catbot.emulator.state.xchat`.

X routes, OAuth 1.0a user context checked like every other X route here (the chat routes'
OpenAPI security: OAuth2UserToken or UserToken); the two public-key lookups also take the
app's bearer token, a read of public data:
- `POST /2/users/{id}/public_keys` `{"public_key": {...}, "version", "generate_version"?}`
  → 200 `{"data": {"public_key_version", "juicebox_config"}}` (x-api/chat/add-public-key).
- `GET /2/users/{id}/public_keys` → 200 `{"data": [PublicKey, ...]}` newest first
  (x-api/chat/get-user-public-keys); `GET /2/users/public_keys?ids=` → the same rows for
  several users (x-api/users/get-public-keys-for-multiple-users).
- `POST /2/chat/conversations/{id}/keys` → 200 `{"data": {"conversation_id", "sequence_id"}}`
  (x-api/chat/add-conversation-keys, OpenAPI `AddConversationKeysRequest`/`...ResponseData`).
- `GET /2/chat/conversations/{id}/events?max_results=&pagination_token=` → 200
  `{"data": [ChatMessageEvent], "meta": {"result_count", "has_more", "next_token"?,
  "conversation_key_events": [...]}}` (x-api/chat/get-chat-conversation-events, OpenAPI
  `GetChatConversationEventsResponse`, `ChatMessageEvent`).
- `POST /2/chat/conversations/{id}/messages` `{"message_id", "encoded_message_create_event",
  "encoded_message_event_signature", "conversation_token"?}` → 201 `{"data":
  {"encoded_message_event"}}` (x-api/chat/send-chat-message; 201 per its OpenAPI operation).
  Its own allowance, apart from DMs and posts (`XCHAT_RATE_LIMIT` per `XCHAT_RATE_WINDOW`,
  X's `x-rate-limit-*` headers on every answer, a v2 429 problem once spent) and its own
  injected trouble (`xchat_*` faults: delay, 5xx, dropped connections, 429s, permanent 403
  refusals; see docs/emulator.md), counted in `/_emulator/stats` (`xchat_*`) and
  logged in `/_emulator/requests` as route `xchat`, with the DM sends' outcomes.

Refusals are X's v2 problems. Which status X gives a bad signature is not documented:
xchat/troubleshooting says malformed action signatures get "an HTTP 400 problem-details
response", so every signature or payload failure here is 400 `invalid-request` with a reason
name in front (the names are X's SDK failure types: chat-xdk thrift/event.rs `FailureType`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from aiohttp import web

from catbot.emulator import errors
from catbot.emulator.access import authenticate
from catbot.emulator.api_common import (
    RATE_HEADERS,
    Refusal,
    invalid_request,
    json_object,
    max_results,
)
from catbot.emulator.config import USER_ID_RE
from catbot.emulator.errors import Style
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state.budgets import RateWindow
from catbot.emulator.state.common import iso_timestamp
from catbot.emulator.state.xchat import ChatEvent, Conversation, XChatState
from catbot.emulator.traffic import OUTCOME, drop_connection
from catbot.emulator.xchat_events import (
    SIGNATURE_VERSION,
    EventSignature,
    KeyChange,
    MessageCreate,
    ThriftError,
    b64decode,
    conversation_from_path,
    message_detail,
    message_signature_payload,
)
from catbot.emulator.xchat_friends import (
    add_key_change,
    chat_event,
    deliver_chat,
    friend_learns_key,
    friend_reads,
    signature_json,
    xchat_status,
)
from catbot.emulator.xchat_identity import (
    REGISTRATION_FIELDS,
    REQUIRED_FIELDS,
    PublicKeyRecord,
    WriteLimitReached,
    key_binding_holds,
    record_from_registration,
    verify_signature,
)

log = logging.getLogger("catbot.emulator.xchat")

V2 = Style.V2
USER_PUBLIC_KEYS = "/2/users/{user_id}/public_keys"
USERS_PUBLIC_KEYS = "/2/users/public_keys"
CONVERSATION_KEYS = "/2/chat/conversations/{conversation}/keys"
CONVERSATION_EVENTS = "/2/chat/conversations/{conversation}/events"
CONVERSATION_MESSAGES = "/2/chat/conversations/{conversation}/messages"

# The send allowance. X documents none for POST /2/chat/conversations/{id}/messages: the
# rate-limit tables (docs.x.com x-api/fundamentals/rate-limits; xdevplatform/docs
# x-api/fundamentals/rate-limits.mdx) have no Chat section, the send-chat-message reference
# names no figure, and xchat/troubleshooting sends readers to the general pages. The
# conservative assumption is that X Chat sends are held to what legacy DM sends are: this
# emulator's DM default, 200 per 15 minutes for the sending user (the figure the daemon's
# CATBOT_XCHAT_BUDGET_15MIN assumes too). docs.x.com's table now gives DM sends 15 per 15
# minutes; `xchat_budget_limit: 15` plays that. A separate window: X Chat sends spend
# neither the DM nor the post allowance.
XCHAT_RATE_LIMIT: Final = 200
XCHAT_RATE_WINDOW: Final = 900.0
_SEND_WINDOW_KEY: Final = "xchat-send"

MAX_IDS: Final = 100  # OpenAPI: the multi-user lookups take at most 100 ids
MAX_EVENTS: Final = 100  # get-chat-conversation-events: max_results 1..100, default 10
DEFAULT_EVENTS: Final = 10


def _state(request: web.Request) -> tuple[Runtime, XChatState]:
    runtime = request.app[RUNTIME]
    return runtime, runtime.state.xchat


# --- refusals --------------------------------------------------------------------------


def _invalid(reason: str, message: str) -> Refusal:
    return invalid_request(f"{reason}: {message}")


def _forbidden(message: str) -> Refusal:
    return Refusal(403, errors.problem(403, "client-forbidden", "Forbidden", message))


def _string(data: Mapping[str, Any], name: str, where: str = "body") -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_request(f"{where}: `{name}` is required and must be a non-empty string")
    return value


def _reject_unknown(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise invalid_request(f"{where}: unknown field(s) {', '.join(unknown)}")


def _decode(text: str, name: str) -> bytes:
    try:
        return b64decode(text)
    except ThriftError:
        raise invalid_request(f"`{name}` is not base64") from None


# --- public keys -----------------------------------------------------------------------


_REGISTRATION_BODY: Final = ("public_key", "version", "generate_version")


def _parse_registration(data: dict[str, Any]) -> tuple[dict[str, Any], str, bool]:
    _reject_unknown(data, _REGISTRATION_BODY, "body")
    keys = data.get("public_key")
    if not isinstance(keys, dict):
        raise invalid_request("body: `public_key` is required and must be an object")
    _reject_unknown(keys, REGISTRATION_FIELDS, "public_key")
    for name in REQUIRED_FIELDS:
        _string(keys, name, "public_key")
    for name in REGISTRATION_FIELDS:
        if keys.get(name) is not None and not isinstance(keys[name], str):
            raise invalid_request(f"public_key: `{name}` must be a string")
    version = data.get("version")
    if not isinstance(version, str) or not version.isdigit():
        raise invalid_request("body: `version` is required and must be a digit string")
    generate = data.get("generate_version", False)
    if not isinstance(generate, bool):
        raise invalid_request("body: `generate_version` must be a boolean")
    return keys, version, generate


async def post_public_keys(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True)
    runtime, xs = _state(request)
    user_id = request.match_info["user_id"]
    bot = runtime.state.bot_user_id
    if user_id != bot:
        raise _forbidden(f"You can only register public keys for your own account ({bot})")
    keys, version, generate = _parse_registration(await json_object(request, empty_ok=False))
    # A record whose binding fails could never be used by anyone: refused at the door.
    if not key_binding_holds(
        keys["public_key"], keys["signing_public_key"], keys["identity_public_key_signature"]
    ):
        raise _invalid(
            "InvalidKeyBinding",
            "identity_public_key_signature does not bind signing_public_key to public_key",
        )
    now = time.time()
    try:
        remaining, reset_at = xs.directory.spend_write(user_id, now)
    except WriteLimitReached as exc:
        request[RATE_HEADERS] = _write_headers(exc.limit, 0, exc.reset_at)
        detail = f"Too many public key registrations: {exc.limit} per 24 hours for user {user_id}"
        raise Refusal(
            429, errors.problem(429, "rate-limit-exceeded", "Too Many Requests", detail)
        ) from None
    request[RATE_HEADERS] = _write_headers(xs.directory.writes_per_day, remaining, reset_at)
    assigned = xs.directory.new_version() if generate else version
    record = xs.directory.register(record_from_registration(user_id, assigned, keys))
    log.info("X Chat public key registered user=%s version=%s", user_id, record.version)
    runtime.state.feed.notify("xchat", xchat_status(runtime))
    return web.json_response(
        {
            "data": {
                "public_key_version": record.version,
                # Juicebox PIN backup realms: none here (a network service; bots keep an
                # exported key blob instead: xchat/cryptography-primer, last note).
                "juicebox_config": {"realms": [], "register_threshold": 0, "recover_threshold": 0},
            }
        }
    )


def _write_headers(limit: int, remaining: int, reset_at: float) -> dict[str, str]:
    return {
        "x-rate-limit-limit": str(limit),
        "x-rate-limit-remaining": str(remaining),
        "x-rate-limit-reset": str(int(reset_at) + 1),
    }


def _rows_for(runtime: Runtime, xs: XChatState, user_id: str) -> list[dict[str, Any]]:
    # Every emulated user has X Chat; the bot has only what it registered.
    if user_id != runtime.state.bot_user_id:
        xs.friend(user_id)
    return xs.directory.rows(user_id)


async def get_public_keys(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True, app=True)
    runtime, xs = _state(request)
    user_id = request.match_info["user_id"]
    if not USER_ID_RE.match(user_id):
        raise invalid_request(f"The `id` {user_id!r} is not a user id")
    rows = _rows_for(runtime, xs, user_id)
    # v2 leaves `data` out when there is nothing to list.
    return web.json_response({"data": rows} if rows else {})


async def get_users_public_keys(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True, app=True)
    runtime, xs = _state(request)
    raw = request.query.get("ids", "")
    ids = [i for i in raw.split(",") if i]
    if not ids or len(ids) > MAX_IDS or not all(USER_ID_RE.match(i) for i in ids):
        raise invalid_request(f"`ids` must be 1 to {MAX_IDS} comma-separated user ids")
    rows: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for user_id in dict.fromkeys(ids):
        found = _rows_for(runtime, xs, user_id)
        rows.extend(found)
        if not found:
            # X's partial-failure entry for a lookup that found nothing for one id.
            missing.append(
                {
                    "value": user_id,
                    "detail": f"Could not find public keys for user with id: [{user_id}].",
                    "title": "Not Found Error",
                    "resource_type": "user",
                    "parameter": "ids",
                    "resource_id": user_id,
                    "type": errors.X_PROBLEMS + "resource-not-found",
                }
            )
    body: dict[str, Any] = {}
    if rows:
        body["data"] = rows
    if missing:
        body["errors"] = missing
    return web.json_response(body)


# --- conversations ---------------------------------------------------------------------


def _conversation_for(request: web.Request, runtime: Runtime, xs: XChatState) -> Conversation:
    path_id = request.match_info["conversation"]
    bot = runtime.state.bot_user_id
    cid = conversation_from_path(path_id, bot)
    if cid is None:
        raise invalid_request(
            f"The conversation id {path_id!r} names no 1:1 conversation of user {bot} "
            "(give the other user's id or `<id>-<id>`)"
        )
    low, high = cid.split(":")
    return xs.conversation(low, high)


_ACTION_FIELDS: Final = ("message_id", "encoded_message_event_detail", "message_event_signature")
_KEYS_BODY: Final = (
    "conversation_key_version",
    "conversation_participant_keys",
    "action_signatures",
    "base64_encoded_key_rotation",
)


def _signature_from(data: Any, where: str) -> EventSignature:
    if not isinstance(data, dict):
        raise invalid_request(f"{where}: `message_event_signature` must be an object")
    values = [_string(data, name, where) for name in ("signature", "public_key_version")]
    version = _string(data, "signature_version", where)
    if not (values[1].isdigit() and version.isdigit()):
        raise invalid_request(f"{where}: key and signature versions must be digit strings")
    return EventSignature(values[0], values[1], version)


def _registered_key(xs: XChatState, user_id: str, version: str) -> PublicKeyRecord:
    """The public key version a signature names; an X Chat refusal when there is none."""
    record = xs.directory.find(user_id, version)
    if record is None:
        raise _invalid(
            "SignatureFailedToVerifyAgainstPublicKey",
            f"user {user_id} has no public key version {version}",
        )
    return record


def _participant_keys(data: dict[str, Any]) -> set[tuple[str, ...]]:
    participants = data.get("conversation_participant_keys")
    if not isinstance(participants, list) or not participants:
        raise invalid_request("body: `conversation_participant_keys` must be a non-empty list")
    wanted = set()
    for entry in participants:
        if not isinstance(entry, dict):
            raise invalid_request("conversation_participant_keys: each entry is an object")
        wanted.add(
            tuple(
                _string(entry, name, "conversation_participant_keys")
                for name in ("user_id", "encrypted_conversation_key", "public_key_version")
            )
        )
    return wanted


def _key_change_action(data: dict[str, Any]) -> tuple[str, EventSignature, KeyChange]:
    """The signed key change of `action_signatures`: its message id, signature and detail."""
    actions = data.get("action_signatures")
    # xchat/troubleshooting: a missing or malformed action signature is a 400.
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise invalid_request("body: `action_signatures` must hold the key change's signature")
    action = actions[0]
    _reject_unknown(action, (*_ACTION_FIELDS, "signature_payload"), "action_signatures[0]")
    message_id = _string(action, "message_id", "action_signatures[0]")
    signature = _signature_from(action.get("message_event_signature"), "action_signatures[0]")
    detail = _decode(
        _string(action, "encoded_message_event_detail", "action_signatures[0]"),
        "encoded_message_event_detail",
    )
    try:
        change = KeyChange.decode(detail)
    except ThriftError as exc:
        raise _invalid("EmptyDetail", str(exc)) from None
    return message_id, signature, change


def _check_key_change(
    conv: Conversation, version: str, wanted: set[tuple[str, ...]], change: KeyChange
) -> None:
    # The server cannot open the key; it checks that what was signed is what was sent
    # (xchat/cryptography-primer, "Why the server cannot fully verify a key change").
    if change.conversation_key_version != version or set(change.participants) != wanted:
        raise _invalid(
            "InvalidSenderSignature",
            "the signed key change does not match conversation_key_version and "
            "conversation_participant_keys",
        )
    if {user for user, _key, _v in change.participants} != set(conv.members):
        raise invalid_request("the conversation key must be wrapped for both participants")
    if conv.key_version is not None and int(version) <= int(conv.key_version):
        raise _invalid("NonLatestCkeyVersion", f"the conversation key is at {conv.key_version}")


async def post_conversation_keys(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True)
    runtime, xs = _state(request)
    conv = _conversation_for(request, runtime, xs)
    bot_id = runtime.state.bot_user_id
    data = await json_object(request, empty_ok=False)
    _reject_unknown(data, _KEYS_BODY, "body")
    version = _string(data, "conversation_key_version")
    if not version.isdigit():
        raise invalid_request("body: `conversation_key_version` must be a digit string")
    wanted = _participant_keys(data)
    message_id, signature, change = _key_change_action(data)
    _check_key_change(conv, version, wanted, change)
    sender = _registered_key(xs, bot_id, signature.public_key_version)
    stored = add_key_change(
        runtime.state,
        conv,
        sender=sender,
        message_id=message_id,
        change=change,
        signature=signature,
    )
    friend_learns_key(xs, conv, stored, sender)
    log.info("X Chat key change conversation=%s version=%s by the bot", conv.id, version)
    return web.json_response(
        {"data": {"conversation_id": conv.id, "sequence_id": stored.event.sequence_id}}
    )


async def get_conversation_events(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True)
    runtime, xs = _state(request)
    conv = _conversation_for(request, runtime, xs)
    limit = max_results(request, default=DEFAULT_EVENTS, maximum=MAX_EVENTS)
    messages = conv.messages_newest_first()
    token = request.query.get("pagination_token")
    if token is not None:
        # The token is the sequence id of the last event handed out: the page goes on below.
        if not token.isdigit():
            raise invalid_request("`pagination_token` is not a token this API issued")
        messages = [e for e in messages if int(e.event.sequence_id) < int(token)]
    page, rest = messages[:limit], messages[limit:]
    bot = runtime.state.bot_user_id
    data = [
        {
            "id": e.event.sequence_id,
            "conversation_id": conv.id,
            "sender_id": e.event.sender_id,
            "created_at": iso_timestamp(int(e.event.created_at_msec) / 1000),
            "encoded_event": e.encoded,
            "conversation_token": xs.conversation_token(conv.id, bot),
            "message_event_signature": signature_json(e),
        }
        for e in page
    ]
    meta: dict[str, Any] = {
        "result_count": len(page),
        "has_more": bool(rest),
        # Every key change, oldest first: any page may need any of them to decrypt.
        "conversation_key_events": [e.encoded for e in conv.key_changes()],
    }
    if rest:
        meta["next_token"] = page[-1].event.sequence_id
    body: dict[str, Any] = {"meta": meta}
    if data:
        body = {"data": data, **body}
    return web.json_response(body)


# --- sending ---------------------------------------------------------------------------


_SEND_BODY: Final = (
    "message_id",
    "encoded_message_create_event",
    "encoded_message_event_signature",
    "conversation_token",
)


def _check_token(xs: XChatState, conv: Conversation, bot: str, token: Any) -> None:
    if token is None:
        return
    expected = xs.conversation_token(conv.id, bot)
    if not isinstance(token, str) or not hmac.compare_digest(token, expected):
        raise invalid_request("`conversation_token` is not this conversation's token")


def _send_window(runtime: Runtime) -> RateWindow:
    """The bot's X Chat send allowance: its own window, apart from DMs and posts, with the
    budget the faults name (`xchat_budget_*`) or the default one."""
    faults = runtime.state.faults
    limit = faults.xchat_budget_limit or XCHAT_RATE_LIMIT
    seconds = faults.xchat_budget_window or XCHAT_RATE_WINDOW
    return runtime.state.budgets.named(_SEND_WINDOW_KEY, limit, seconds)


def _refused(request: web.Request, runtime: Runtime, outcome: str, refusal: Refusal) -> Refusal:
    stats = runtime.state.stats
    if outcome == "rate_limited":
        stats.xchat_rate_limited += 1
    else:
        stats.xchat_failed += 1
    if outcome == "forbidden":
        stats.xchat_forbidden += 1
    request[OUTCOME] = outcome
    return refusal


async def _admit_send(request: web.Request, runtime: Runtime, window: RateWindow) -> None:
    """Authentication, injected latency and the send allowance (an injected 429, then the
    real budget, spent by every authenticated call); a Refusal when any of them says no."""
    faults = runtime.state.faults
    try:
        await authenticate(request, V2, user=True)
    except Refusal as refusal:
        request[RATE_HEADERS] = window.peek(time.time()).headers()
        raise _refused(request, runtime, "unauthorized", refusal) from None

    if faults.xchat_delay_seconds > 0:
        await asyncio.sleep(faults.xchat_delay_seconds)

    now = time.time()
    injected = faults.injected_rate_limit("xchat", window.limit, now)
    if injected is not None:
        request[RATE_HEADERS] = injected
        log.info("X Chat send answered 429 (injected)")
        raise _refused(request, runtime, "rate_limited", Refusal.of(errors.rate_limited(), V2))
    verdict = window.consume(now)
    request[RATE_HEADERS] = verdict.headers()
    if not verdict.allowed:
        log.info("X Chat send answered 429 (budget of %d spent)", verdict.limit)
        raise _refused(request, runtime, "rate_limited", Refusal.of(errors.rate_limited(), V2))


def _injected_refusal(request: web.Request, runtime: Runtime, conv: Conversation) -> None:
    """An injected 5xx, or a permanent refusal of sends to this friend."""
    faults = runtime.state.faults
    if faults.injected_failure("xchat", time.time()):
        log.info("X Chat send answered %d (injected)", faults.xchat_fail_status)
        raise _refused(
            request,
            runtime,
            "failed",
            Refusal.of(errors.injected_failure(faults.xchat_fail_status), V2),
        )
    friend_id = conv.other(runtime.state.bot_user_id)
    if friend_id in faults.xchat_forbidden_recipients:
        log.info("X Chat send to %s forbidden (injected)", friend_id)
        raise _refused(request, runtime, "forbidden", Refusal.of(errors.cannot_send(349), V2))


async def post_message(request: web.Request) -> web.StreamResponse:
    """The bot sends an encrypted message. X's order as on the DM routes: a broken network
    path before anything, authentication, injected latency, the send allowance (injected
    429, then the real budget; spent by every authenticated call), the request itself,
    then injected failures and permanent refusals."""
    runtime, xs = _state(request)
    state, faults = runtime.state, runtime.state.faults
    state.stats.xchat_requests += 1
    window = _send_window(runtime)

    if faults.xchat_drop_next > 0:
        faults.xchat_drop_next -= 1
        state.stats.xchat_dropped += 1
        log.info("X Chat send connection dropped (injected)")
        return drop_connection(request)

    await _admit_send(request, runtime, window)
    try:
        conv = _conversation_for(request, runtime, xs)
        stored, repeat = await _accept_message(request, runtime, xs, conv)
    except Refusal as refusal:
        raise _refused(request, runtime, "invalid", refusal) from None
    _injected_refusal(request, runtime, conv)

    state.stats.xchat_sent += 1
    request[OUTCOME] = "sent"
    if not repeat:
        _record_sent(runtime, conv, stored)
    return web.json_response({"data": {"encoded_message_event": stored.encoded}}, status=201)


async def _accept_message(
    request: web.Request, runtime: Runtime, xs: XChatState, conv: Conversation
) -> tuple[ChatEvent, bool]:
    """The checked message as X would store it, and whether it is a retry of one stored
    already (the same message id and bytes). Nothing is kept yet: an injected failure
    after this still leaves X without the message."""
    bot = runtime.state.bot_user_id
    data = await json_object(request, empty_ok=False)
    _reject_unknown(data, _SEND_BODY, "body")
    message_id = _string(data, "message_id")
    if "," in message_id:
        raise invalid_request("`message_id` must not contain a comma (it is signed as a field)")
    create_raw = _decode(
        _string(data, "encoded_message_create_event"), "encoded_message_create_event"
    )
    signature_raw = _decode(
        _string(data, "encoded_message_event_signature"), "encoded_message_event_signature"
    )
    _check_token(xs, conv, bot, data.get("conversation_token"))

    previous = conv.message(message_id)
    if previous is not None:
        # xchat/troubleshooting: "On retries, reuse the same encrypted payload so the id is
        # never minted twice": a retry of a stored send gets the stored event back.
        if previous.create_raw != create_raw or previous.event.sender_id != bot:
            raise _invalid("DuplicateMessageId", f"message {message_id} was sent already")
        return previous, True

    try:
        create = MessageCreate.decode(create_raw)
        signature = EventSignature.decode(signature_raw)
    except ThriftError as exc:
        raise _invalid("EmptyDetail", str(exc)) from None
    sender = _verify_message(xs, conv, bot, message_id, create, signature)
    stored = chat_event(
        runtime.state,
        conv,
        kind="message",
        sender=sender,
        message_id=message_id,
        key_version=create.conversation_key_version,
        detail=message_detail(create),
        signature=signature,
        create_raw=create_raw,
    )
    return stored, False


def _record_sent(runtime: Runtime, conv: Conversation, stored: ChatEvent) -> None:
    """X keeps the message, the friend's app reads it, and chat.sent goes out."""
    state = runtime.state
    bot = state.bot_user_id
    sender = _registered_key(state.xchat, bot, stored.event.signature.public_key_version)
    conv.events.append(stored)
    friend_id = conv.other(bot)
    text = friend_reads(state.xchat.friend(friend_id), conv, stored, sender)
    state.users.ensure(friend_id)
    message_id = stored.event.message_id
    state.messages.record(
        sender_id=bot,
        recipient_id=friend_id,
        text=text,
        direction="out",
        created_timestamp=stored.event.created_at_msec,
        channel="xchat",
        message_id=message_id,
    )
    log.info("X Chat message sent event=%s conversation=%s", message_id, conv.id)
    # Like X, the sender's own message comes back to its chat.sent subscriptions.
    runtime.tasks.spawn(
        deliver_chat(runtime, "chat.sent", bot, conv, stored), name=f"chat-sent-{message_id}"
    )


def _verify_message(
    xs: XChatState,
    conv: Conversation,
    bot: str,
    message_id: str,
    create: MessageCreate,
    signature: EventSignature,
) -> PublicKeyRecord:
    """X's own check of a send: signed by the sender's registered signing key, over this
    message id, sender, conversation, key version and ciphertext, under the current key.
    The key it verified against."""
    if signature.signature_version != SIGNATURE_VERSION:
        raise _invalid(
            "InvalidSignatureVersion",
            f"signature_version {signature.signature_version!r}; X's SDK signs version "
            f"{SIGNATURE_VERSION}",
        )
    if conv.key_version is None:
        raise _invalid("NonLatestCkeyVersion", f"conversation {conv.id} has no key yet")
    if create.conversation_key_version != conv.key_version:
        raise _invalid(
            "NonLatestCkeyVersion",
            f"encrypted under key {create.conversation_key_version}, the conversation's key "
            f"is {conv.key_version}",
        )
    record = _registered_key(xs, bot, signature.public_key_version)
    payload = message_signature_payload(
        message_id, bot, conv.id, create.conversation_key_version, create.ciphertext
    )
    try:
        signature_bytes = b64decode(signature.signature)
    except ThriftError:
        signature_bytes = b""
    if not verify_signature(record.signing_public_key, signature_bytes, payload):
        raise _invalid(
            "InvalidSenderSignature",
            "the message signature does not verify against the sender's signing key",
        )
    return record


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(USER_PUBLIC_KEYS, post_public_keys)
    r.add_get(USER_PUBLIC_KEYS, get_public_keys)
    r.add_get(USERS_PUBLIC_KEYS, get_users_public_keys)
    r.add_post(CONVERSATION_KEYS, post_conversation_keys)
    r.add_get(CONVERSATION_EVENTS, get_conversation_events)
    r.add_post(CONVERSATION_MESSAGES, post_message)
