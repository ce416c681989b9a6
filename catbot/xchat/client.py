"""The X Chat HTTP calls, as the bot, signed with OAuth 1.0a like every other catbot call.

The requests go through tweepy's `AsyncClient.request` on the daemon's aiohttp session, with
the same base-URL override (catbot.x.session) and the same failure classes as the DM sender
(catbot.x.dm): `TransientSendError` (retry), `RateLimited` (wait for the reset),
`PermanentSendError` (dead-letter), `AppSendError` (credentials or permissions: hand back).

Auth: the reference pages show OAuth 2.0 user tokens, but X's OpenAPI description
(openapi.json v2.168, xdevplatform/docs) lists `UserToken` (OAuth 1.0a user context) as an
alternative on every route used here. Routes and bodies:
- `GET /2/users/{id}/public_keys` (x-api/users/get-user-public-keys)
- `POST /2/users/{id}/public_keys` (x-api/chat/add-public-key); X allows only a few of
  these per 24 h (X's sample bot, chat-xdk examples/python/register.py), hence `ensure_registered`
- `POST /2/chat/conversations/{id}/messages` (x-api/chat/send-chat-message), 201
- `GET /2/chat/conversations/{id}/events` (x-api/chat/get-chat-conversation-events)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import tweepy

# The DM sender's failure classes and tweepy error sorting, reused as they are.
from catbot.x.dm import (
    AppSendError,
    Credentials,
    PermanentSendError,
    RateLimited,
    TransientSendError,
    classify_client_error,
    describe_http_error,
    rate_limit_reset,
    tweepy_client,
)
from catbot.xchat.crypto import SendPayload
from catbot.xchat.identity import BotIdentity, check_registered
from catbot.xchat.keycache import SigningKeyCache
from catbot.xchat.wire import (
    USER_ID,
    ConversationEvents,
    PublicKeyRecord,
    parse_conversation_events,
    parse_public_keys,
    parse_registered_version,
    parse_sent_event,
)

# x-api/chat/send-chat-message and get-chat-conversation-events: the `{id}` pattern.
_PATH_ID = re.compile(r"^([0-9]{1,19}|[0-9]{1,19}-[0-9]{1,19}|g[0-9]{1,19})$")
# X's sample bot reads this header for when the 24-hour key-registration budget frees up.
_DAILY_RESET = "x-user-limit-24hour-reset"


@dataclass(frozen=True)
class Registration:
    """The bot's key at X: its version, and whether this call spent a write on it."""

    version: str
    created: bool


@dataclass(frozen=True)
class SentChat:
    """X accepted the message: the event it built (base64) and the rate-limit headers."""

    encoded_message_event: str | None
    remaining: int | None
    reset_at: float | None


class XChatClient:
    def __init__(
        self,
        credentials: Credentials,
        session: aiohttp.ClientSession,
        api_base: str | None = None,
    ) -> None:
        self._client = tweepy_client(credentials, session, api_base)

    def signing_key_cache(self, **options: Any) -> SigningKeyCache:
        """A cache of senders' keys that fetches through this client."""
        return SigningKeyCache(self.get_public_keys, **options)

    async def get_public_keys(self, user_id: str) -> list[PublicKeyRecord]:
        """A user's registered keys; none (not an error) when X knows none."""
        _check_user_id(user_id)
        body, _ = await self._call("GET", f"/2/users/{user_id}/public_keys", missing_ok=True)
        return parse_public_keys(body, user_id)

    async def add_public_key(self, user_id: str, body: dict[str, Any]) -> str | None:
        """One registration write; the version X assigned, when the answer names it."""
        _check_user_id(user_id)
        answer, _ = await self._call("POST", f"/2/users/{user_id}/public_keys", body=body)
        return parse_registered_version(answer)

    async def ensure_registered(self, identity: BotIdentity) -> Registration:
        """Register the bot's public keys unless X already lists them: a `GET` first, the
        scarce `POST` only when this key is missing (a POST that failed on the way back
        may have been applied, X's sample bot warns; the GET finds it then)."""
        found = check_registered(identity, await self.get_public_keys(identity.user_id))
        if found.registered and found.registered_version:
            return Registration(found.registered_version, created=False)
        version = await self.add_public_key(
            identity.user_id, identity.registration_payload().body()
        )
        if version is None:
            listed = check_registered(identity, await self.get_public_keys(identity.user_id))
            version = listed.registered_version
        if version is None:
            raise PermanentSendError("X accepted the key but neither names nor lists its version")
        return Registration(version, created=True)

    async def send_message(self, payload: SendPayload) -> SentChat:
        """Post one encrypted message (the body `crypto.encrypt_reply` built)."""
        if not _PATH_ID.match(payload.path_id):
            raise PermanentSendError("the conversation path id has no form X accepts")
        body, response = await self._call(
            "POST", f"/2/chat/conversations/{payload.path_id}/messages", body=payload.body()
        )
        remaining = response.headers.get("x-rate-limit-remaining") if response else None
        return SentChat(
            encoded_message_event=parse_sent_event(body),
            remaining=int(remaining) if remaining and remaining.isdigit() else None,
            reset_at=rate_limit_reset(response) if response else None,
        )

    async def get_conversation_events(
        self, path_id: str, *, max_results: int = 100, pagination_token: str | None = None
    ) -> ConversationEvents:
        """One page of a conversation's history, to recover key changes the bot missed."""
        if not _PATH_ID.match(path_id):
            raise PermanentSendError("the conversation path id has no form X accepts")
        params = {"max_results": str(max(1, min(100, max_results)))}
        if pagination_token:
            params["pagination_token"] = pagination_token
        body, _ = await self._call(
            "GET", f"/2/chat/conversations/{path_id}/events", params=params
        )
        return parse_conversation_events(body)

    async def _call(
        self,
        method: str,
        route: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> tuple[Any, aiohttp.ClientResponse | None]:
        try:
            response = await self._client.request(
                method, route, params=params or {}, json=body, user_auth=True
            )
        except tweepy.TooManyRequests as exc:
            raise RateLimited(describe_http_error(exc), _limit_reset(exc.response)) from exc
        except tweepy.TwitterServerError as exc:
            raise TransientSendError(describe_http_error(exc)) from exc
        except tweepy.NotFound as exc:
            if missing_ok:
                return None, exc.response
            raise classify_client_error(exc) from exc
        except tweepy.HTTPException as exc:
            raise classify_client_error(exc) from exc
        except aiohttp.ClientResponseError as exc:
            # tweepy reads error bodies with aiohttp's `json()`, which refuses X's
            # `application/problem+json` (and a proxy's HTML page): only status and headers
            # are known then.
            if exc.status == 404 and missing_ok:
                return None, None
            raise _status_error(exc) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from exc
        # tweepy has read and released the response already: its text is cached.
        raw = await response.text()
        try:
            decoded = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise TransientSendError(f"HTTP {response.status}: an answer that is not JSON") from exc
        return decoded, response


def _status_error(exc: aiohttp.ClientResponseError) -> Exception:
    described = f"HTTP {exc.status} {exc.message}"
    if exc.status == 429:
        return RateLimited(described, _limit_reset(exc))
    if exc.status >= 500 or exc.status in (408, 409, 425):
        return TransientSendError(described)
    if exc.status == 401:
        return AppSendError(described)
    return PermanentSendError(described)


def _check_user_id(user_id: str) -> None:
    if not USER_ID.match(user_id):
        raise ValueError("not an X user id")


def _limit_reset(source: Any) -> float | None:
    """`x-rate-limit-reset`, else the daily key-registration reset X's sample bot reads,
    from a response or from aiohttp's error (whose `headers` may be None)."""
    headers = getattr(source, "headers", None) or {}
    for name in ("x-rate-limit-reset", _DAILY_RESET):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value)
        except ValueError:
            continue
    return None
