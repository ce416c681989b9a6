"""Identity and token routes the daemon's tooling uses before it manages webhooks.

- `POST /oauth2/token` (HTTP Basic `consumer_key:consumer_secret`, form
  `grant_type=client_credentials`) → `{"token_type":"bearer","access_token":...}`: the
  configured `CATBOT_X_BEARER_TOKEN`, else a token derived from the consumer key, always the
  same one. Wrong credentials → 403 code 99; no or another grant type → 403 code 170.
- `GET /2/users/me` (OAuth 1.0a user) → `{"data":{"id","name","username"}}`.
- `GET /1.1/account/verify_credentials.json` (OAuth 1.0a user) → a v1.1 user object.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from catbot.emulator.access import authenticate
from catbot.emulator.errors import Style
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state.users import UserProfile

TOKEN = "/oauth2/token"
USERS_ME = "/2/users/me"
VERIFY_CREDENTIALS = "/1.1/account/verify_credentials.json"


def _same(expected: str | None, given: str) -> bool:
    """Like X, compare the raw value and its RFC 1738 decoding (clients differ on encoding)."""
    if expected is None:  # unconfigured key: accept any, as the OAuth check does
        return True
    return any(hmac.compare_digest(expected.encode(), v.encode()) for v in (given, unquote(given)))


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = decoded.partition(":")
    return (key, secret) if sep else None


def _refuse(code: int, message: str, label: str) -> web.Response:
    return web.json_response(
        {"errors": [{"code": code, "message": message, "label": label}]}, status=403
    )


async def post_token(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    config = runtime.config
    credentials = _basic_credentials(request.headers.get("Authorization"))
    if credentials is None or not (
        _same(config.consumer_key, credentials[0]) and _same(config.consumer_secret, credentials[1])
    ):
        runtime.state.stats.auth_failures += 1
        return _refuse(99, "Unable to verify your credentials", "authenticity_token_error")
    form = await request.post() if request.can_read_body else None
    grant = request.query.get("grant_type") or (form.get("grant_type") if form else None)
    if grant is None:
        return _refuse(170, "Missing required parameter: grant_type", "forbidden_missing_parameter")
    if grant != "client_credentials":
        return _refuse(170, "grant_type must be client_credentials", "forbidden_missing_parameter")
    return web.json_response({"token_type": "bearer", "access_token": config.app_bearer_token})


def _bot(request: web.Request) -> UserProfile:
    state = request.app[RUNTIME].state
    return state.users[state.bot_user_id]


async def get_users_me(request: web.Request) -> web.Response:
    await authenticate(request, Style.V2, user=True)
    bot = _bot(request)
    return web.json_response(
        {"data": {"id": bot.id, "name": bot.name, "username": bot.screen_name}}
    )


async def get_verify_credentials(request: web.Request) -> web.Response:
    await authenticate(request, Style.V11, user=True)
    bot = _bot(request)
    user: dict[str, Any] = {
        "id": int(bot.id),
        "id_str": bot.id,
        "name": bot.name,
        "screen_name": bot.screen_name,
        "protected": False,
        "verified": False,
    }
    return web.json_response(user)


def add_routes(app: web.Application) -> None:
    app.router.add_post(TOKEN, post_token)
    app.router.add_get(USERS_ME, get_users_me)
    app.router.add_get(VERIFY_CREDENTIALS, get_verify_credentials)
