"""X's v1.1 premium Account Activity routes, per environment label (`{env}`).

Under `/1.1/account_activity/all`:
- `POST {env}/webhooks.json?url=` (user) → 200 `{id,url,valid,created_timestamp}` after a CRC
- `GET {env}/webhooks.json` (bearer) → 200 `[webhook, ...]`
- `GET webhooks.json` (bearer) → 200 `{"environments":[{environment_name,webhooks}]}`
- `PUT {env}/webhooks/{id}.json` (user) → 204 after a passing CRC
- `DELETE {env}/webhooks/{id}.json` (user) → 204
- `POST {env}/subscriptions.json` (user) → 204
- `GET {env}/subscriptions.json` (user) → 204 if subscribed
- `GET {env}/subscriptions/list.json` (bearer) → 200 `{environment,application_id,subscriptions}`
- `DELETE {env}/subscriptions/{user_id}.json` (bearer) → 204
- `GET count.json` (bearer) → 200 counts as strings

204 answers have no body at all, as on X. Errors are `{"errors":[{"code","message"}]}` with
X's documented texts: code 214 at HTTP 403 for a refused URL, a failed or slow CRC, and
"Too many resources already created." (a second webhook in an environment, the app's
webhook limit, or the subscription limit); code 34 at 404 for an unknown webhook, an unknown
environment, no webhook in the environment, or no such subscription; code 355 at 409 for a
subscription that exists. An environment holds one webhook (premium's rule); its
subscriptions are Account Activity subscriptions on that webhook, so v2 routes see them too,
and deleting the webhook drops them. `url` is read from the query or a form body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from catbot.emulator import errors
from catbot.emulator.access import authenticate
from catbot.emulator.api_common import Refusal, no_content
from catbot.emulator.delivery import CrcFailure, CrcOutcome
from catbot.emulator.errors import Style
from catbot.emulator.refusals import Reason, RegistryError
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state.registry import Webhook
from catbot.emulator.subscriptions import (
    is_subscribed,
    subscribe_account_activity,
    unsubscribe_account_activity,
)
from catbot.emulator.webhooks import delete_webhook, register_webhook, revalidate

V11 = Style.V11
BASE = "/1.1/account_activity/all"
ENV = BASE + "/{env}"
ALL_WEBHOOKS = BASE + "/webhooks.json"
COUNT = BASE + "/count.json"
WEBHOOKS = ENV + "/webhooks.json"
WEBHOOK = ENV + "/webhooks/{webhook_id}.json"
SUBSCRIPTIONS = ENV + "/subscriptions.json"
SUBSCRIPTION_LIST = ENV + "/subscriptions/list.json"
SUBSCRIPTION_OF_USER = ENV + "/subscriptions/{user_id:[0-9]+}.json"

URL_INVALID: Final = "Webhook URL does not meet the requirements."
TOO_MANY: Final = "Too many resources already created."
CRC_MESSAGES: Final = {
    CrcFailure.TIMEOUT: (
        "High latency on CRC GET request. Your webhook should respond in less than 3 seconds."
    ),
    CrcFailure.STATUS: "Non-200 response code during CRC GET request (i.e. 404, 500, etc).",
    CrcFailure.RESPONSE: (
        "Webhook URL does not meet the requirements. Invalid CRC token or json response format."
    ),
    CrcFailure.CONNECTION: URL_INVALID,
}
NO_WEBHOOK: Final = "Webhook does not exist or is associated with a different twitter application."
NO_PAGE: Final = "Sorry, that page does not exist."


def _error(status: int, code: int, message: str) -> Refusal:
    return Refusal(status, errors.v11_body(code, message))


def crc_refusal(outcome: CrcOutcome | None) -> Refusal:
    failure = outcome.failure if outcome is not None else None
    return _error(403, 214, CRC_MESSAGES[failure] if failure is not None else URL_INVALID)


def v11_refusal(error: RegistryError) -> Refusal:
    reason = error.reason
    if reason is Reason.CRC_VALIDATION_FAILED:
        return crc_refusal(error.crc)
    if reason in (Reason.WEBHOOK_LIMIT, Reason.SUBSCRIPTION_LIMIT):
        return _error(403, 214, TOO_MANY)
    if reason is Reason.URL_VALIDATION_FAILED:
        return _error(403, 214, URL_INVALID)
    if reason is Reason.DUPLICATE_URL:
        return _error(403, 214, f"{URL_INVALID} The URL is already registered.")
    if reason is Reason.DUPLICATE_SUBSCRIPTION:
        return _error(409, 355, "Subscription already exists.")
    if reason is Reason.WEBHOOK_ID_INVALID:
        return _error(404, 34, NO_WEBHOOK)
    return _error(404, 34, NO_PAGE)


def created_timestamp(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "valid": webhook.valid,
        "created_timestamp": created_timestamp(webhook.created_at),
    }


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def _env(request: web.Request) -> str:
    env = request.match_info["env"]
    if not _runtime(request).config.env_allowed(env):
        raise _error(404, 34, NO_PAGE)
    return env


def _env_webhook(runtime: Runtime, env: str) -> Webhook:
    hooks = runtime.state.webhooks.in_env(env)
    if not hooks:
        raise _error(404, 34, NO_WEBHOOK)
    return hooks[0]


def _webhook_in_env(request: web.Request, env: str) -> Webhook:
    webhook = _runtime(request).state.webhooks.get(request.match_info["webhook_id"])
    if webhook is None or webhook.env_name != env:
        raise _error(404, 34, NO_WEBHOOK)
    return webhook


async def _url(request: web.Request) -> str | None:
    url = request.query.get("url")
    if url is None and request.content_type == "application/x-www-form-urlencoded":
        value = (await request.post()).get("url")
        url = value if isinstance(value, str) else None
    return url


# --- webhooks --------------------------------------------------------------------------


async def post_webhook(request: web.Request) -> web.Response:
    await authenticate(request, V11, user=True)
    env, runtime = _env(request), _runtime(request)
    url = await _url(request)
    if not url:
        raise _error(400, 214, f"{URL_INVALID} The url parameter is required.")
    if runtime.state.webhooks.in_env(env):
        raise _error(403, 214, TOO_MANY)  # one webhook per environment
    try:
        webhook = await register_webhook(runtime, url, env_name=env)
    except RegistryError as exc:
        raise v11_refusal(exc) from None
    return web.json_response(webhook_json(webhook))


async def get_env_webhooks(request: web.Request) -> web.Response:
    await authenticate(request, V11, app=True)
    env = _env(request)
    hooks = _runtime(request).state.webhooks.in_env(env)
    return web.json_response([webhook_json(w) for w in hooks])


async def get_all_webhooks(request: web.Request) -> web.Response:
    await authenticate(request, V11, app=True)
    runtime = _runtime(request)
    config = runtime.config
    names = dict.fromkeys(
        [
            *config.env_names,
            *([config.default_env_name] if config.default_env_name else []),
            *(w.env_name for w in runtime.state.webhooks.all() if w.env_name is not None),
        ]
    )
    environments = [
        {
            "environment_name": name,
            "webhooks": [webhook_json(w) for w in runtime.state.webhooks.in_env(name)],
        }
        for name in names
    ]
    return web.json_response({"environments": environments})


async def put_webhook(request: web.Request) -> web.Response:
    await authenticate(request, V11, user=True)
    webhook = _webhook_in_env(request, _env(request))
    try:
        outcome = await revalidate(_runtime(request), webhook.id)
    except RegistryError as exc:  # deleted while we looked
        raise v11_refusal(exc) from None
    if not outcome.ok:
        raise crc_refusal(outcome)
    return no_content()


async def delete_webhook_route(request: web.Request) -> web.Response:
    await authenticate(request, V11, user=True)
    webhook = _webhook_in_env(request, _env(request))
    try:
        delete_webhook(_runtime(request), webhook.id)
    except RegistryError as exc:
        raise v11_refusal(exc) from None
    return no_content()


# --- subscriptions ---------------------------------------------------------------------


async def post_subscription(request: web.Request) -> web.Response:
    # The subscribing account is the one whose access token signed the request: the bot.
    await authenticate(request, V11, user=True)
    env, runtime = _env(request), _runtime(request)
    webhook = _env_webhook(runtime, env)
    try:
        subscribe_account_activity(runtime, webhook.id, runtime.state.bot_user_id)
    except RegistryError as exc:
        raise v11_refusal(exc) from None
    return no_content()


async def get_subscription(request: web.Request) -> web.Response:
    await authenticate(request, V11, user=True)
    env, runtime = _env(request), _runtime(request)
    hooks = runtime.state.webhooks.in_env(env)
    if not hooks or not is_subscribed(runtime, hooks[0].id, runtime.state.bot_user_id):
        raise _error(404, 34, NO_PAGE)
    return no_content()


async def get_subscription_list(request: web.Request) -> web.Response:
    await authenticate(request, V11, app=True)
    env, runtime = _env(request), _runtime(request)
    hooks = runtime.state.webhooks.in_env(env)
    subs = runtime.state.subscriptions.for_webhook(hooks[0].id) if hooks else []
    return web.json_response(
        {
            "environment": env,
            "application_id": runtime.config.app_id,
            "subscriptions": [{"user_id": s.user_id} for s in subs if s.kind == "account_activity"],
        }
    )


async def delete_subscription(request: web.Request) -> web.Response:
    await authenticate(request, V11, app=True)
    env, runtime = _env(request), _runtime(request)
    webhook = _env_webhook(runtime, env)
    try:
        unsubscribe_account_activity(runtime, webhook.id, request.match_info["user_id"])
    except RegistryError as exc:
        raise v11_refusal(exc) from None
    return no_content()


async def get_count(request: web.Request) -> web.Response:
    await authenticate(request, V11, app=True)
    runtime = _runtime(request)
    count = str(len(runtime.state.subscriptions.of_kind("account_activity")))
    return web.json_response(
        {
            "account_name": runtime.config.app_name,
            "subscriptions_count_all": count,
            "subscriptions_count_direct_messages": count,
        }
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(ALL_WEBHOOKS, get_all_webhooks)
    r.add_get(COUNT, get_count)
    r.add_post(WEBHOOKS, post_webhook)
    r.add_get(WEBHOOKS, get_env_webhooks)
    r.add_put(WEBHOOK, put_webhook)
    r.add_delete(WEBHOOK, delete_webhook_route)
    r.add_post(SUBSCRIPTIONS, post_subscription)
    r.add_get(SUBSCRIPTIONS, get_subscription)
    r.add_get(SUBSCRIPTION_LIST, get_subscription_list)
    r.add_delete(SUBSCRIPTION_OF_USER, delete_subscription)
