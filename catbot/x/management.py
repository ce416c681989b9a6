"""Webhook and subscription management at X, one class per API flavour, one interface.

All calls go through tweepy's generic `AsyncClient.request` (OAuth 1.0a user context or an
app-only bearer token), aimed at the configured API base like the DM sender. When no bearer
token is configured, one is obtained from the consumer key and secret (`POST /oauth2/token`),
as X's docs describe for app-only auth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import tweepy

from catbot.config import Settings
from catbot.x.dm import Credentials, tweepy_client

PUBLIC_TWEEPY_BASE = "https://api.twitter.com"
# The X Activity API event an X Chat message arrives as (x-api/activity/event-payloads).
XCHAT_EVENT_TYPE = "chat.received"
# docs.x.com x-api/activity/introduction, "Subscription Limits": the number depends on the
# package tier (and changed over time), so the refusal is explained rather than predicted.
SUBSCRIPTION_LIMIT_REASON = "SubscriptionLimitExceeded"


@dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    valid: bool
    created_at: str | None = None


@dataclass(frozen=True)
class Subscription:
    """One subscription: an account's (Account Activity) or an event type's (X Activity API)."""

    user_id: str
    webhook_id: str | None = None
    subscription_id: str | None = None
    event_type: str | None = None


class XApiError(Exception):
    """X refused a management call. `reason` is X's named failure or error code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}" if reason else message)
        self.status = status
        self.reason = reason
        self.detail = message

    def means(self, *names: str) -> bool:
        text = f"{self.reason} {self.detail}"
        return any(name in text for name in names)


class WebhookManager(Protocol):
    flavour: str

    async def whoami(self) -> str:
        """The user id the access token belongs to (a signed call proving the credentials)."""

    async def list_webhooks(self) -> list[Webhook]: ...

    async def create_webhook(self, url: str) -> Webhook: ...

    async def revalidate(self, webhook_id: str) -> bool:
        """Ask X to run a CRC now; True when the webhook is valid afterwards."""

    async def delete_webhook(self, webhook_id: str) -> None: ...

    async def subscribe(self, webhook_id: str) -> None:
        """Subscribe the bot account's DMs to the webhook (idempotent)."""

    async def is_subscribed(self, webhook_id: str) -> bool: ...

    async def list_subscriptions(self, webhook_id: str) -> list[Subscription]: ...

    async def unsubscribe(self, webhook_id: str, user_id: str) -> None: ...


class _Api:
    """tweepy's client plus the JSON/204 handling and error translation shared by flavours."""

    def __init__(
        self, credentials: Credentials, session: aiohttp.ClientSession, api_base: str | None
    ) -> None:
        self.credentials = credentials
        self.session = session
        # Without an override, tweepy's own host: the URL its OAuth signature covers.
        self.api_base = (api_base or PUBLIC_TWEEPY_BASE).rstrip("/")
        self.client = tweepy_client(credentials, session, api_base)

    async def call(
        self,
        method: str,
        route: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        user: bool = True,
    ) -> Any:
        """Make one call; returns the decoded JSON body, or None for an empty (204) answer."""
        if not user and not self.client.bearer_token:
            self.client.bearer_token = await self._bearer_token()
        try:
            response = await self.client.request(
                method, route, params=params or {}, json=body, user_auth=user
            )
        except tweepy.HTTPException as exc:
            raise _api_error(exc) from exc
        except aiohttp.ClientResponseError as exc:
            raise XApiError(exc.status, "", f"non-JSON answer: {exc.message}") from exc
        # tweepy has already read and released the response: its text is cached.
        raw = await response.text()
        return json.loads(raw) if raw.strip() else None

    async def _bearer_token(self) -> str:
        auth = aiohttp.BasicAuth(self.credentials.consumer_key, self.credentials.consumer_secret)
        async with self.session.post(
            f"{self.api_base}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=auth,
        ) as response:
            body = await response.json(content_type=None)
            if response.status != 200 or not isinstance(body, dict):
                raise XApiError(response.status, "bearer", f"cannot get an app token: {body}")
            return str(body["access_token"])


def _api_error(exc: tweepy.HTTPException) -> XApiError:
    status = int(getattr(exc.response, "status", 0) or 0)
    reasons = [f"code {code}" for code in exc.api_codes]
    message = "; ".join(str(m) for m in exc.api_messages) or str(exc)
    # v2 names the failure at the start of the message: "CrcValidationFailed: ...".
    first = message.split(":", 1)[0].strip()
    if first.isidentifier() and first[:1].isupper():
        reasons.insert(0, first)
    return XApiError(status, ", ".join(reasons), message)


class AccountActivityV2:
    flavour = "v2"

    def __init__(self, api: _Api) -> None:
        self.api = api

    async def whoami(self) -> str:
        body = await self.api.call("GET", "/2/users/me")
        return str(body["data"]["id"])

    async def list_webhooks(self) -> list[Webhook]:
        body = await self.api.call("GET", "/2/webhooks", user=False)
        return [_webhook(item) for item in (body or {}).get("data") or []]

    async def create_webhook(self, url: str) -> Webhook:
        body = await self.api.call("POST", "/2/webhooks", body={"url": url})
        return _webhook(body["data"])

    async def revalidate(self, webhook_id: str) -> bool:
        body = await self.api.call("PUT", f"/2/webhooks/{_seg(webhook_id)}")
        return bool(body["data"]["valid"])

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.api.call("DELETE", f"/2/webhooks/{_seg(webhook_id)}")

    async def subscribe(self, webhook_id: str) -> None:
        try:
            await self.api.call(
                "POST", f"/2/account_activity/webhooks/{_seg(webhook_id)}/subscriptions/all",
                body={},
            )
        except XApiError as exc:
            if not exc.means("DuplicateSubscription"):
                raise

    async def is_subscribed(self, webhook_id: str) -> bool:
        body = await self.api.call(
            "GET", f"/2/account_activity/webhooks/{_seg(webhook_id)}/subscriptions/all"
        )
        return bool(body["data"]["subscribed"])

    async def list_subscriptions(self, webhook_id: str) -> list[Subscription]:
        body = await self.api.call(
            "GET", f"/2/account_activity/webhooks/{_seg(webhook_id)}/subscriptions/all/list",
            user=False,
        )
        data = (body or {}).get("data") or {}
        return [Subscription(str(s["user_id"]), webhook_id)
                for s in data.get("subscriptions") or []]

    async def unsubscribe(self, webhook_id: str, user_id: str) -> None:
        await self.api.call(
            "DELETE",
            f"/2/account_activity/webhooks/{_seg(webhook_id)}/subscriptions/{_seg(user_id)}/all",
            user=False,
        )


class ActivityApi(AccountActivityV2):
    """X Activity API: webhooks as in v2, subscriptions per event type and filtered user."""

    flavour = "activity"

    def __init__(
        self,
        api: _Api,
        bot_user_id: str,
        event_types: tuple[str, ...] = ("dm.received",),
        tag: str = "catbot",
    ) -> None:
        super().__init__(api)
        self.bot_user_id = bot_user_id
        self.event_types = event_types
        self.tag = tag

    async def _all_subscriptions(self) -> list[Subscription]:
        found: list[Subscription] = []
        token: str | None = None
        while True:
            params = {"max_results": "100", **({"pagination_token": token} if token else {})}
            body = await self.api.call(
                "GET", "/2/activity/subscriptions", params=params, user=False
            )
            for item in (body or {}).get("data") or []:
                found.append(_activity_subscription(item))
            token = ((body or {}).get("meta") or {}).get("next_token")
            if not token:
                return found

    async def subscribe(self, webhook_id: str) -> None:
        have = {(s.event_type, s.user_id) for s in await self.list_subscriptions(webhook_id)}
        for event_type in self.event_types:
            if (event_type, self.bot_user_id) in have:
                continue
            try:
                await self.api.call("POST", "/2/activity/subscriptions", body={
                    "event_type": event_type,
                    "filter": {"user_id": self.bot_user_id},
                    "tag": self.tag,
                    "webhook_id": webhook_id,
                })
            except XApiError as exc:
                if exc.means(SUBSCRIPTION_LIMIT_REASON):
                    raise self._limit_reached(exc, event_type, have) from exc
                if not exc.means("DuplicateSubscription"):
                    raise
            have.add((event_type, self.bot_user_id))

    def _limit_reached(
        self, exc: XApiError, event_type: str, have: set[tuple[str | None, str]]
    ) -> XApiError:
        """The tier's subscription limit, said with what catbot needs and how to make room:
        each answered event type is one X Activity API subscription of the app's."""
        missing = [t for t in self.event_types if (t, self.bot_user_id) not in have]
        message = (
            f"X refused the {event_type} subscription: the app's tier allows no more X "
            f"Activity API subscriptions ({exc.detail}). catbot subscribes one per event type "
            f"it answers ({', '.join(self.event_types)}); not subscribed: "
            f"{', '.join(missing)}. Delete X Activity API subscriptions the app no longer "
            "needs (`catbot subscriptions list` shows this webhook's), answer fewer types "
            "(CATBOT_REPLY_TO_MENTIONS=false, or X Chat off), or move to a tier with more "
            "subscriptions (docs.x.com x-api/activity/introduction); against the local "
            "emulator, start it with a higher --max-subscriptions"
        )
        return XApiError(exc.status, exc.reason or SUBSCRIPTION_LIMIT_REASON, message)

    async def is_subscribed(self, webhook_id: str) -> bool:
        return not await self.missing_event_types(webhook_id)

    async def missing_event_types(self, webhook_id: str) -> list[str]:
        """The answered event types the bot account has no subscription for."""
        have = {(s.event_type, s.user_id) for s in await self.list_subscriptions(webhook_id)}
        return [t for t in self.event_types if (t, self.bot_user_id) not in have]

    async def list_subscriptions(self, webhook_id: str) -> list[Subscription]:
        return [s for s in await self._all_subscriptions() if s.webhook_id == webhook_id]

    async def unsubscribe(self, webhook_id: str, user_id: str) -> None:
        for sub in await self.list_subscriptions(webhook_id):
            if sub.user_id == user_id and sub.subscription_id:
                await self.api.call(
                    "DELETE", f"/2/activity/subscriptions/{_seg(sub.subscription_id)}",
                    user=False,
                )

    async def delete_webhook(self, webhook_id: str) -> None:
        # Subscriptions are separate resources here: remove ours first, leave nothing behind.
        for sub in await self.list_subscriptions(webhook_id):
            if sub.subscription_id:
                await self.api.call(
                    "DELETE", f"/2/activity/subscriptions/{_seg(sub.subscription_id)}",
                    user=False,
                )
        await super().delete_webhook(webhook_id)


class PremiumV1:
    """v1.1 premium Account Activity, scoped to an environment label."""

    flavour = "v1.1"

    def __init__(self, api: _Api, env_name: str) -> None:
        self.api = api
        self.prefix = f"/1.1/account_activity/all/{_seg(env_name)}"

    async def whoami(self) -> str:
        body = await self.api.call("GET", "/1.1/account/verify_credentials.json")
        return str(body.get("id_str") or body["id"])

    async def list_webhooks(self) -> list[Webhook]:
        body = await self.api.call("GET", f"{self.prefix}/webhooks.json", user=False)
        return [_webhook(item) for item in body or []]

    async def create_webhook(self, url: str) -> Webhook:
        body = await self.api.call("POST", f"{self.prefix}/webhooks.json", params={"url": url})
        return _webhook(body)

    async def revalidate(self, webhook_id: str) -> bool:
        try:
            await self.api.call("PUT", f"{self.prefix}/webhooks/{_seg(webhook_id)}.json")
        except XApiError as exc:
            if exc.means("code 214"):
                return False
            raise
        return True

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.api.call("DELETE", f"{self.prefix}/webhooks/{_seg(webhook_id)}.json")

    async def subscribe(self, webhook_id: str) -> None:
        try:
            await self.api.call("POST", f"{self.prefix}/subscriptions.json")
        except XApiError as exc:
            if not exc.means("code 355"):
                raise

    async def is_subscribed(self, webhook_id: str) -> bool:
        try:
            await self.api.call("GET", f"{self.prefix}/subscriptions.json")
        except XApiError as exc:
            if exc.means("code 34") or exc.status == 404:
                return False
            raise
        return True

    async def list_subscriptions(self, webhook_id: str) -> list[Subscription]:
        body = await self.api.call("GET", f"{self.prefix}/subscriptions/list.json", user=False)
        return [Subscription(str(s["user_id"]), webhook_id)
                for s in (body or {}).get("subscriptions") or []]

    async def unsubscribe(self, webhook_id: str, user_id: str) -> None:
        await self.api.call(
            "DELETE", f"{self.prefix}/subscriptions/{_seg(user_id)}.json", user=False
        )


def management_for(
    settings: Settings,
    credentials: Credentials,
    session: aiohttp.ClientSession,
    bot_user_id: str | None = None,
) -> WebhookManager:
    """The manager for the configured flavour. `bot_user_id` defaults to the access token's
    prefix; the X Activity API subscribes the events the bot answers (`answered_event_types`)."""
    api = _Api(credentials, session, settings.x_api_base)
    if settings.x_api == "v1.1":
        if not settings.x_env_name:
            raise ValueError("the v1.1 API needs an environment label (CATBOT_X_ENV_NAME)")
        return PremiumV1(api, settings.x_env_name)
    if settings.x_api == "activity":
        return ActivityApi(api, bot_user_id or settings.bot_user_id or "",
                           answered_event_types(settings))
    return AccountActivityV2(api)


def answered_event_types(settings: Settings) -> tuple[str, ...]:
    """The X Activity API event types the bot answers, so the ones it subscribes to. A reply
    to one of the bot's posts comes as post.reply.create, not as a mention
    (docs.x.com/x-api/activity/event-payloads); quotes and reposts are not answered. With X
    Chat on (docs/xchat.md), chat.received too: end-to-end encrypted messages come only
    through the X Activity API. Private messages first: when the tier's subscription limit
    cuts the list short, DMs and X Chat are the ones already subscribed."""
    types = ["dm.received"]
    if settings.xchat_enabled:
        types.append(XCHAT_EVENT_TYPE)
    if settings.reply_to_mentions:
        types += ["post.mention.create", "post.reply.create"]
    return tuple(types)


def _seg(value: str) -> str:
    return quote(value, safe="")


def _webhook(item: dict[str, Any]) -> Webhook:
    created = item.get("created_at") or item.get("created_timestamp")
    return Webhook(
        id=str(item["id"]),
        url=str(item["url"]),
        valid=bool(item.get("valid")),
        created_at=None if created is None else str(created),
    )


def _activity_subscription(item: dict[str, Any]) -> Subscription:
    # X documents the subscription both flat and nested under "subscription".
    sub = item.get("subscription", item)
    filt = sub.get("filter") or {}
    return Subscription(
        user_id=str(filt.get("user_id", "")),
        webhook_id=None if sub.get("webhook_id") is None else str(sub["webhook_id"]),
        subscription_id=str(sub.get("subscription_id") or sub.get("id") or ""),
        event_type=sub.get("event_type"),
    )
