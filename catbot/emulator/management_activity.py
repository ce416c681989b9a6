"""X Activity API subscription routes (`/2/activity/subscriptions`).

- `POST /2/activity/subscriptions` `{event_type, filter:{user_id}, tag?, webhook_id?}`
  → 200 `{"data":{"subscription":{...}},"meta":{"total_subscriptions"}}`
- `GET /2/activity/subscriptions?max_results=&pagination_token=`
  → 200 `{"data":[...],"meta":{"result_count","total_subscriptions","next_token"?}}`
- `PUT /2/activity/subscriptions/{id}` `{tag?, webhook_id?}`
  → 200 `{"data":{"subscription":{...},"total_subscriptions"}}`
- `DELETE /2/activity/subscriptions/{id}`
  → 200 `{"data":{"deleted":true},"meta":{"total_subscriptions"}}`

Auth: bearer or the bot's OAuth 1.0a user context on every route. X's OpenAPI description
lists bearer only for GET/PUT/DELETE; accepting the user context too costs a client nothing
and x-api.md names it for the family. The filtered user must have authorised the app; here
only the bot has, so another user id is 403. Refusals: unknown body fields or bad values 400
(invalid-request), duplicate (same event type, filter and webhook) 409
`DuplicateSubscriptionFailed`, tier limit 400 `SubscriptionLimitExceeded`, unknown webhook 400
`WebhookIdInvalid`, unknown subscription 404 `SubscriptionNotFound`. The nested create shape
(`data.subscription`) is the one answered; x-api.md lets clients accept the flat one too.
Subscriptions without `webhook_id` are kept (X streams them) but never delivered here. An
empty list has no `data` key, as elsewhere in v2.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from catbot.emulator import errors
from catbot.emulator.access import authenticate
from catbot.emulator.api_common import (
    Refusal,
    invalid_request,
    json_object,
    max_results,
    spend_budget,
)
from catbot.emulator.config import USER_ID_RE
from catbot.emulator.errors import Style
from catbot.emulator.management_v2 import listing, v2_refusal
from catbot.emulator.refusals import RegistryError
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state.common import iso_timestamp
from catbot.emulator.state.registry import Subscription
from catbot.emulator.subscriptions import (
    ACTIVITY_EVENT_TYPES,
    UPDATABLE_FIELDS,
    create_activity_subscription,
    delete_activity_subscription,
    update_activity_subscription,
)

V2 = Style.V2
SUBSCRIPTIONS = "/2/activity/subscriptions"
SUBSCRIPTION = "/2/activity/subscriptions/{subscription_id}"

_CREATE_FIELDS: Final = frozenset({"event_type", "filter", "tag", "webhook_id"})
_FILTER_FIELDS: Final = frozenset({"user_id"})
MAX_RESULTS: Final = 100
MAX_TAG_LENGTH: Final = 200


def subscription_json(sub: Subscription) -> dict[str, Any]:
    data: dict[str, Any] = {
        "subscription_id": sub.id,
        "event_type": sub.event_type,
        "filter": {"user_id": sub.user_id},
    }
    # Optional fields are left out when unset, as X leaves them out.
    if sub.tag is not None:
        data["tag"] = sub.tag
    if sub.webhook_id is not None:
        data["webhook_id"] = sub.webhook_id
    data["created_at"] = iso_timestamp(sub.created_at)
    data["updated_at"] = iso_timestamp(sub.updated_at)
    return data


async def _start(request: web.Request, bucket: str) -> Runtime:
    await authenticate(request, V2, user=True, app=True)
    runtime = request.app[RUNTIME]
    spend_budget(request, runtime, bucket, runtime.config.subscription_rate_limit, V2)
    return runtime


def _total(runtime: Runtime) -> int:
    return len(runtime.state.subscriptions.of_kind("activity"))


def _reject_unknown(data: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise invalid_request(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _optional_string(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise invalid_request(f"`{name}` must be a non-empty string")
    if name == "tag" and value is not None and len(value) > MAX_TAG_LENGTH:
        raise invalid_request(f"`tag` must be at most {MAX_TAG_LENGTH} characters")
    return value


def _parse_create(data: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    _reject_unknown(data, _CREATE_FIELDS, "body")
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or event_type not in ACTIVITY_EVENT_TYPES:
        raise invalid_request(
            f"`event_type` must be one of {', '.join(sorted(ACTIVITY_EVENT_TYPES))}"
        )
    filter_ = data.get("filter")
    if not isinstance(filter_, dict):
        raise invalid_request("`filter` is required and must be an object")
    _reject_unknown(filter_, _FILTER_FIELDS, "filter")
    user_id = filter_.get("user_id")
    if not isinstance(user_id, str) or not USER_ID_RE.match(user_id):
        raise invalid_request("`filter.user_id` must be a user id (1 to 19 digits, as a string)")
    return event_type, user_id, _optional_string(data, "tag"), _optional_string(data, "webhook_id")


async def post_subscription(request: web.Request) -> web.Response:
    runtime = await _start(request, "POST /2/activity/subscriptions")
    event_type, user_id, tag, webhook_id = _parse_create(await json_object(request, empty_ok=False))
    if user_id != runtime.state.bot_user_id:
        message = f"User {user_id} has not authorized this app to receive their activity"
        raise Refusal(403, errors.problem(403, "client-forbidden", "Forbidden", message))
    try:
        sub = create_activity_subscription(
            runtime, event_type=event_type, user_id=user_id, webhook_id=webhook_id, tag=tag
        )
    except RegistryError as exc:
        raise v2_refusal(exc, duplicate_conflicts=True) from None
    return web.json_response(
        {
            "data": {"subscription": subscription_json(sub)},
            "meta": {"total_subscriptions": _total(runtime)},
        }
    )


async def get_subscriptions(request: web.Request) -> web.Response:
    runtime = await _start(request, "GET /2/activity/subscriptions")
    limit = max_results(request, default=MAX_RESULTS, maximum=MAX_RESULTS)
    ordered = sorted(runtime.state.subscriptions.of_kind("activity"), key=lambda s: int(s.id))
    token = request.query.get("pagination_token")
    if token is not None:
        # The token is the id the next page starts at: deletions between pages skip nothing.
        if not token.isdigit():
            raise invalid_request("`pagination_token` is not a token this API issued")
        ordered = [s for s in ordered if int(s.id) >= int(token)]
    page, rest = ordered[:limit], ordered[limit:]
    meta: dict[str, Any] = {"total_subscriptions": _total(runtime)}
    if rest:
        meta["next_token"] = rest[0].id
    return web.json_response(listing([subscription_json(s) for s in page], **meta))


async def put_subscription(request: web.Request) -> web.Response:
    runtime = await _start(request, "PUT /2/activity/subscriptions/:id")
    data = await json_object(request, empty_ok=False)
    unknown = sorted(set(data) - UPDATABLE_FIELDS)
    if unknown:
        raise invalid_request(
            f"only tag and webhook_id can be updated, not {', '.join(unknown)}; "
            "delete the subscription and create a new one to change event_type or filter"
        )
    if not data:
        raise invalid_request("give tag and/or webhook_id to update")
    changes = {name: _optional_string(data, name) for name in data}
    try:
        sub = update_activity_subscription(runtime, request.match_info["subscription_id"], changes)
    except RegistryError as exc:
        raise v2_refusal(exc, duplicate_conflicts=True) from None
    return web.json_response(
        {"data": {"subscription": subscription_json(sub), "total_subscriptions": _total(runtime)}}
    )


async def delete_subscription(request: web.Request) -> web.Response:
    runtime = await _start(request, "DELETE /2/activity/subscriptions/:id")
    try:
        delete_activity_subscription(runtime, request.match_info["subscription_id"])
    except RegistryError as exc:
        raise v2_refusal(exc) from None
    return web.json_response(
        {"data": {"deleted": True}, "meta": {"total_subscriptions": _total(runtime)}}
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(SUBSCRIPTIONS, post_subscription)
    r.add_get(SUBSCRIPTIONS, get_subscriptions)
    r.add_put(SUBSCRIPTION, put_subscription)
    r.add_delete(SUBSCRIPTION, delete_subscription)
