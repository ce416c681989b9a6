"""Plumbing shared by X's management routes: refusals, JSON bodies and per-app budgets.

Handlers raise `Refusal` with the exact status and body X would answer; one middleware turns
it into the response and stamps the route's rate-limit headers on every answer, success or
not, as X does.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from catbot.emulator import errors
from catbot.emulator.errors import Style, XError
from catbot.emulator.runtime import Runtime

RATE_HEADERS = web.RequestKey("catbot_emulator_rate_headers", dict[str, str])


class Refusal(Exception):
    """An X error answer, raised from deep inside a handler."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body

    @classmethod
    def of(cls, error: XError, style: Style) -> Refusal:
        return cls(*error.render(style))


@web.middleware
async def refusals(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except Refusal as exc:
        response = web.json_response(exc.body, status=exc.status)
    headers = request.get(RATE_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def no_content() -> web.Response:
    """X's 204: no body at all (not even `{}`), which tweepy's raw `request` accepts."""
    return web.Response(status=204)


def invalid_request(message: str) -> Refusal:
    """A v2 400 for a malformed request (no X reason name applies)."""
    return Refusal(400, errors.problem(400, "invalid-request", "Invalid Request", message))


async def json_object(request: web.Request, *, empty_ok: bool) -> dict[str, Any]:
    """A v2 route's body as a JSON object; an empty body is `{}` where X tolerates none."""
    raw = await request.read()
    if not raw.strip():
        if empty_ok:
            return {}
        raise invalid_request("A JSON request body is required")
    try:
        data = json.loads(raw)
    except ValueError:
        raise invalid_request("The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object")
    return data


def max_results(request: web.Request, *, default: int, maximum: int) -> int:
    """A v2 listing's `max_results` query parameter, 1 to `maximum`."""
    raw = request.query.get("max_results")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise invalid_request(f"`max_results` must be a number between 1 and {maximum}")
    return int(raw)


def spend_budget(
    request: web.Request, runtime: Runtime, bucket: str, limit: int, style: Style
) -> None:
    """Count one call against the app's 15-minute budget for this route; 429 when spent.

    The window is one of the state's budgets, so `/_emulator/reset` refills it with the DM
    budgets.
    """
    window = runtime.state.budgets.named(
        f"app:{bucket}", limit, runtime.config.management_rate_window
    )
    verdict = window.consume(time.time())
    request[RATE_HEADERS] = verdict.headers()
    if not verdict.allowed:
        raise Refusal.of(errors.rate_limited(), style)
