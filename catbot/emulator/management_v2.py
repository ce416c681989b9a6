"""X's v2 webhook and Account Activity subscription routes, as a client sees them on X.

- `POST /2/webhooks` `{"url"}` (bearer or user) → 200 `{"data":{id,url,valid,created_at}}`
  after a passing CRC
- `GET /2/webhooks` (bearer) → 200 `{"data":[...],"meta":{"result_count"}}`
- `PUT /2/webhooks/{id}` (bearer or user) → 200 `{"data":{"valid","attempted":true}}` (a CRC)
- `DELETE /2/webhooks/{id}` (bearer or user) → 200 `{"data":{"deleted":true}}`
- `POST /2/account_activity/webhooks/{id}/subscriptions/all` (user)
  → 200 `{"data":{"subscribed":true}}`
- `GET /2/account_activity/webhooks/{id}/subscriptions/all` (user) → `{"data":{"subscribed"}}`
- `GET .../subscriptions/all/list` (bearer)
  → `{"data":{application_id,webhook_id,webhook_url,subscriptions:[{user_id}]}}`
- `DELETE .../subscriptions/{user_id}/all` (bearer) → `{"data":{"subscribed":false}}`
- `GET /2/account_activity/subscriptions/count` (bearer) → counts as strings

An empty list is `{"meta":{"result_count":0}}` with no `data` key: X v2 omits `data` when
there is nothing to return, and a client must cope with that against X too.

Refusals are problem objects with X's reason first in the message, e.g.
`{"errors":[{"message":"CrcValidationFailed: ..."}],"title":"Invalid Request",
"detail":"CrcValidationFailed: ...","type":"https://api.x.com/2/problems/invalid-request",
"status":400}`: 400 for every reason except `SubscriptionNotFound` (404). X answers the tier
limits with 400 too (seen in public client code), not 403. `PUT` also returns `attempted`,
the field X's OpenAPI description names, beside x-api.md's `valid`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from catbot.emulator import errors
from catbot.emulator.access import authenticate
from catbot.emulator.api_common import Refusal, invalid_request, json_object, spend_budget
from catbot.emulator.errors import Style
from catbot.emulator.refusals import Reason, RegistryError, require_webhook
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state.common import iso_timestamp
from catbot.emulator.state.registry import Webhook
from catbot.emulator.subscriptions import (
    is_subscribed,
    subscribe_account_activity,
    unsubscribe_account_activity,
)
from catbot.emulator.webhooks import delete_webhook, register_webhook, revalidate

V2 = Style.V2
WEBHOOKS = "/2/webhooks"
WEBHOOK = "/2/webhooks/{webhook_id}"
SUBSCRIPTION_ALL = "/2/account_activity/webhooks/{webhook_id}/subscriptions/all"
SUBSCRIPTION_LIST = SUBSCRIPTION_ALL + "/list"
SUBSCRIPTION_OF_USER = "/2/account_activity/webhooks/{webhook_id}/subscriptions/{user_id}/all"
SUBSCRIPTION_COUNT = "/2/account_activity/subscriptions/count"

_NOT_FOUND = (404, "resource-not-found", "Not Found Error")
_CONFLICT = (409, "conflict", "Conflict")
_INVALID = (400, "invalid-request", "Invalid Request")


def v2_refusal(error: RegistryError, *, duplicate_conflicts: bool = False) -> Refusal:
    """Render a registry refusal as X's v2 problem.

    `duplicate_conflicts`: the X Activity API answers a duplicate subscription with 409;
    Account Activity keeps it a 400 like its other parameter failures.
    """
    status, kind, title = _INVALID
    if error.reason is Reason.SUBSCRIPTION_NOT_FOUND:
        status, kind, title = _NOT_FOUND
    elif duplicate_conflicts and error.reason is Reason.DUPLICATE_SUBSCRIPTION:
        status, kind, title = _CONFLICT
    return Refusal(status, errors.problem(status, kind, title, str(error)))


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def _budget(request: web.Request, bucket: str, *, webhooks: bool) -> Runtime:
    runtime = _runtime(request)
    config = runtime.config
    limit = config.webhook_rate_limit if webhooks else config.subscription_rate_limit
    spend_budget(request, runtime, bucket, limit, V2)
    return runtime


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "valid": webhook.valid,
        "created_at": iso_timestamp(webhook.created_at),
    }


def listing(items: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    """X v2's list shape: `data` only when there is something in it."""
    body: dict[str, Any] = {"meta": {"result_count": len(items), **meta}}
    if items:
        body = {"data": items, **body}
    return body


# --- webhooks --------------------------------------------------------------------------


async def post_webhook(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True, app=True)
    runtime = _budget(request, "POST /2/webhooks", webhooks=True)
    url = (await json_object(request, empty_ok=False)).get("url")
    if not isinstance(url, str) or not url:
        raise invalid_request("The `url` field is required and must be a string")
    try:
        webhook = await register_webhook(runtime, url)
    except RegistryError as exc:
        raise v2_refusal(exc) from None
    return web.json_response({"data": webhook_json(webhook)})


async def get_webhooks(request: web.Request) -> web.Response:
    await authenticate(request, V2, app=True)
    runtime = _budget(request, "GET /2/webhooks", webhooks=True)
    return web.json_response(listing([webhook_json(w) for w in runtime.state.webhooks.all()]))


async def put_webhook(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True, app=True)
    runtime = _budget(request, "PUT /2/webhooks/:id", webhooks=True)
    try:
        outcome = await revalidate(runtime, request.match_info["webhook_id"])
    except RegistryError as exc:
        raise v2_refusal(exc) from None
    return web.json_response({"data": {"valid": outcome.ok, "attempted": True}})


async def delete_webhook_route(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True, app=True)
    runtime = _budget(request, "DELETE /2/webhooks/:id", webhooks=True)
    try:
        delete_webhook(runtime, request.match_info["webhook_id"])
    except RegistryError as exc:
        raise v2_refusal(exc) from None
    return web.json_response({"data": {"deleted": True}})


# --- Account Activity subscriptions ----------------------------------------------------


async def post_subscription(request: web.Request) -> web.Response:
    # The subscribing account is the one whose access token signed the request: the bot.
    await authenticate(request, V2, user=True)
    runtime = _budget(request, "POST subscriptions/all", webhooks=False)
    await json_object(request, empty_ok=True)  # X sends `{}`; anything else must be JSON
    try:
        subscribe_account_activity(
            runtime, request.match_info["webhook_id"], runtime.state.bot_user_id
        )
    except RegistryError as exc:
        raise v2_refusal(exc) from None
    return web.json_response({"data": {"subscribed": True}})


async def get_subscription(request: web.Request) -> web.Response:
    await authenticate(request, V2, user=True)
    runtime = _budget(request, "GET subscriptions/all", webhooks=False)
    try:
        subscribed = is_subscribed(
            runtime, request.match_info["webhook_id"], runtime.state.bot_user_id
        )
    except RegistryError as exc:
        raise v2_refusal(exc) from None
    return web.json_response({"data": {"subscribed": subscribed}})


async def get_subscription_list(request: web.Request) -> web.Response:
    await authenticate(request, V2, app=True)
    runtime = _budget(request, "GET subscriptions/all/list", webhooks=False)
    try:
        webhook = require_webhook(runtime.state.webhooks, request.match_info["webhook_id"])
    except RegistryError as exc:
        raise v2_refusal(exc) from None
    subs = [
        {"user_id": s.user_id}
        for s in runtime.state.subscriptions.for_webhook(webhook.id)
        if s.kind == "account_activity"
    ]
    return web.json_response(
        {
            "data": {
                "application_id": runtime.config.app_id,
                "webhook_id": webhook.id,
                "webhook_url": webhook.url,
                "subscriptions": subs,
            }
        }
    )


async def delete_subscription(request: web.Request) -> web.Response:
    await authenticate(request, V2, app=True)
    runtime = _budget(request, "DELETE subscriptions/:user_id/all", webhooks=False)
    try:
        unsubscribe_account_activity(
            runtime, request.match_info["webhook_id"], request.match_info["user_id"]
        )
    except RegistryError as exc:
        raise v2_refusal(exc) from None
    return web.json_response({"data": {"subscribed": False}})


async def get_subscription_count(request: web.Request) -> web.Response:
    await authenticate(request, V2, app=True)
    runtime = _budget(request, "GET subscriptions/count", webhooks=False)
    count = len(runtime.state.subscriptions.of_kind("account_activity"))
    return web.json_response(
        {
            "data": {
                "account_name": runtime.config.app_name,
                "provisioned_count": str(runtime.config.max_subscriptions),
                "subscriptions_count_all": str(count),
                # Every Account Activity subscription carries the user's DMs.
                "subscriptions_count_direct_messages": str(count),
            }
        }
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(WEBHOOKS, post_webhook)
    r.add_get(WEBHOOKS, get_webhooks)
    r.add_put(WEBHOOK, put_webhook)
    r.add_delete(WEBHOOK, delete_webhook_route)
    r.add_post(SUBSCRIPTION_ALL, post_subscription)
    r.add_get(SUBSCRIPTION_ALL, get_subscription)
    r.add_get(SUBSCRIPTION_LIST, get_subscription_list)
    r.add_delete(SUBSCRIPTION_OF_USER, delete_subscription)
    r.add_get(SUBSCRIPTION_COUNT, get_subscription_count)
