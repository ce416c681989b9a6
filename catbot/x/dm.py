"""Sending one DM through tweepy, and sorting X's failures into what the outbox does next.

- `TransientSendError`: network trouble, timeouts, 5xx. Retry with backoff.
- `RateLimited`: 429. Wait for `x-rate-limit-reset` (if given), do not count an attempt.
- `PermanentSendError`: X refused this message for good (cannot DM this user, text too long,
  looks automated...). Dead-letter it; retrying would never succeed.
- `AppSendError`: X refused the app itself (bad credentials, clock skew, no DM permission).
  Not this message's fault: hand it back for later instead of dead-lettering every message
  while an operator fixes the configuration.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp
import tweepy
from tweepy.asynchronous import AsyncClient

from catbot.x.session import RebasedSession

# v1.1 codes (also found in v2 `errors`) that doom one message but not the next.
PERMANENT_CODES = {150, 151, 226, 349, 354}
# Codes that mean the app or its credentials are wrong: every message would fail alike.
APP_CODES = {32, 64, 89, 93, 135, 215, 261, 326}


class SendError(Exception):
    cause = "error"


class TransientSendError(SendError):
    cause = "transient"


class RateLimited(SendError):
    cause = "rate_limited"

    def __init__(self, message: str, reset_at: float | None) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class PermanentSendError(SendError):
    cause = "permanent"


class AppSendError(SendError):
    cause = "app"


@dataclass(frozen=True)
class SentDM:
    dm_event_id: str | None
    remaining: int | None
    reset_at: float | None


@dataclass(frozen=True)
class Credentials:
    consumer_key: str
    consumer_secret: str
    access_token: str
    access_token_secret: str
    bearer_token: str | None = None


def tweepy_client(
    credentials: Credentials, session: aiohttp.ClientSession, api_base: str | None
) -> AsyncClient:
    """tweepy's client as the bot, on our session, answering raw aiohttp responses (for the
    rate-limit headers). With `api_base` every request goes there instead of X (the emulator);
    without it tweepy talks to X as it always has."""
    client = AsyncClient(
        bearer_token=credentials.bearer_token,
        consumer_key=credentials.consumer_key,
        consumer_secret=credentials.consumer_secret,
        access_token=credentials.access_token,
        access_token_secret=credentials.access_token_secret,
        return_type=aiohttp.ClientResponse,
    )
    client.session = RebasedSession(session, api_base) if api_base else session
    return client


class DMSender:
    """Sends DMs as the bot account, v2 route or v1.1 route by flavour."""

    def __init__(
        self,
        credentials: Credentials,
        session: aiohttp.ClientSession,
        api: str = "v2",
        api_base: str | None = None,
    ) -> None:
        self.api = api
        self.client = tweepy_client(credentials, session, api_base)

    async def send(self, recipient_id: str, text: str) -> SentDM:
        """Send a DM to `recipient_id` as the bot."""
        if self.api == "v1.1":
            return await self._call(self.client.request(
                "POST",
                "/1.1/direct_messages/events/new.json",
                params={},
                json=_v1_body(recipient_id, text),
                user_auth=True,
            ))
        return await self._call(self.client.create_direct_message(
            participant_id=recipient_id, text=text, user_auth=True
        ))

    async def reply_to_post(self, tweet_id: str, text: str) -> SentDM:
        """Reply in public to the post `tweet_id` (`POST /2/tweets`, every flavour)."""
        return await self._call(self.client.create_tweet(
            text=text, in_reply_to_tweet_id=tweet_id, user_auth=True
        ))

    @staticmethod
    async def _call(request: Awaitable[aiohttp.ClientResponse]) -> SentDM:
        """Await one tweepy call and sort its failure into what the outbox does next."""
        try:
            response = await request
        except tweepy.TooManyRequests as exc:
            raise RateLimited(describe_http_error(exc), rate_limit_reset(exc.response)) from exc
        except tweepy.TwitterServerError as exc:
            raise TransientSendError(describe_http_error(exc)) from exc
        except tweepy.HTTPException as exc:
            raise classify_client_error(exc) from exc
        except aiohttp.ClientResponseError as exc:
            # A non-JSON error body (a proxy's HTML page): only the status is known.
            if exc.status == 429:
                raise RateLimited(f"HTTP 429 {exc.message}", None) from exc
            if exc.status >= 500 or exc.status in (408, 425):
                raise TransientSendError(f"HTTP {exc.status} {exc.message}") from exc
            raise PermanentSendError(f"HTTP {exc.status} {exc.message}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from exc
        return await _sent(response)


def _v1_body(recipient_id: str, text: str) -> dict[str, Any]:
    return {
        "event": {
            "type": "message_create",
            "message_create": {
                "target": {"recipient_id": recipient_id},
                "message_data": {"text": text},
            },
        }
    }


async def _sent(response: aiohttp.ClientResponse) -> SentDM:
    try:
        body = await response.json(content_type=None)
    except ValueError:
        body = None
    event_id: str | None = None
    if isinstance(body, dict):
        data = body.get("data") or body.get("event") or {}
        if isinstance(data, dict):
            # A DM's event id, or the new post's id for a public reply.
            event_id = data.get("dm_event_id") or data.get("id")
    remaining = response.headers.get("x-rate-limit-remaining")
    return SentDM(
        dm_event_id=None if event_id is None else str(event_id),
        remaining=int(remaining) if remaining and remaining.isdigit() else None,
        reset_at=rate_limit_reset(response),
    )


def rate_limit_reset(response: Any) -> float | None:
    """`x-rate-limit-reset` (epoch seconds) of a response, or None when absent or garbled."""
    value = getattr(response, "headers", {}).get("x-rate-limit-reset")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _status(exc: tweepy.HTTPException) -> int:
    return int(getattr(exc.response, "status", 0) or 0)


def describe_http_error(exc: tweepy.HTTPException) -> str:
    """Status, X's error codes and (the start of) its messages: bounded, no request data."""
    codes = ",".join(str(code) for code in exc.api_codes)
    messages = "; ".join(str(m) for m in exc.api_messages)[:200]
    parts = [f"HTTP {_status(exc)}"]
    if codes:
        parts.append(f"code {codes}")
    if messages:
        parts.append(messages)
    return ": ".join(parts)


def classify_client_error(exc: tweepy.HTTPException) -> SendError:
    """A 4xx from X as the failure class that says what the outbox does next."""
    codes = set(exc.api_codes)
    status = _status(exc)
    if codes & PERMANENT_CODES:
        return PermanentSendError(describe_http_error(exc))
    if status == 401 or codes & APP_CODES:
        return AppSendError(describe_http_error(exc))
    if status in (408, 409, 425):
        return TransientSendError(describe_http_error(exc))
    return PermanentSendError(describe_http_error(exc))
