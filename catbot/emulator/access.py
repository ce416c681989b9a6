"""Who is calling a management route: the bot's OAuth 1.0a user context or the app's bearer.

Each X route accepts a fixed set of authentication types (x-api.md's tables). The wrong type
gets X's 403 "Unsupported Authentication"; a bad or missing credential gets 401. The only
user who can sign requests here is the bot account (the emulator knows one access token),
so user context always means "the bot".
"""

from __future__ import annotations

import hmac
import logging
import time
from enum import Enum

from aiohttp import web

from catbot.emulator import errors
from catbot.emulator.api_common import Refusal
from catbot.emulator.errors import Style
from catbot.emulator.oauth import AuthOutcome, RequestToVerify, verify
from catbot.emulator.runtime import RUNTIME, Runtime

log = logging.getLogger("catbot.emulator.access")


class Caller(Enum):
    USER = "user"  # OAuth 1.0a user context: the bot account
    APP = "app"  # OAuth 2.0 app-only bearer token


async def _form_params(request: web.Request) -> tuple[tuple[str, str], ...]:
    if request.content_type != "application/x-www-form-urlencoded":
        return ()
    form = await request.post()
    return tuple((k, v) for k, v in form.items() if isinstance(v, str))


async def oauth_outcome(runtime: Runtime, request: web.Request) -> AuthOutcome:
    return verify(
        RequestToVerify(
            method=request.method,
            scheme=request.scheme,
            host=request.host,
            raw_path_qs=request.raw_path,
            authorization=request.headers.get("Authorization"),
            form_params=await _form_params(request),
        ),
        runtime.credentials,
        now=time.time(),
        max_clock_skew=runtime.config.max_clock_skew,
    )


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def authenticate(
    request: web.Request, style: Style, *, user: bool = False, app: bool = False
) -> Caller:
    """The caller, if the route accepts its kind of credential; Refusal otherwise."""
    runtime = request.app[RUNTIME]
    header = request.headers.get("Authorization")
    try:
        if not header:
            raise Refusal.of(errors.missing_auth(), style)
        token = _bearer(header)
        if token is not None:
            if not app:
                raise Refusal.of(errors.app_only_forbidden(), style)
            expected = runtime.config.app_bearer_token
            if not hmac.compare_digest(token.encode(), expected.encode()):
                raise Refusal.of(errors.bad_bearer(), style)
            return Caller.APP
        if not user:
            # An OAuth 1.0a header on an app-only route: X names the accepted type.
            if header[:6].lower() == "oauth ":
                raise Refusal.of(errors.user_context_forbidden(), style)
            raise Refusal.of(errors.missing_auth(), style)
        outcome = await oauth_outcome(runtime, request)
        if outcome is AuthOutcome.CLOCK_SKEW:
            raise Refusal.of(errors.timestamp_out_of_bounds(), style)
        if outcome is not AuthOutcome.OK:
            raise Refusal.of(errors.unauthorized(), style)
        return Caller.USER
    except Refusal:
        runtime.state.stats.auth_failures += 1
        log.info("%s %s refused: bad or unsupported credentials", request.method, request.path)
        raise
